package trainer_test

import (
	"testing"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/trainer/trainertest"
)

// TestBuiltinConformance runs the conformance suite against the built-in
// Go trainer (the reference is the same code, so this pins the suite's
// plumbing and the Builtin wrapper: state, order, checkpoints).
func TestBuiltinConformance(t *testing.T) {
	trainertest.Run(t, func(t *testing.T, ck policy.Checkpoint, adam policy.AdamWConfig, mb int) trainer.Trainer {
		tr, err := trainer.NewBuiltin(ck.Model, ck.Tokenizer, adam, trainer.BuiltinOptions{MicroBatchTokens: mb})
		if err != nil {
			t.Fatal(err)
		}
		return tr
	})
}
