package actor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
)

// Builtin is the Policy backed by the built-in Go transformer. It takes its
// tokenizer from each loaded checkpoint and formats prompts with
// task.EncodePrompt, the system's one prompt format. Not safe for concurrent
// use (the actor calls it from one goroutine).
type Builtin struct {
	version int64
	model   *policy.Model
	tok     *policy.Tokenizer
}

// NewBuiltin returns a backend with no weights (Version -1): the actor waits
// for the learner's first announced version.
func NewBuiltin() *Builtin { return &Builtin{version: -1} }

// NewBuiltinFrom starts from an in-memory checkpoint as version v (the
// one-process run hands its base model over this way).
func NewBuiltinFrom(v int64, c policy.Checkpoint) (*Builtin, error) {
	if c.Model == nil || c.Tokenizer == nil {
		return nil, fmt.Errorf("actor: checkpoint without model or tokenizer")
	}
	return &Builtin{version: v, model: c.Model.Clone(), tok: c.Tokenizer}, nil
}

// Version implements Policy.
func (p *Builtin) Version() int64 { return p.version }

// Load implements Policy: the bytes are a policy safetensors checkpoint.
func (p *Builtin) Load(version int64, checkpoint []byte) error {
	c, err := policy.ReadCheckpoint(bytes.NewReader(checkpoint))
	if err != nil {
		return fmt.Errorf("actor: weights v%d: %w", version, err)
	}
	if c.Tokenizer == nil {
		return fmt.Errorf("actor: weights v%d carry no tokenizer", version)
	}
	p.model, p.tok, p.version = c.Model, c.Tokenizer, version
	return nil
}

// seedStream separates the actor's sampling streams from other users of
// the same seeds.
const seedStream = 0x6163746f72 // "actor"

// SampleTask implements BatchPolicy: the t.Samples completions of t in one
// batched call, drawn from one stream seeded by t.Seed (deterministic for t).
func (p *Builtin) SampleTask(ctx context.Context, t wire.Task) ([]Completion, error) {
	if p.model == nil {
		return nil, fmt.Errorf("actor: no weights loaded")
	}
	prompt, err := task.EncodePrompt(p.tok, task.Problem{ID: t.QuestionID, Prompt: t.Prompt, Answer: t.Answer, Kind: t.Kind})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTask, err)
	}
	room := p.model.Config.Context - len(prompt)
	if room < 1 {
		return nil, fmt.Errorf("%w: prompt of %d tokens fills the %d-token context", ErrBadTask, len(prompt), p.model.Config.Context)
	}
	maxNew := t.MaxNew
	if maxNew <= 0 || maxNew > room {
		maxNew = room
	}
	prompts := make([][]int32, t.Samples)
	for i := range prompts {
		prompts[i] = prompt
	}
	rng := rand.New(rand.NewPCG(uint64(t.Seed), seedStream+1))
	out, err := p.model.Sample(prompts, policy.SampleOptions{Temperature: t.Temp, MaxNew: maxNew, EOS: p.tok.EOS()}, rng)
	if err != nil {
		return nil, fmt.Errorf("actor: sample %s: %w", t.TaskID, err)
	}
	cs := make([]Completion, len(out))
	for i, s := range out {
		cs[i] = Completion{PromptTokens: prompt, Tokens: s.Tokens, LogProbs: s.LogProbs, Entropies: s.Entropies,
			Text: task.ResponseText(p.tok, s.Tokens), Finish: s.Finish}
	}
	return cs, nil
}

// Sample implements Policy: completion i of t, drawn with seed t.Seed+i.
func (p *Builtin) Sample(ctx context.Context, t wire.Task, i int) (Completion, error) {
	if p.model == nil {
		return Completion{}, fmt.Errorf("actor: no weights loaded")
	}
	prompt, err := task.EncodePrompt(p.tok, task.Problem{ID: t.QuestionID, Prompt: t.Prompt, Answer: t.Answer, Kind: t.Kind})
	if err != nil {
		return Completion{}, fmt.Errorf("%w: %w", ErrBadTask, err)
	}
	room := p.model.Config.Context - len(prompt)
	if room < 1 {
		return Completion{}, fmt.Errorf("%w: prompt of %d tokens fills the %d-token context", ErrBadTask, len(prompt), p.model.Config.Context)
	}
	maxNew := t.MaxNew
	if maxNew <= 0 || maxNew > room {
		maxNew = room
	}
	rng := rand.New(rand.NewPCG(uint64(t.Seed+int64(i)), seedStream))
	out, err := p.model.Sample([][]int32{prompt}, policy.SampleOptions{Temperature: t.Temp, MaxNew: maxNew, EOS: p.tok.EOS()}, rng)
	if err != nil {
		return Completion{}, fmt.Errorf("actor: sample %s/%d: %w", t.TaskID, i, err)
	}
	if len(out) != 1 {
		return Completion{}, errors.New("actor: policy returned no sample")
	}
	s := out[0]
	return Completion{PromptTokens: prompt, Tokens: s.Tokens, LogProbs: s.LogProbs, Entropies: s.Entropies,
		Text: task.ResponseText(p.tok, s.Tokens), Finish: s.Finish}, nil
}
