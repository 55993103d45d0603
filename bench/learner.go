package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/exgrpo/exgrpo/learner"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
)

// learnerBench is the set-up of learner/bench_test.go's BenchmarkStepOverhead,
// built with the package's exported API: the built-in policy shape, B = 32
// questions of K = 8, prompts of 14 tokens and responses of 30 (EOS last),
// learner.DefaultConfig (2 mini-batches), 8 stored candidates per replayed
// question scored by E7.
type learnerBench struct {
	m     *policy.Model
	cfg   learner.Config
	fresh []learner.Group // B fresh groups: the on-policy step
	mixed []learner.Group // B - n_exp fresh groups of the ExGRPO step
	cands [][]learner.Rollout
}

const (
	lbPrompt = 14
	lbResp   = 30
	lbCands  = 8
)

func newLearnerBench() (*learnerBench, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	m, err := policy.New(task.ModelConfig(), rng)
	if err != nil {
		return nil, err
	}
	vocab := m.Config.Vocab
	cfg := learner.DefaultConfig()
	s := &learnerBench{m: m, cfg: cfg}
	traj := func(id string, prompt []int32, reward float32) (learner.Rollout, error) {
		r := learner.Rollout{ID: id, PromptTokens: prompt, Tokens: make([]int32, lbResp), Reward: reward}
		for i := range r.Tokens {
			r.Tokens[i] = int32(3 + rng.IntN(vocab-3))
		}
		r.Tokens[lbResp-1] = 2
		seq := policy.Seq{Tokens: append(append([]int32(nil), prompt...), r.Tokens...), PromptLen: len(prompt)}
		lp, _, err := m.Score([]policy.Seq{seq})
		if err != nil {
			return r, err
		}
		r.LogProbs = lp[0]
		return r, nil
	}
	prompt := func() []int32 {
		p := make([]int32, lbPrompt)
		p[0] = 1
		for i := 1; i < len(p); i++ {
			p[i] = int32(3 + rng.IntN(vocab-3))
		}
		return p
	}
	group := func(q string, p []int32) (learner.Group, error) {
		rs := make([]learner.Rollout, cfg.K)
		for i := range rs {
			var err error
			if rs[i], err = traj(fmt.Sprint(q, "/", i), p, float32(i%2)); err != nil {
				return learner.Group{}, err
			}
		}
		return learner.NewGroup(q, cfg.K, nil, rs, nil)
	}
	nExp := cfg.PoolQuestions(true)
	for q := range cfg.B {
		g, err := group(fmt.Sprint("f", q), prompt())
		if err != nil {
			return nil, err
		}
		s.fresh = append(s.fresh, g)
		if q < cfg.B-nExp {
			s.mixed = append(s.mixed, g)
		}
	}
	for q := range nExp {
		p := prompt()
		var cs []learner.Rollout
		for c := range lbCands {
			r, err := traj(fmt.Sprint("r", q, "/", c), p, 1)
			if err != nil {
				return nil, err
			}
			r.Replayed = true
			cs = append(cs, r)
		}
		s.cands = append(s.cands, cs)
	}
	return s, nil
}

// exgrpoStep is E7 selection for every replayed question, E8 groups, and
// the mixed update; it returns the time spent in E7.
func (s *learnerBench) exgrpoStep(l *learner.Learner) (time.Duration, error) {
	groups := append([]learner.Group(nil), s.mixed...)
	var sel time.Duration
	for q, cs := range s.cands {
		t0 := time.Now()
		i, ranking, err := l.SelectTrajectory(cs, nil)
		sel += time.Since(t0)
		if err != nil {
			return sel, err
		}
		rep := cs[i]
		g, err := learner.NewGroup(fmt.Sprint("r", q), s.cfg.K, &rep, s.fresh[q].Rollouts[:s.cfg.K-1], ranking)
		if err != nil {
			return sel, err
		}
		groups = append(groups, g)
	}
	_, err := l.Step(learner.StepInput{Mixed: true, Groups: groups})
	return sel, err
}

// LearnerConfig is `exgrpo bench learner`.
type LearnerConfig struct {
	Steps int  // step pairs (one on-policy, one ExGRPO, alternating so both see the same load)
	Quick bool // short run (5 step pairs)
}

// DefaultLearner is the configuration BENCHMARKS.md reports.
func DefaultLearner() LearnerConfig { return LearnerConfig{Steps: 20} }

// Learner measures the step-time overhead of experience management: an
// ExGRPO step against an on-policy step at equal batch (paper: +19%).
func Learner(ctx context.Context, w io.Writer, cfg LearnerConfig) error {
	if cfg.Quick {
		cfg.Steps = 5
	}
	if cfg.Steps < 1 {
		return fmt.Errorf("%w: --steps %d < 1", ErrConfig, cfg.Steps)
	}
	s, err := newLearnerBench()
	if err != nil {
		return fmt.Errorf("bench learner: %w", err)
	}
	on, err := learner.New(s.cfg, s.m.Clone(), nil)
	if err != nil {
		return err
	}
	ex, err := learner.New(s.cfg, s.m.Clone(), nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "learner step overhead: B = %d x K = %d, %d+%d tokens per trajectory, %d mini-batches, %d E7 candidates per replayed question, %d params, GOMAXPROCS %d\n",
		s.cfg.B, s.cfg.K, lbPrompt, lbResp, s.cfg.MiniBatches, lbCands, s.m.NumParams(), runtime.GOMAXPROCS(0))
	// One warm-up pair, not measured.
	if _, err := on.Step(learner.StepInput{Groups: s.fresh}); err != nil {
		return err
	}
	if _, err := s.exgrpoStep(ex); err != nil {
		return err
	}
	var tOn, tEx, tSel, cOn, cEx time.Duration
	for range cfg.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0, c0 := time.Now(), processCPU()
		if _, err := on.Step(learner.StepInput{Groups: s.fresh}); err != nil {
			return err
		}
		t1, c1 := time.Now(), processCPU()
		sel, err := s.exgrpoStep(ex)
		if err != nil {
			return err
		}
		tSel += sel
		tEx += time.Since(t1)
		cEx += processCPU() - c1
		tOn += t1.Sub(t0)
		cOn += c1 - c0
	}
	n := float64(cfg.Steps)
	fmt.Fprintf(w, "on-policy step %.3f s wall (%.3f CPU-s), ExGRPO step %.3f s wall (%.3f CPU-s), E7 scoring %.0f%% of the ExGRPO step\n",
		tOn.Seconds()/n, cOn.Seconds()/n, tEx.Seconds()/n, cEx.Seconds()/n, 100*tSel.Seconds()/tEx.Seconds())
	fmt.Fprintf(w, "ratio ExGRPO/on-policy step: %.2f wall, %.2f CPU (paper: 1.19)\n", tEx.Seconds()/tOn.Seconds(), cEx.Seconds()/cOn.Seconds())
	return nil
}
