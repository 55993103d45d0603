package trainer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

// BuiltinWeightsFile is the file SaveWeights writes for the built-in
// architecture.
const BuiltinWeightsFile = "model.safetensors"

// Builtin is the Trainer of the built-in Go transformer: policy.Model's
// ForwardAt/Backward and policy.AdamW, in process.
type Builtin struct {
	model *policy.Model
	opt   *policy.AdamW
	tok   *policy.Tokenizer
	pass  *policy.Pass
	mbTok int
}

// BuiltinOptions are optional settings of NewBuiltin.
type BuiltinOptions struct {
	// MicroBatchTokens is reported in Info (0 = whole mini-batches); the
	// learner then streams mini-batches in micro-batches, which tests the
	// accumulation path without a worker.
	MicroBatchTokens int
}

// NewBuiltin trains m in place (the trainer owns it from now on) with a
// fresh AdamW of adam. tok may be nil when neither SaveWeights,
// SaveOptimizer nor Tokenize is called.
func NewBuiltin(m *policy.Model, tok *policy.Tokenizer, adam policy.AdamWConfig, o BuiltinOptions) (*Builtin, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: built-in trainer needs a model", ErrInput)
	}
	if tok != nil && tok.Size() != m.Config.Vocab {
		return nil, fmt.Errorf("%w: tokenizer size %d differs from the model's vocabulary %d", ErrInput, tok.Size(), m.Config.Vocab)
	}
	if o.MicroBatchTokens < 0 {
		return nil, fmt.Errorf("%w: MicroBatchTokens %d < 0", ErrInput, o.MicroBatchTokens)
	}
	opt, err := policy.NewAdamW(adam, m)
	if err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	return &Builtin{model: m, opt: opt, tok: tok, mbTok: o.MicroBatchTokens}, nil
}

// Info implements Trainer.
func (b *Builtin) Info() Info {
	return Info{Backend: "go", Arch: "builtin", Device: "cpu", Params: b.model.NumParams(),
		Vocab: b.model.Config.Vocab, Context: b.model.Config.Context, MicroBatchTokens: b.mbTok}
}

// Score implements Trainer.
func (b *Builtin) Score(ctx context.Context, seqs []policy.Seq, temp float32) ([][]float32, [][]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return b.model.ScoreAt(seqs, temp)
}

// ScoreShared implements Trainer.
func (b *Builtin) ScoreShared(ctx context.Context, prompt []int32, responses [][]int32, temp float32) ([][]float32, [][]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	return b.model.ScoreSharedAt(prompt, responses, temp)
}

// Forward implements Trainer.
func (b *Builtin) Forward(ctx context.Context, seqs []policy.Seq, temp float32) ([][]float32, [][]float32, error) {
	b.pass = nil
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ps, err := b.model.ForwardAt(seqs, temp)
	if err != nil {
		return nil, nil, err
	}
	b.pass = ps
	// The pass's slices stay the pass's (Backward reads its own copies);
	// hand the caller its own.
	return cloneRows(ps.LogProbs), cloneRows(ps.Entropies), nil
}

// Backward implements Trainer.
func (b *Builtin) Backward(ctx context.Context, dlogps, dents [][]float32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.pass == nil {
		return fmt.Errorf("%w: Backward without a Forward", ErrInput)
	}
	ps := b.pass
	b.pass = nil
	return ps.Backward(dlogps, dents)
}

// Step implements Trainer.
func (b *Builtin) Step(ctx context.Context) (policy.StepInfo, error) {
	b.pass = nil
	if err := ctx.Err(); err != nil {
		return policy.StepInfo{}, err
	}
	return b.opt.Step(b.model), nil
}

// Gradients implements GradientReader (a copy).
func (b *Builtin) Gradients(ctx context.Context) ([]float32, error) {
	return append([]float32(nil), b.model.Grads...), nil
}

// Weights implements Trainer: the live model, read-only for the caller.
func (b *Builtin) Weights(ctx context.Context) (*policy.Model, error) { return b.model, nil }

