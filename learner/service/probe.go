package service

import (
	"context"
	"fmt"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/wire"
)

// probeProblems are the fixed probe sequences: prompt and response text in
// the built-in format. Any text works; these are in the built-in alphabet
// and span prompt lengths, so a mismatch anywhere in the weights shows.
var probeProblems = []struct{ prompt, response string }{
	{"12+34", `12+34=46,\boxed{46}`},
	{"7*8-5", `7*8=56,56-5=51,\boxed{51}`},
	{"(9-3)/2", `9-3=6,6/2=3,\boxed{3}`},
}

// Probe returns version's probe (wire.Probe): the temperature-1 log-probs
// of the fixed probe sequences under m, prompts made as tasks' prompts are.
// Sequences the tokenizer cannot encode are skipped.
func Probe(version int64, m *policy.Model, tok *policy.Tokenizer) (wire.Probe, error) {
	var seqs []policy.Seq
	for i, pp := range probeProblems {
		prompt, err := task.EncodePrompt(tok, task.Problem{ID: fmt.Sprintf("probe-%d", i), Prompt: pp.prompt})
		if err != nil {
			continue
		}
		resp, err := task.EncodeResponse(tok, pp.response)
		if err != nil {
			continue
		}
		toks := append(append([]int32(nil), prompt...), resp...)
		if len(toks) > m.Config.Context {
			continue
		}
		seqs = append(seqs, policy.Seq{Tokens: toks, PromptLen: len(prompt)})
	}
	if len(seqs) == 0 {
		return wire.Probe{}, fmt.Errorf("learner service: no probe sequence fits the tokenizer and context")
	}
	lps, _, err := m.Score(seqs)
	if err != nil {
		return wire.Probe{}, fmt.Errorf("learner service: score probe v%d: %w", version, err)
	}
	return probeOf(version, seqs, lps), nil
}

// probeOf is version's probe: seqs with lps, their log-probabilities at
// temperature 1.
func probeOf(version int64, seqs []policy.Seq, lps [][]float32) wire.Probe {
	p := wire.Probe{Version: version, Temp: 1}
	for i, s := range seqs {
		p.Seqs = append(p.Seqs, wire.ProbeSeq{Tokens: s.Tokens, PromptLen: s.PromptLen, LogProbs: lps[i]})
	}
	return p
}

// publishProbe stores version's probe on the bus (before its weights are
// announced, so an actor that sees the version finds the probe).
func publishProbe(ctx context.Context, b *bus.Bus, version int64, m *policy.Model, tok *policy.Tokenizer) error {
	p, err := Probe(version, m, tok)
	if err != nil {
		return err
	}
	return b.PublishProbe(ctx, p)
}

// promptTokens is a task's prompt as the learner's tokenizer makes it
// (wire.Task.PromptTokens); nil when it cannot be encoded (the actor then
// reports the task).
func promptTokens(tok *policy.Tokenizer, p task.Problem) wire.Int32s {
	ids, err := task.EncodePrompt(tok, p)
	if err != nil {
		return nil
	}
	return ids
}

// tokenizePrompts fills the prompt token ids of p's tasks: task.EncodePrompt
// with the built-in tokenizer for the built-in architecture, the trainer's
// own chat template (Trainer.Tokenize, or trainer.ChatTokenizer with the
// problems' system prompts) for another one, so that the actors generate
// from exactly the ids the learner trains on (an HF model's ids are not
// the built-in tokenizer's).
func (s *Service) tokenizePrompts(ctx context.Context, p *plan) error {
	if s.builtin {
		for _, id := range p.order {
			pt := p.tasks[id]
			pt.prompt = promptTokens(s.d.Tokenizer, pt.problem)
		}
		return nil
	}
	texts := make([]string, len(p.order))
	systems := make([]string, len(p.order))
	withSystem := false
	for i, id := range p.order {
		pr := p.tasks[id].problem
		texts[i], systems[i] = pr.Prompt, pr.System
		withSystem = withSystem || pr.System != ""
	}
	var ids [][]int32
	var err error
	tr := s.core.Trainer()
	if ct, ok := tr.(trainer.ChatTokenizer); ok && withSystem {
		ids, err = ct.TokenizeChat(ctx, systems, texts)
	} else if withSystem {
		return fmt.Errorf("%w: the problems have system prompts and the %s trainer's tokenizer takes none", ErrConfig, tr.Info().Backend)
	} else {
		ids, err = tr.Tokenize(ctx, texts)
	}
	if err != nil {
		return fmt.Errorf("tokenize prompts: %w", err)
	}
	if len(ids) != len(texts) {
		return fmt.Errorf("tokenize prompts: %d token lists for %d prompts", len(ids), len(texts))
	}
	for i, id := range p.order {
		p.tasks[id].prompt = ids[i]
	}
	return nil
}
