//go:build unix

package learner

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/policy"
)

// Benchmark set-up: the built-in policy shape (policy.DefaultConfig with a
// 72-symbol vocabulary, about the built-in tokenizer's), B = 32 questions of
// K = 8, prompts of 14 tokens and responses of 30 (EOS last), DefaultConfig
// otherwise (2 mini-batches).
const (
	benchVocab  = 72
	benchPrompt = 14
	benchResp   = 30
	benchCands  = 8 // stored candidates scored per replayed question (E7)
)

type benchStep struct {
	m        *policy.Model
	cfg      Config
	fresh    []Group // B fresh groups (the on-policy step)
	mixed    []Group // B/2 fresh groups, to be joined by B/2 replayed ones
	cands    [][]Rollout
	replayQs []string
}

func newBenchStep(b *testing.B) *benchStep {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	m, err := policy.New(policy.DefaultConfig(benchVocab), rng)
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	traj := func(id string, prompt []int32, reward float32) Rollout {
		r := Rollout{ID: id, PromptTokens: prompt, Tokens: make([]int32, benchResp), Reward: reward}
		for i := range r.Tokens {
			r.Tokens[i] = int32(3 + rng.IntN(benchVocab-3))
		}
		r.Tokens[benchResp-1] = 2
		lp, _, err := m.Score([]policy.Seq{concat(prompt, r.Tokens)})
		if err != nil {
			b.Fatal(err)
		}
		r.LogProbs = lp[0]
		return r
	}
	prompt := func() []int32 {
		p := make([]int32, benchPrompt)
		p[0] = 1
		for i := 1; i < len(p); i++ {
			p[i] = int32(3 + rng.IntN(benchVocab-3))
		}
		return p
	}
	group := func(q string, p []int32, rep *Rollout) Group {
		n := cfg.K
		if rep != nil {
			n--
		}
		rs := make([]Rollout, n)
		for i := range rs {
			rs[i] = traj(fmt.Sprint(q, "/", i), p, float32(i%2))
		}
		g, err := NewGroup(q, cfg.K, rep, rs, nil)
		if err != nil {
			b.Fatal(err)
		}
		return g
	}
	s := &benchStep{m: m, cfg: cfg}
	for q := range cfg.B {
		s.fresh = append(s.fresh, group(fmt.Sprint("f", q), prompt(), nil))
	}
	nExp := cfg.PoolQuestions(true)
	for q := range cfg.B - nExp {
		s.mixed = append(s.mixed, group(fmt.Sprint("m", q), prompt(), nil))
	}
	for q := range nExp {
		p := prompt()
		var cs []Rollout
		for c := range benchCands {
			r := traj(fmt.Sprint("r", q, "/", c), p, 1)
			r.Replayed = true
			cs = append(cs, r)
		}
		s.cands = append(s.cands, cs)
		s.replayQs = append(s.replayQs, fmt.Sprint("r", q))
	}
	return s
}

