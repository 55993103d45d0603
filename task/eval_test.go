package task

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/policy"
)

// scriptedSampler answers each prompt with a fixed number of correct
// worked solutions out of every K copies (the rest wrong), so Evaluate's
// accounting can be checked exactly.
func scriptedSampler(t *testing.T, tok *policy.Tokenizer, ds Dataset, correctOf map[string]int, K int) func([][]int32, int) ([]policy.Sampled, error) {
	byPrompt := map[string]Problem{}
	for _, p := range ds.Problems {
		byPrompt[p.Prompt+PromptSeparator] = p
	}
	seen := map[string]int{}
	return func(prompts [][]int32, maxNew int) ([]policy.Sampled, error) {
		out := make([]policy.Sampled, len(prompts))
		for i, pr := range prompts {
			p, ok := byPrompt[tok.Decode(pr)]
			if !ok {
				t.Fatalf("unexpected prompt %q", tok.Decode(pr))
			}
			text := p.Solution
			if seen[p.ID] >= correctOf[p.ID] {
				text = strings.TrimSuffix(p.Solution, Boxed(p.Answer)) + Boxed(p.Answer+"1") // "7" -> "71", "0" -> "01" = 1: always a different integer
			}
			seen[p.ID]++
			ids, err := EncodeResponse(tok, text)
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) > maxNew {
				t.Fatalf("response of %d tokens over maxNew %d", len(ids), maxNew)
			}
			out[i] = policy.Sampled{Tokens: ids, Finish: policy.FinishEOS}
		}
		return out, nil
	}
}

func TestEvaluateAccounting(t *testing.T) {
	const K = 4
	tok := BuiltinTokenizer()
	ds, err := Generate("t", Spec{Levels: []int{3, 4}}, 60, 1)
	if err != nil {
		t.Fatal(err)
	}
	ds.Problems = append(ds.Problems, Problem{ID: "bad", Prompt: "7×2", Answer: "14", Kind: KindArith}) // not encodable: skipped
	rng := rand.New(rand.NewPCG(1, 1))
	correctOf := map[string]int{}
	wantBuckets := make([]int, K+1)
	type acc struct{ n, pass1, passK float64 }
	wantLevel := map[int]*acc{3: {}, 4: {}}
	for _, p := range ds.Problems[:60] {
		k := rng.IntN(K + 1)
		correctOf[p.ID] = k
		wantBuckets[k]++
		a := wantLevel[p.Level]
		a.n++
		a.pass1 += float64(k) / K
		if k > 0 {
			a.passK++
		}
	}
	rep, err := evaluate(scriptedSampler(t, tok, ds, correctOf, K), ModelConfig().Context, tok, ds, K, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Skipped != 1 || rep.Overall.Questions != 60 {
		t.Fatalf("skipped %d, questions %d; want 1 and 60", rep.Skipped, rep.Overall.Questions)
	}
	for k := range wantBuckets {
		if rep.Buckets[k] != wantBuckets[k] {
			t.Fatalf("buckets %v, want %v", rep.Buckets, wantBuckets)
		}
	}
	const tol = 1e-12 // exact sums of a few dozen terms
	totalPass1 := 0.0
	for _, l := range rep.Levels {
		a := wantLevel[l.Level]
		if l.Family != FamilyChain || float64(l.Questions) != a.n ||
			math.Abs(l.Pass1-a.pass1/a.n) > tol || math.Abs(l.PassK-a.passK/a.n) > tol {
			t.Fatalf("level %+v, want n %v pass1 %v passK %v", l, a.n, a.pass1/a.n, a.passK/a.n)
		}
		totalPass1 += a.pass1
	}
	if math.Abs(rep.Overall.Pass1-totalPass1/60) > tol {
		t.Fatalf("overall pass@1 %v, want %v", rep.Overall.Pass1, totalPass1/60)
	}
	wantCorrect := 0
	for _, k := range correctOf {
		wantCorrect += k
	}
	if rep.Correct != wantCorrect || rep.Sound != wantCorrect { // the scripted correct samples are the worked solutions
		t.Fatalf("correct %d sound %d, want %d and %d", rep.Correct, rep.Sound, wantCorrect, wantCorrect)
	}
	if rep.Reasons["correct"]+rep.Reasons["wrong_value"] != 60*K {
		t.Fatalf("reasons %v do not cover %d samples", rep.Reasons, 60*K)
	}
	for _, q := range rep.Questions {
		if q.Correct != correctOf[q.ID] {
			t.Fatalf("question %s: k %d, want %d", q.ID, q.Correct, correctOf[q.ID])
		}
	}
	filled := true
	for k := 1; k < K; k++ {
		filled = filled && wantBuckets[k] > 0
	}
	if rep.MiddleBucketsFilled() != filled {
		t.Fatalf("MiddleBucketsFilled = %v, buckets %v", rep.MiddleBucketsFilled(), rep.Buckets)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "pass@4") || strings.Count(b.String(), "k=") != K+1 {
		t.Fatalf("table lacks the header or the histogram:\n%s", b.String())
	}
}

func TestEvaluateRealModel(t *testing.T) {
	// A fresh model through the real sampler: every sample is accounted for
	// and an unknown verifier kind is an error.
	tok := BuiltinTokenizer()
	cfg := ModelConfig()
	m, err := policy.New(cfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := Generate("t", TrainSpec(), 6, 1)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Evaluate(m, tok, ds, 3, 1, rand.New(rand.NewPCG(3, 4)))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range rep.Reasons {
		total += n
	}
	if total != 18 || rep.Overall.Questions != 6 || len(rep.Buckets) != 4 {
		t.Fatalf("report %+v: want 18 graded samples over 6 questions", rep)
	}
	ds.Problems[0].Kind = "no-such-kind"
	if _, err := Evaluate(m, tok, ds, 3, 1, rand.New(rand.NewPCG(3, 4))); !errors.Is(err, ErrEval) {
		t.Fatalf("unknown kind: err = %v, want ErrEval", err)
	}
	if _, err := Evaluate(m, tok, ds, 0, 1, rand.New(rand.NewPCG(3, 4))); !errors.Is(err, ErrEval) {
		t.Fatalf("K = 0: err = %v, want ErrEval", err)
	}
}
