package replay

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"default", func(*Config) {}, true},
		{"K=2", func(c *Config) { c.K = 2; c.Mu = 1 }, true},
		{"K=1", func(c *Config) { c.K = 1 }, false},
		{"K too big", func(c *Config) { c.K = MaxK + 1 }, false},
		{"sigma 0", func(c *Config) { c.Sigma = 0 }, false},
		{"sigma negative", func(c *Config) { c.Sigma = -1 }, false},
		{"mu NaN", func(c *Config) { c.Mu = nan() }, false},
		{"selection unknown", func(c *Config) { c.Selection = 9 }, false},
		{"no candidates", func(c *Config) { c.MaxCandidates = 0 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok = %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v is not ErrInvalidConfig", err)
			}
		})
	}
	for _, s := range []Selection{SelectGaussian, SelectUniform} {
		got, err := ParseSelection(s.String())
		if err != nil || got != s {
			t.Fatalf("ParseSelection(%q) = %v, %v", s.String(), got, err)
		}
	}
	if _, err := ParseSelection("entropy"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("ParseSelection(entropy) error = %v", err)
	}
}

// ALGORITHM.md E2, E4: a group solved 8 of 8 retires its question for good:
// it leaves its bucket and the pool, its trajectories are dropped, and later
// groups store nothing for it.
func TestE4RetirementOnAllCorrect(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	mustApply(t, p, Report{Step: 1, Mixed: true, Groups: []Group{
		group("a", 8, 3, traj("a1", 5, 6), traj("a2", 5, 7), traj("a3", 5, 8)),
		group("b", 8, 3, traj("b1", 1)),
	}})
	if s := p.Stats(); s.Buckets[3] != 2 || s.Trajectories != 4 || s.Questions != 2 {
		t.Fatalf("before: %+v, want bucket 3 = 2 questions, 4 trajectories", s)
	}
	mustApply(t, p, Report{Step: 2, Mixed: true, Groups: []Group{group("a", 8, 8, traj("a4", 9))}})
	s := p.Stats()
	if s.Buckets[3] != 1 || s.Trajectories != 1 || s.Questions != 1 || s.Retired != 1 || s.Tokens != 1 {
		t.Fatalf("after 8/8: %+v, want bucket 3 = 1, 1 trajectory, 1 retired", s)
	}
	if !p.Retired("a") || p.Retired("b") || p.Retired("nope") {
		t.Fatalf("Retired: a=%v b=%v nope=%v, want true false false", p.Retired("a"), p.Retired("b"), p.Retired("nope"))
	}
	if c := p.Candidates("a"); c != nil {
		t.Fatalf("retired question has %d candidates", len(c))
	}
	// Permanent: a later 3/8 stores nothing and does not re-bucket it.
	mustApply(t, p, Report{Step: 3, Mixed: true, Groups: []Group{group("a", 8, 3, traj("a5", 4))}})
	if info, _ := p.Question("a"); !info.Retired || info.Bucket != 0 || info.Trajectories != 0 {
		t.Fatalf("after later 3/8: %+v, want retired, no bucket, no trajectories", info)
	}
	if got := p.RetiredIDs(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("RetiredIDs = %v", got)
	}
	for seed := range uint64(50) {
		for _, pk := range p.Sample(2, rngFor(seed)) {
			if pk.QuestionID == "a" {
				t.Fatal("a retired question was sampled")
			}
		}
	}
	want := []Event{
		{Step: 1, Correct: 3, Size: 8, From: 0, To: 3, Added: 3},
		{Step: 2, Correct: 8, Size: 8, From: 3, To: 0, Retired: true},
		{Step: 3, Correct: 3, Size: 8, From: 0, To: 0, WasRetired: true},
	}
	if got := p.History("a"); !slices.Equal(got, want) {
		t.Fatalf("History(a) = %+v\nwant %+v", got, want)
	}
}

