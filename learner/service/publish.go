package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"github.com/exgrpo/exgrpo/wire"
)

// publish makes s.version available to the actors (Deps.PublishVersion or
// Deps.PublishWeights).
func (s *Service) publish(ctx context.Context) error {
	if s.d.PublishVersion != nil {
		return s.d.PublishVersion(ctx, s.version, s.core.Trainer())
	}
	return s.d.PublishWeights(ctx, s.version, s.core.Model(), s.d.Tokenizer)
}

// VersionPublisher returns a Deps.PublishVersion that publishes every
// version through p (a shared directory or the Object Store): the version's
// probe first (so an actor that sees the version finds it), then the files
// the trainer's SaveWeights writes into p's staging directory, committed
// with the manifest's Format saying what they are (Format). tok is the
// tokenizer of the built-in architecture's probe (Probe).
func VersionPublisher(b *bus.Bus, p *transfer.Publisher, tok *policy.Tokenizer) func(ctx context.Context, version int64, tr trainer.Trainer) error {
	return func(ctx context.Context, version int64, tr trainer.Trainer) error {
		format, err := Format(tr.Info())
		if err != nil {
			return err
		}
		probe, err := TrainerProbe(ctx, version, tr, tok)
		if err != nil {
			return err
		}
		if err := b.PublishProbe(ctx, probe); err != nil {
			return fmt.Errorf("learner service: probe of v%d: %w", version, err)
		}
		return p.PublishFiles(ctx, version, format, tr.SaveWeights)
	}
}

// Format is the weights format a trainer's SaveWeights writes: the
// built-in checkpoint for the built-in architecture, an HF directory for
// an HF model.
func Format(in trainer.Info) (string, error) {
	switch in.Arch {
	case "builtin":
		return weights.FormatBuiltin, nil
	case "hf":
		return weights.FormatHF, nil
	}
	return "", fmt.Errorf("%w: trainer of architecture %q: no weights format for it", ErrConfig, in.Arch)
}

// TrainerProbe is version's probe under the trainer's current weights. For
// the built-in architecture it is Probe of the trainer's weights (the
// numbers the blob path publishes). For another architecture the trainer
// scores it: each probe text is tokenized as a prompt by the trainer's own
// chat template (Trainer.Tokenize), the first half of the ids taken as the
// prompt and the rest as the response; any fixed ids fingerprint the
// weights, and these are ids the model's vocabulary holds.
func TrainerProbe(ctx context.Context, version int64, tr trainer.Trainer, tok *policy.Tokenizer) (wire.Probe, error) {
	m, err := tr.Weights(ctx)
	switch {
	case err == nil:
		if tok == nil {
			return wire.Probe{}, fmt.Errorf("%w: the built-in probe needs the tokenizer", ErrConfig)
		}
		return Probe(version, m, tok)
	case !errors.Is(err, trainer.ErrNotBuiltin):
		return wire.Probe{}, fmt.Errorf("learner service: probe v%d: %w", version, err)
	}
	return scoredProbe(ctx, version, tr)
}

// scoredProbe is the probe through the trainer's tokenizer and Score.
func scoredProbe(ctx context.Context, version int64, tr trainer.Trainer) (wire.Probe, error) {
	texts := make([]string, len(probeProblems))
	for i, pp := range probeProblems {
		texts[i] = pp.prompt + " " + pp.response
	}
	ids, err := tr.Tokenize(ctx, texts)
	if err != nil {
		return wire.Probe{}, fmt.Errorf("learner service: probe v%d: %w", version, err)
	}
	var seqs []policy.Seq
	maxLen := tr.Info().Context
	for _, s := range ids {
		if len(s) < 2 || (maxLen > 0 && len(s) > maxLen) {
			continue
		}
		seqs = append(seqs, policy.Seq{Tokens: s, PromptLen: len(s) / 2})
	}
	if len(seqs) == 0 {
		return wire.Probe{}, fmt.Errorf("learner service: no probe sequence fits the trainer's context")
	}
	lps, _, err := tr.Score(ctx, seqs, 1)
	if err != nil {
		return wire.Probe{}, fmt.Errorf("learner service: score probe v%d: %w", version, err)
	}
	return probeOf(version, seqs, lps), nil
}
