package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/exgrpo/exgrpo/replay"
)

// measure runs op until at least d has passed (and at least once) and
// returns wall and process-CPU time per call.
func measure(ctx context.Context, d time.Duration, op func() error) (wall, cpu time.Duration, n int, err error) {
	t0, c0 := time.Now(), processCPU()
	for n == 0 || time.Since(t0) < d {
		if err := ctx.Err(); err != nil {
			return 0, 0, n, err
		}
		if err := op(); err != nil {
			return 0, 0, n, err
		}
		n++
	}
	return time.Since(t0) / time.Duration(n), (processCPU() - c0) / time.Duration(n), n, nil
}

// replayPool folds nq questions spread evenly over buckets 1..7, one 1-token
// trajectory each (replay/bench_test.go's set-up for the sample benchmark).
func replayPool(nq int, sel replay.Selection) (*replay.Pool, error) {
	cfg := replay.DefaultConfig()
	cfg.Selection = sel
	p, err := replay.New(cfg)
	if err != nil {
		return nil, err
	}
	const perReport = 10_000
	tok, lp := []int32{1}, []float32{-0.5}
	for s := 0; s*perReport < nq; s++ {
		r := replay.Report{Step: int64(s + 1), Mixed: true}
		for i := 0; i < perReport && s*perReport+i < nq; i++ {
			qi := s*perReport + i
			r.Groups = append(r.Groups, replay.Group{QuestionID: fmt.Sprintf("q%07d", qi), Size: 8, Correct: 1 + qi%7,
				Successes: []replay.Trajectory{{ID: fmt.Sprintf("%d/%d", s, i), Tokens: tok, LogProbs: lp}}})
		}
		if err := p.Apply(r); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// ReplayConfig is `exgrpo bench replay`.
type ReplayConfig struct {
	Questions int     // pool size for the sample benchmark
	Seconds   float64 // wall seconds per measurement
	Quick     bool    // short run (pool of 10^5, 0.3 s per measurement)
}

// DefaultReplay is the configuration BENCHMARKS.md reports.
func DefaultReplay() ReplayConfig { return ReplayConfig{Questions: 1_000_000, Seconds: 1} }

// Replay measures the experience pool (E2-E6): sampling 64 questions
// (goal 100 us), folding a 128x8x1024 report (goal 5 ms), snapshot MB/s.
func Replay(ctx context.Context, w io.Writer, cfg ReplayConfig) error {
	if cfg.Quick {
		cfg.Questions, cfg.Seconds = 100_000, 0.3
	}
	d := time.Duration(cfg.Seconds * float64(time.Second))
	fmt.Fprintf(w, "replay pool benchmarks (E2-E6): pool of %d questions for sampling; fold of 128 groups x K = 8, 7 successes of 1,024 tokens each\n", cfg.Questions)
	for _, sel := range []replay.Selection{replay.SelectGaussian, replay.SelectUniform} {
		p, err := replayPool(cfg.Questions, sel)
		if err != nil {
			return fmt.Errorf("bench replay: %w", err)
		}
		rng := rand.New(rand.NewPCG(1, 1))
		wall, cpu, _, err := measure(ctx, d, func() error {
			if len(p.Sample(64, rng)) != 64 {
				return fmt.Errorf("bench replay: short sample")
			}
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "sample 64 of %d (%s): %.1f us wall, %.1f us CPU; CPU/goal(100 us) %.2f\n", p.Len(), sel, float64(wall.Nanoseconds())/1e3,
			float64(cpu.Nanoseconds())/1e3, float64(cpu.Nanoseconds())/1e5)
	}

	// Fold: 128 groups of 7 distinct 1,024-token successes, questions recurring
	// every 4 steps so that buckets move and dedup finds hits.
	const groups, perGroup, T = 128, 7, 1024
	payload := make([][]replay.Trajectory, groups)
	for g := range payload {
		payload[g] = make([]replay.Trajectory, perGroup)
		for j := range payload[g] {
			toks, lps := make([]int32, T), make([]float32, T)
			for i := range toks {
				toks[i] = int32((g*31 + j*7 + i*13) % 500)
				lps[i] = -float32(i%17) / 17
			}
			toks[0] = int32(j)
			payload[g][j] = replay.Trajectory{PromptTokens: []int32{1, 2, 3, int32(g)}, Tokens: toks, LogProbs: lps}
		}
	}
	p, err := replay.New(replay.DefaultConfig())
	if err != nil {
		return err
	}
	step := int64(0)
	var foldWall, foldCPU time.Duration
	folds := 0
	for start := time.Now(); folds == 0 || time.Since(start) < d; folds++ {
		step++
		r := replay.Report{Step: step, Mixed: true, Groups: make([]replay.Group, groups)}
		for g := range payload {
			succ := make([]replay.Trajectory, perGroup)
			for j := range succ {
				succ[j] = payload[g][j]
				succ[j].ID = fmt.Sprintf("%d/%d/%d", step, g, j)
				succ[j].Step = step
			}
			r.Groups[g] = replay.Group{QuestionID: fmt.Sprintf("q%d-%d", step%4+step/64*4, g), Size: 8, Correct: 7, Successes: succ}
		}
		t0, c0 := time.Now(), processCPU()
		if err := p.Apply(r); err != nil {
			return fmt.Errorf("bench replay: fold: %w", err)
		}
		foldWall += time.Since(t0)
		foldCPU += processCPU() - c0
	}
	fw, fc := foldWall/time.Duration(folds), foldCPU/time.Duration(folds)
	fmt.Fprintf(w, "fold 128x8x1024 (all 7/8): %.2f ms wall, %.2f ms CPU; CPU/goal(5 ms) %.2f\n", float64(fw.Microseconds())/1e3, float64(fc.Microseconds())/1e3, fc.Seconds()/0.005)

	snap := p.Snapshot()
	wall, _, _, err := measure(ctx, d, func() error { _ = p.Snapshot(); return nil })
	if err != nil {
		return err
	}
	rwall, _, _, err := measure(ctx, d, func() error { _, err := replay.Restore(replay.DefaultConfig(), snap); return err })
	if err != nil {
		return err
	}
	st := p.Stats()
	fmt.Fprintf(w, "snapshot of %d trajectories (%.1f MB): write %.0f MB/s, restore %.0f MB/s\n", st.Trajectories, float64(len(snap))/1e6,
		float64(len(snap))/1e6/wall.Seconds(), float64(len(snap))/1e6/rwall.Seconds())
	return nil
}