// ALGORITHM.md E2: k = 0 stores nothing and the question keeps its old bucket
// and trajectories; a question first seen with k = 0 is not in the pool.
func TestE2NothingStoredOnZeroCorrect(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	mustApply(t, p, Report{Step: 1, Mixed: true, Groups: []Group{group("a", 8, 5, traj("a1", 1), traj("a2", 2))}})
	mustApply(t, p, Report{Step: 2, Mixed: true, Groups: []Group{group("a", 8, 0), group("z", 8, 0)}})
	if info, _ := p.Question("a"); info.Bucket != 5 || info.Trajectories != 2 || info.LatestK != 5 {
		t.Fatalf("a after 0/8: %+v, want bucket 5 with 2 trajectories", info)
	}
	if info, ok := p.Question("z"); !ok || info.Bucket != 0 || info.Trajectories != 0 {
		t.Fatalf("z after 0/8: %+v %v, want known, no bucket", info, ok)
	}
	if s := p.Stats(); s.Questions != 1 || s.Buckets[5] != 1 || s.Known != 2 {
		t.Fatalf("stats %+v, want 1 pool question in bucket 5, 2 known", s)
	}
	if h := p.History("a"); h[1] != (Event{Step: 2, Correct: 0, Size: 8, From: 5, To: 5}) {
		t.Fatalf("history event %+v", h[1])
	}
}

// ALGORITHM.md E2: trajectories are deduplicated by exact token sequence,
// within a group and across steps; log-probs and ids do not matter.
func TestE2DedupByExactTokens(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	same := traj("x2", 4, 5, 6)
	same.LogProbs = []float32{-1, -2, -3}
	mustApply(t, p, Report{Step: 1, Mixed: true, Groups: []Group{
		group("q", 8, 3, traj("x1", 4, 5, 6), same, traj("x3", 4, 5, 7)),
	}})
	mustApply(t, p, Report{Step: 2, Mixed: true, Groups: []Group{
		group("q", 8, 4, traj("x4", 4, 5, 6), traj("x5", 4, 5), traj("x6", 4, 5, 6, 0)),
	}})
	var ids []string
	for _, c := range p.Candidates("q") {
		ids = append(ids, c.ID)
	}
	if want := []string{"x1", "x3", "x5", "x6"}; !slices.Equal(ids, want) {
		t.Fatalf("stored %v, want %v", ids, want)
	}
	if h := p.History("q"); h[0].Added != 2 || h[1].Added != 2 {
		t.Fatalf("added %d then %d, want 2 then 2", h[0].Added, h[1].Added)
	}
}

// ALGORITHM.md E3: the bucket is the latest k, not an average; each move is
// recorded in the history.
func TestE3BucketIsLatestK(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	ks := []int{2, 6, 0, 1}
	for i, k := range ks {
		g := group("q", 8, k)
		if k > 0 {
			g.Successes = []Trajectory{traj("t", int32(i))}
		}
		mustApply(t, p, Report{Step: int64(10 * (i + 1)), Mixed: true, Groups: []Group{g}})
	}
	want := []Event{
		{Step: 10, Correct: 2, Size: 8, From: 0, To: 2, Added: 1},
		{Step: 20, Correct: 6, Size: 8, From: 2, To: 6, Added: 1},
		{Step: 30, Correct: 0, Size: 8, From: 6, To: 6},
		{Step: 40, Correct: 1, Size: 8, From: 6, To: 1, Added: 1},
	}
	if got := p.History("q"); !slices.Equal(got, want) {
		t.Fatalf("History = %+v\nwant %+v", got, want)
	}
	if s := p.Stats(); s.Buckets[1] != 1 || s.Buckets[6] != 0 || s.Buckets[2] != 0 {
		t.Fatalf("buckets %v, want only bucket 1", s.Buckets)
	}
}

// ALGORITHM.md E5: before the delayed start (Mixed false) nothing is
// collected and nothing retires; the step still advances.
func TestE5NothingCollectedBeforeDelayedStart(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	mustApply(t, p, Report{Step: 1, Mixed: false, Groups: []Group{
		group("a", 8, 3, traj("a1", 1)), group("b", 8, 8, traj("b1", 2)),
	}})
	s := p.Stats()
	if s.Questions != 0 || s.Trajectories != 0 || s.Retired != 0 || s.Known != 0 || !s.HasStep || s.Step != 1 {
		t.Fatalf("after a non-mixed step: %+v, want empty pool at step 1", s)
	}
	if p.Retired("b") {
		t.Fatal("8/8 before the delayed start retired its question")
	}
	mustApply(t, p, Report{Step: 2, Mixed: true, Groups: []Group{group("a", 8, 3, traj("a1", 1))}})
	if s := p.Stats(); s.Questions != 1 || s.Trajectories != 1 {
		t.Fatalf("after the first mixed step: %+v, want 1 question, 1 trajectory", s)
	}
}