// Optimizer implements Trainer: the live optimiser, read-only for the caller.
func (b *Builtin) Optimizer(ctx context.Context) (*policy.AdamW, error) { return b.opt, nil }

// Restore implements Trainer.
func (b *Builtin) Restore(ctx context.Context, m *policy.Model, opt *policy.AdamW) error {
	if m == nil {
		return fmt.Errorf("%w: Restore without a model", ErrInput)
	}
	if m.Config != b.model.Config {
		return fmt.Errorf("%w: restored model %+v differs from the trained one %+v", ErrInput, m.Config, b.model.Config)
	}
	fresh, err := policy.NewAdamW(b.opt.Config, m)
	if err != nil {
		return fmt.Errorf("trainer: %w", err)
	}
	if opt != nil {
		if len(opt.M) != len(m.Params) || len(opt.V) != len(m.Params) {
			return fmt.Errorf("%w: optimiser state for %d parameters, model has %d", ErrInput, len(opt.M), len(m.Params))
		}
		// The hyper-parameters come from this run's configuration.
		copy(fresh.M, opt.M)
		copy(fresh.V, opt.V)
		fresh.T = opt.T
	}
	c := m.Clone()
	b.model, b.opt, b.pass = c, fresh, nil
	return nil
}

// SaveWeights implements Trainer: dir/model.safetensors.
func (b *Builtin) SaveWeights(ctx context.Context, dir string) error {
	if b.tok == nil {
		return fmt.Errorf("%w: SaveWeights needs the tokenizer (NewBuiltin got none)", ErrInput)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("trainer: save weights: %w", err)
	}
	return policy.SaveFile(filepath.Join(dir, BuiltinWeightsFile), policy.Checkpoint{Model: b.model, Tokenizer: b.tok})
}

// SaveOptimizer implements Trainer. The built-in format keeps the weights
// beside the moments (LoadOptimizer takes only the moments back).
func (b *Builtin) SaveOptimizer(ctx context.Context, path string) error {
	if b.tok == nil {
		return fmt.Errorf("%w: SaveOptimizer needs the tokenizer (NewBuiltin got none)", ErrInput)
	}
	return policy.SaveFile(path, policy.Checkpoint{Model: b.model, Tokenizer: b.tok, Opt: b.opt})
}

// LoadOptimizer implements Trainer.
func (b *Builtin) LoadOptimizer(ctx context.Context, path string) error {
	ck, err := policy.LoadFile(path)
	if err != nil {
		return fmt.Errorf("trainer: load optimiser: %w", err)
	}
	if ck.Opt == nil {
		return fmt.Errorf("%w: %s holds no optimiser state", ErrInput, path)
	}
	if ck.Model.Config != b.model.Config {
		return fmt.Errorf("%w: optimiser state of %s is for model %+v, training %+v", ErrInput, path, ck.Model.Config, b.model.Config)
	}
	copy(b.opt.M, ck.Opt.M)
	copy(b.opt.V, ck.Opt.V)
	b.opt.T = ck.Opt.T
	return nil
}

// Tokenize implements Trainer with task.EncodePrompt.
func (b *Builtin) Tokenize(ctx context.Context, prompts []string) ([][]int32, error) {
	if b.tok == nil {
		return nil, fmt.Errorf("%w: Tokenize needs the tokenizer (NewBuiltin got none)", ErrInput)
	}
	out := make([][]int32, len(prompts))
	for i, p := range prompts {
		ids, err := task.EncodePrompt(b.tok, task.Problem{ID: fmt.Sprint(i), Prompt: p})
		if err != nil {
			return nil, fmt.Errorf("trainer: tokenize prompt %d: %w", i, err)
		}
		out[i] = ids
	}
	return out, nil
}

// Close implements Trainer (nothing to release).
func (b *Builtin) Close() error { return nil }

func cloneRows(rows [][]float32) [][]float32 {
	out := make([][]float32, len(rows))
	for i, r := range rows {
		out[i] = append([]float32(nil), r...)
	}
	return out
}
