// Package trainer is the learner's view of the model it trains: a
// differentiable policy that knows nothing about ExGRPO. The learner keeps
// the objective (docs/ALGORITHM.md E10-E13) in Go and hands a Trainer, one
// micro-batch at a time, the upstream gradient of every response token's
// log-prob and entropy; every term of E10-E13 is token-local, so streaming
// a mini-batch through Forward/Backward in micro-batches and then calling
// Step once equals one large batch.
//
// Two implementations exist: Builtin wraps the built-in Go transformer
// (policy.Model and policy.AdamW), and trainer/torch drives a PyTorch worker
// process over a socket. trainer/trainertest is the one conformance suite
// both pass.
//
// Temperature: every score is of softmax(z/T) at the sampling temperature T
// the actors used, so the recorded behaviour log-probs, E7's entropies and
// the learner's ratios all describe the same distribution.
package trainer

import (
	"context"
	"errors"

	"github.com/exgrpo/exgrpo/policy"
)

// Errors of the package; test with errors.Is.
var (
	// ErrInput reports a call the trainer cannot serve (shapes, order).
	ErrInput = errors.New("trainer: invalid input")
	// ErrNotBuiltin reports a built-in-architecture operation (Weights,
	// Optimizer, Restore, Gradients) on a model of another architecture.
	ErrNotBuiltin = errors.New("trainer: not the built-in architecture")
	// ErrBackend reports a failure of the backend itself (a dead worker, a
	// protocol error); the trainer cannot be used afterwards.
	ErrBackend = errors.New("trainer: backend failed")
)

// Info describes a trainer.
type Info struct {
	Backend string // "go" or "torch"
	Arch    string // "builtin" (policy.Config) or "hf" (a transformers model directory)
	Device  string // "cpu", "cuda", ...
	Params  int    // number of trainable parameters
	Vocab   int    // tokenizer size
	Context int    // longest prompt+response in tokens
	// MicroBatchTokens bounds the packed tokens of one Forward with
	// gradient (the worker's memory budget); 0 = no bound. The learner
	// splits mini-batches accordingly (a longer single sequence goes alone).
	MicroBatchTokens int
	// Model is the resolved path the backend loaded its model from (the
	// PyTorch worker reports it); "" when the model lives in process. It
	// lets a learner check that a worker started by someone else (torchrun)
	// holds the weights it means to train, e.g. a checkpoint's on resume.
	Model string
}

// Trainer is a policy under training. Calls are not safe for concurrent
// use: one goroutine (the learner's) drives a Trainer. Every method that
// talks to a backend takes a context and fails, never hangs, when the
// backend dies.
//
// Slices passed in are only read during the call; slices returned belong
// to the caller. Log-prob and entropy results are per sequence, per
// response token (Tokens[PromptLen:]), in fp32.
type Trainer interface {
	Info() Info
	// Score returns the log-probs and entropies of softmax(z/temp) for
	// every response token, without gradients.
	Score(ctx context.Context, seqs []policy.Seq, temp float32) (logps, ents [][]float32, err error)
	// ScoreShared is Score of prompt+responses[i] for every i (E7 scores a
	// question's stored candidates, which share the prompt).
	ScoreShared(ctx context.Context, prompt []int32, responses [][]int32, temp float32) (logps, ents [][]float32, err error)
	// Forward is Score that keeps what one Backward needs. A Forward that
	// was not followed by Backward is dropped by the next Forward or Step.
	Forward(ctx context.Context, seqs []policy.Seq, temp float32) (logps, ents [][]float32, err error)
	// Backward accumulates into the gradients dL/dparams given dL/dlogp and
	// dL/dentropy of every response token of the last Forward (same shapes;
	// dents may be nil). Once per Forward.
	Backward(ctx context.Context, dlogps, dents [][]float32) error
	// Step clips the accumulated gradients by their global norm, skips the
	// update on a non-finite or too large norm, otherwise applies AdamW
	// (E14, policy.AdamW's semantics exactly); it always zeroes the
	// gradients and reports the pre-clip norm.
	Step(ctx context.Context) (policy.StepInfo, error)
	// Weights returns the current weights of the built-in architecture. The
	// model must be treated as read-only and is valid until the next call
	// that changes the trainer (Step, Restore).
	Weights(ctx context.Context) (*policy.Model, error)
	// Optimizer returns the AdamW state of the built-in architecture
	// (read-only, valid until the next change, like Weights).
	Optimizer(ctx context.Context) (*policy.AdamW, error)
	// Restore replaces the weights by m and, when opt is not nil, the
	// optimiser moments and step count by opt's (the hyper-parameters stay
	// this trainer's); with opt nil the optimiser starts afresh.
	Restore(ctx context.Context, m *policy.Model, opt *policy.AdamW) error
	// SaveWeights writes the weights into dir in the model's own format: a
	// built-in checkpoint (model.safetensors, with the tokenizer) for the
	// built-in architecture, HF safetensors shards with
	// model.safetensors.index.json, config and tokenizer files otherwise.
	SaveWeights(ctx context.Context, dir string) error
	// SaveOptimizer and LoadOptimizer write and read the optimiser state
	// (moments and step count) at path.
	SaveOptimizer(ctx context.Context, path string) error
	LoadOptimizer(ctx context.Context, path string) error
	// Tokenize encodes prompt texts as the model's chat template wants
	// them (for the built-in model: task.EncodePrompt's BOS, text,
	// separator).
	Tokenize(ctx context.Context, prompts []string) ([][]int32, error)
	// Close releases the backend (stops a worker it started).
	Close() error
}

// ChatTokenizer is implemented by trainers whose chat template takes a
// system prompt (task.Problem.System): TokenizeChat is Tokenize with
// systems[i] ("" = none) as prompts[i]'s system message.
type ChatTokenizer interface {
	TokenizeChat(ctx context.Context, systems, prompts []string) ([][]int32, error)
}

// MasterWeightsSaver is implemented by trainers whose SaveWeights rounds
// the weights they train (fp32 master weights) to the model's serving
// dtype (bf16 for an HF model, what engines load): SaveMasterWeights
// writes the same files at full precision, which a checkpoint needs for a
// resumed learner to continue from exactly the weights it stopped at.
type MasterWeightsSaver interface {
	SaveMasterWeights(ctx context.Context, dir string) error
}

// GradientReader is implemented by trainers that can report the
// accumulated gradients in the built-in layout (policy.Model.Grads), for
// cross-checks between backends.
type GradientReader interface {
	Gradients(ctx context.Context) ([]float32, error)
}

// Responses counts the response tokens of seqs (the mini-batch's N of E13).
func Responses(seqs []policy.Seq) int {
	n := 0
	for _, s := range seqs {
		n += len(s.Tokens) - s.PromptLen
	}
	return n
}