func TestApplyRejectsBadReports(t *testing.T) {
	bad := traj("bad", 1, 2)
	bad.LogProbs = bad.LogProbs[:1]
	tests := []struct {
		name string
		r    Report
		want error
	}{
		{"stale step", Report{Step: 5, Mixed: true}, ErrStaleReport},
		{"earlier step", Report{Step: 4, Mixed: true}, ErrStaleReport},
		{"wrong size", Report{Step: 6, Mixed: true, Groups: []Group{group("a", 4, 1)}}, ErrBadReport},
		{"k above size", Report{Step: 6, Mixed: true, Groups: []Group{group("a", 8, 9)}}, ErrBadReport},
		{"k negative", Report{Step: 6, Mixed: true, Groups: []Group{group("a", 8, -1)}}, ErrBadReport},
		{"more successes than k", Report{Step: 6, Mixed: true, Groups: []Group{group("a", 8, 1, traj("x", 1), traj("y", 2))}}, ErrBadReport},
		{"empty id", Report{Step: 6, Mixed: true, Groups: []Group{group("", 8, 1)}}, ErrBadReport},
		{"duplicate question", Report{Step: 6, Mixed: true, Groups: []Group{group("a", 8, 1), group("a", 8, 2)}}, ErrBadReport},
		{"log-prob length", Report{Step: 6, Mixed: true, Groups: []Group{group("c", 8, 1), group("a", 8, 1, bad)}}, ErrBadReport},
		{"empty trajectory", Report{Step: 6, Mixed: true, Groups: []Group{group("a", 8, 1, traj("e"))}}, ErrBadReport},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := mustNew(t, DefaultConfig())
			mustApply(t, p, Report{Step: 5, Mixed: true, Groups: []Group{group("a", 8, 2, traj("a1", 7))}})
			before := p.Snapshot()
			if err := p.Apply(tc.r); !errors.Is(err, tc.want) {
				t.Fatalf("Apply = %v, want %v", err, tc.want)
			}
			if !bytes.Equal(before, p.Snapshot()) {
				t.Fatal("a rejected report changed the pool")
			}
		})
	}
}

// ALGORITHM.md E7: Candidates lists the most recent MaxCandidates stored
// trajectories, oldest first, sharing the stored slices.
func TestE7CandidatesCappedMostRecentOldestFirst(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxCandidates = 32
	p := mustNew(t, cfg)
	for i := range 40 {
		id := string(rune('A' + i))
		mustApply(t, p, Report{Step: int64(i), Mixed: true, Groups: []Group{group("q", 8, 1+i%7, traj(id, int32(i)))}})
	}
	c := p.Candidates("q")
	if len(c) != 32 {
		t.Fatalf("%d candidates, want 32", len(c))
	}
	for j, tr := range c {
		if want := string(rune('A' + 8 + j)); tr.ID != want || tr.Tokens[0] != int32(8+j) || tr.Step != 0 {
			t.Fatalf("candidate %d = %s tokens %v, want %s (the 9th stored onwards)", j, tr.ID, tr.Tokens, want)
		}
		if !slices.Equal(tr.PromptTokens, []int32{1, 2, 3}) || len(tr.LogProbs) != 1 {
			t.Fatalf("candidate %d: prompt %v log-probs %v", j, tr.PromptTokens, tr.LogProbs)
		}
	}
	if info, _ := p.Question("q"); info.Trajectories != 40 {
		t.Fatalf("stored %d, want all 40 (the cap bounds candidates, not storage)", info.Trajectories)
	}
	cfg.MaxCandidates = 3
	small := mustNew(t, cfg)
	mustApply(t, small, Report{Step: 1, Mixed: true, Groups: []Group{group("q", 8, 2, traj("x", 1), traj("y", 2))}})
	if c := small.Candidates("q"); len(c) != 2 || c[0].ID != "x" {
		t.Fatalf("candidates below the cap: %+v", c)
	}
}