// BenchmarkStep compares one ExGRPO step (E7 scoring of 8 candidates for
// each of the 16 replayed questions, then the mixed update of 16 replayed
// groups + 16 fresh groups) with one on-policy step (PPO update of 32 fresh
// groups) at the same batch: 256 trajectories, 7,680 response tokens, two
// AdamW updates. The ExGRPO figure includes building the groups.
func BenchmarkStep(b *testing.B) {
	s := newBenchStep(b)
	tokens := float64(s.cfg.B * s.cfg.K * benchResp)
	b.Run("onpolicy", func(b *testing.B) {
		l, err := New(s.cfg, s.m.Clone(), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			if _, err := l.Step(StepInput{Mixed: false, Groups: s.fresh}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(tokens*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
	b.Run("exgrpo", func(b *testing.B) {
		l, err := New(s.cfg, s.m.Clone(), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			s.exgrpoStep(b, l)
		}
		b.ReportMetric(tokens*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
	b.Run("select", func(b *testing.B) { // E7 alone: 16 questions x 8 candidates
		for range b.N {
			for _, cs := range s.cands {
				if _, _, err := SelectTrajectory(context.Background(), builtinOf(b, s.m), s.cfg, cs, nil); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(len(s.cands)*benchCands*benchResp)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
	})
}

// exgrpoStep selects the replayed trajectories (E7), assembles the groups
// (E8) and trains the mixed step; it returns the time spent in selection.
func (s *benchStep) exgrpoStep(b *testing.B, l *Learner) time.Duration {
	groups := append([]Group(nil), s.mixed...)
	var sel time.Duration
	for q, cs := range s.cands {
		ts := time.Now()
		i, ranking, err := l.SelectTrajectory(cs, nil)
		sel += time.Since(ts)
		if err != nil {
			b.Fatal(err)
		}
		rep := cs[i]
		fresh := s.fresh[q].Rollouts[:s.cfg.K-1]
		g, err := NewGroup(s.replayQs[q], s.cfg.K, &rep, fresh, ranking)
		if err != nil {
			b.Fatal(err)
		}
		groups = append(groups, g)
	}
	if _, err := l.Step(StepInput{Mixed: true, Groups: groups}); err != nil {
		b.Fatal(err)
	}
	return sel
}

// BenchmarkStepOverhead alternates one on-policy step and one ExGRPO step per
// iteration, on two learners from the same initial model, so that both see
// the same machine load, and reports the ExGRPO/on-policy ratio of wall time
// and of process CPU time (user+system, from getrusage; far less sensitive
// than wall time to other processes on a shared machine), and the share of
// the ExGRPO step's wall time spent in E7 scoring.
func BenchmarkStepOverhead(b *testing.B) {
	s := newBenchStep(b)
	on, err := New(s.cfg, s.m.Clone(), nil)
	if err != nil {
		b.Fatal(err)
	}
	ex, err := New(s.cfg, s.m.Clone(), nil)
	if err != nil {
		b.Fatal(err)
	}
	var tOn, tEx, tSel, cOn, cEx time.Duration
	b.ResetTimer()
	for range b.N {
		t0, c0 := time.Now(), cpuTime(b)
		if _, err := on.Step(StepInput{Mixed: false, Groups: s.fresh}); err != nil {
			b.Fatal(err)
		}
		t1, c1 := time.Now(), cpuTime(b)
		tSel += s.exgrpoStep(b, ex)
		tEx += time.Since(t1)
		cEx += cpuTime(b) - c1
		tOn += t1.Sub(t0)
		cOn += c1 - c0
	}
	b.ReportMetric(tOn.Seconds()/float64(b.N), "onpolicy-s/step")
	b.ReportMetric(tEx.Seconds()/float64(b.N), "exgrpo-s/step")
	b.ReportMetric(tEx.Seconds()/tOn.Seconds(), "exgrpo/onpolicy")
	b.ReportMetric(cOn.Seconds()/float64(b.N), "onpolicy-cpu-s/step")
	b.ReportMetric(cEx.Seconds()/cOn.Seconds(), "exgrpo/onpolicy-cpu")
	b.ReportMetric(tSel.Seconds()/tEx.Seconds(), "select-share")
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkObjective measures the pure loss maths of E10-E13 on one
// mini-batch of 128 trajectories x 30 tokens, half of them replayed.
func BenchmarkObjective(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	cfg := DefaultConfig()
	items := make([]Item, 128)
	logps, ents := make([][]float32, 128), make([][]float32, 128)
	for i := range items {
		items[i] = Item{Advantage: float32(rng.Float64() - 0.5), Replayed: i%2 == 0, Behaviour: make([]float32, benchResp)}
		logps[i], ents[i] = make([]float32, benchResp), make([]float32, benchResp)
		for t := range benchResp {
			items[i].Behaviour[t] = float32(-rng.Float64() * 3)
			logps[i][t] = items[i].Behaviour[t] + float32(0.1*(rng.Float64()-0.5))
			ents[i][t] = float32(rng.Float64() * 2)
		}
	}
	b.ResetTimer()
	for range b.N {
		if _, _, _, err := Objective(cfg, true, items, logps, ents); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(128*benchResp)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}
