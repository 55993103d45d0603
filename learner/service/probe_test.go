package service

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

// TestPublishWeightsPublishesTheProbe: every published version has its
// probe in KV before the version is announced, holding the temperature-1
// log-probs of the probe sequences under that version's weights (equal to
// Score's), and tasks' prompt ids are the tokenizer's encoding.
func TestPublishWeightsPublishesTheProbe(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("probe"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok := task.BuiltinTokenizer()
	m, err := policy.New(task.ModelConfig(), rand.New(rand.NewPCG(4, 4)))
	if err != nil {
		t.Fatal(err)
	}
	if err := PublishWeights(ctx, b, 3, m, tok); err != nil {
		t.Fatal(err)
	}
	p, err := b.FetchProbe(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != 3 || p.Temp != 1 || len(p.Seqs) != len(probeProblems) {
		t.Fatalf("probe v%d T=%v with %d sequences", p.Version, p.Temp, len(p.Seqs))
	}
	for i, sq := range p.Seqs {
		want, _, err := m.Score([]policy.Seq{{Tokens: sq.Tokens, PromptLen: sq.PromptLen}})
		if err != nil {
			t.Fatal(err)
		}
		for j := range want[0] {
			if want[0][j] != sq.LogProbs[j] {
				t.Fatalf("probe %d token %d: %v, Score %v", i, j, sq.LogProbs[j], want[0][j])
			}
		}
	}
	if _, err := b.FetchProbe(ctx, 4); err == nil {
		t.Fatal("a probe for an unpublished version")
	}
	ids := promptTokens(tok, task.Problem{ID: "q", Prompt: "1+2"})
	want, _ := task.EncodePrompt(tok, task.Problem{ID: "q", Prompt: "1+2"})
	if len(ids) != len(want) || ids[0] != tok.BOS() {
		t.Fatalf("prompt tokens %v, want %v", ids, want)
	}
	if promptTokens(tok, task.Problem{ID: "q", Prompt: "\u2603"}) != nil {
		t.Fatal("an unencodable prompt got token ids")
	}
}