// ALGORITHM.md E1: the pool keeps the caller's token and log-prob arrays
// (ownership passes on Apply) and one prompt per question.
func TestE1StoresTokenIDsAndBehaviourLogProbs(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	a, b := traj("a", 10, 11, 12), traj("b", 13)
	b.PromptTokens = []int32{1, 2, 3} // equal to a's, separate array
	a.PolicyVersion, a.Step = 7, 3
	mustApply(t, p, Report{Step: 3, Mixed: true, Groups: []Group{group("q", 8, 2, a, b)}})
	c := p.Candidates("q")
	if &c[0].Tokens[0] != &a.Tokens[0] || &c[0].LogProbs[0] != &a.LogProbs[0] {
		t.Fatal("stored trajectory does not share the caller's arrays")
	}
	if &c[1].PromptTokens[0] != &c[0].PromptTokens[0] {
		t.Fatal("equal prompts are not shared within a question")
	}
	if c[0].PolicyVersion != 7 || c[0].Step != 3 || c[0].LogProbs[2] != float32(-0.1)*3 {
		t.Fatalf("stored %+v", c[0])
	}
}

// The dedup hash separates sequences that differ in one token, in order, or
// in length (equality is still confirmed on the tokens; this guards speed).
func TestHashTokensSeparates(t *testing.T) {
	seqs := [][]int32{{}, {0}, {0, 0}, {1}, {1, 2, 3, 4}, {2, 1, 3, 4}, {1, 2, 3, 4, 5}, {1, 2, 3, 5}, {1, 2, 3, 4, 0}}
	seen := map[uint64]int{}
	for i, s := range seqs {
		h := hashTokens(s)
		if j, dup := seen[h]; dup {
			t.Fatalf("sequences %v and %v hash alike", seqs[j], s)
		}
		seen[h] = i
	}
}

// A short slice over a much larger array is stored as an exact-size copy, so
// the pool's memory stays proportional to what it stores (ALGORITHM.md E1).
func TestE1OversizedArraysAreNotPinned(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	big := make([]int32, 2, 1000)
	lps := make([]float32, 2, 1000)
	big[0], big[1] = 5, 6
	tr := Trajectory{ID: "x", Tokens: big, LogProbs: lps, PromptTokens: make([]int32, 1, 500)}
	mustApply(t, p, Report{Step: 1, Mixed: true, Groups: []Group{group("q", 8, 1, tr)}})
	c := p.Candidates("q")[0]
	// A copy's capacity is its length rounded up to the allocator's size class (<= 8 here).
	if cap(c.Tokens) > 8 || cap(c.LogProbs) > 8 || cap(c.PromptTokens) > 8 || !slices.Equal(c.Tokens, []int32{5, 6}) {
		t.Fatalf("stored caps %d/%d/%d, want copies of about the length (2/2/1)", cap(c.Tokens), cap(c.LogProbs), cap(c.PromptTokens))
	}
	if s, ok := p.LastStep(); !ok || s != 1 {
		t.Fatalf("LastStep = %d, %v", s, ok)
	}
}

// ALGORITHM.md E2: a replayed question's k counts the replayed trajectory;
// handing it back among the successes does not store it twice.
func TestE2ReplayedTrajectoryCountsButIsNotStoredTwice(t *testing.T) {
	p := mustNew(t, DefaultConfig())
	mustApply(t, p, Report{Step: 1, Mixed: true, Groups: []Group{group("q", 8, 1, traj("r", 3, 3))}})
	replayed := p.Candidates("q")[0]
	mustApply(t, p, Report{Step: 2, Mixed: true, Groups: []Group{group("q", 8, 2, replayed, traj("f", 4))}})
	info, _ := p.Question("q")
	if info.Bucket != 2 || info.Trajectories != 2 {
		t.Fatalf("after replay with 2/8: %+v, want bucket 2 with 2 trajectories", info)
	}
	if h := p.History("q"); h[1].Added != 1 || h[1].From != 1 || h[1].To != 2 {
		t.Fatalf("history %+v, want 1 added, bucket 1 -> 2", h[1])
	}
}
