package replay

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

var (
	bigPoolOnce sync.Once
	bigPools    map[Selection]*Pool
)

// bigPool returns a pool of 10^6 questions spread evenly over buckets 1..7,
// one 1-token trajectory each, built once per process and shared by both
// selections through a snapshot (which also checks Restore at that size).
func bigPool(b *testing.B, sel Selection) *Pool {
	bigPoolOnce.Do(func() {
		const nq, perReport = 1_000_000, 10_000
		cfg := DefaultConfig()
		p := mustNew(b, cfg)
		tok, lp := []int32{1}, []float32{-0.5}
		for s := range nq / perReport {
			r := Report{Step: int64(s + 1), Mixed: true, Groups: make([]Group, perReport)}
			for i := range r.Groups {
				qi := s*perReport + i
				k := 1 + qi%7
				r.Groups[i] = Group{QuestionID: fmt.Sprintf("q%07d", qi), Size: 8, Correct: k, Successes: []Trajectory{
					{ID: fmt.Sprintf("%d/%d", s, i), Tokens: tok, LogProbs: lp},
				}}
			}
			mustApply(b, p, r)
		}
		snap := p.Snapshot()
		cfg.Selection = SelectUniform
		u, err := Restore(cfg, snap)
		if err != nil {
			b.Fatal(err)
		}
		bigPools = map[Selection]*Pool{SelectGaussian: p, SelectUniform: u}
	})
	return bigPools[sel]
}

// BenchmarkSample64From1M: ALGORITHM.md E6, n = 64 from a pool of 10^6
// questions (goal <= 100 us per sample).
func BenchmarkSample64From1M(b *testing.B) {
	for _, sel := range []Selection{SelectGaussian, SelectUniform} {
		b.Run(sel.String(), func(b *testing.B) {
			p := bigPool(b, sel)
			if p.Len() != 1_000_000 {
				b.Fatalf("pool of %d", p.Len())
			}
			rng := rngFor(1)
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			for b.Loop() {
				if len(p.Sample(64, rng)) != 64 {
					b.Fatal("short sample")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(b.N), "us/sample")
			b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-us/sample")
		})
	}
}

// foldPayload returns 128 groups' worth of distinct 1,024-token successes:
// payload[g][j] for group g, success j < 7.
func foldPayload() [][]Trajectory {
	const groups, perGroup, T = 128, 7, 1024
	out := make([][]Trajectory, groups)
	for g := range out {
		out[g] = make([]Trajectory, perGroup)
		for j := range out[g] {
			toks := make([]int32, T)
			lps := make([]float32, T)
			for i := range toks {
				toks[i] = int32((g*31 + j*7 + i*13) % 500)
				lps[i] = -float32(i%17) / 17
			}
			toks[0] = int32(j) // distinct within a group
			out[g][j] = Trajectory{PromptTokens: []int32{1, 2, 3, int32(g)}, Tokens: toks, LogProbs: lps}
		}
	}
	return out
}

// BenchmarkFoldReport: ALGORITHM.md E2-E4, one report of 128 groups of K = 8
// rollouts of 1,024 tokens, into a pool that already holds earlier reports.
// Worst case for storage: every group is 7/8, so 896 trajectories are stored
// (dedup hashes and compares all 917,504 tokens); "mixed" draws k = 0..8 per
// group. Payload arrays are built once and handed over (the pool takes
// ownership, nothing is copied); ids are built outside the timer. Goal <= 5 ms.
func BenchmarkFoldReport(b *testing.B) {
	payload := foldPayload()
	for _, mode := range []string{"all7of8", "mixed"} {
		b.Run(mode, func(b *testing.B) {
			p := mustNew(b, DefaultConfig())
			step := int64(0)
			next := func() Report {
				step++
				r := Report{Step: step, Mixed: true, Groups: make([]Group, len(payload))}
				for g := range payload {
					k := 7
					if mode == "mixed" {
						k = int((step*7 + int64(g)*5) % 9)
					}
					succ := make([]Trajectory, min(k, 7))
					for j := range succ {
						succ[j] = payload[g][j]
						succ[j].ID = fmt.Sprintf("%d/%d/%d", step, g, j)
						succ[j].Step = step
					}
					// Questions recur every 4 steps, so buckets move and dedup finds hits.
					r.Groups[g] = Group{QuestionID: fmt.Sprintf("q%d-%d", step%4+step/64*4, g), Size: 8, Correct: k, Successes: succ}
				}
				return r
			}
			tokens := 0
			var cpu time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				r := next()
				for _, g := range r.Groups {
					for _, s := range g.Successes {
						tokens += len(s.Tokens)
					}
				}
				cpu0 := processCPU()
				b.StartTimer()
				if err := p.Apply(r); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				cpu += processCPU() - cpu0
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e6/float64(b.N), "ms/report")
			b.ReportMetric(float64(cpu.Nanoseconds())/1e6/float64(b.N), "cpu-ms/report")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(tokens), "ns/token")
		})
	}
}

// BenchmarkMemoryPerTrajectory: ALGORITHM.md E1, heap bytes the pool holds
// per stored trajectory of 1,024 response tokens, relative to its payload of
// 1,024 token ids + 1,024 log-probs = 8,192 bytes (goal <= 1.1x). Measured
// with runtime.MemStats (HeapAlloc after GC) around folding 8 reports of 128
// groups of 4/8 with 4 successes each (4,096 trajectories, 1,024 questions,
// 64-token prompts, ids like "3/q00042/1"), payload allocated as a decoder
// would, exact-size. Everything the pool retains counts: payload, prompt
// (one per question), ids, structs, history, index, buckets.
func BenchmarkMemoryPerTrajectory(b *testing.B) {
	const steps, groups, per, T, P = 8, 128, 4, 1024, 64
	var perTraj float64
	for b.Loop() {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		p := mustNew(b, DefaultConfig())
		for s := range steps {
			r := Report{Step: int64(s), Mixed: true, Groups: make([]Group, groups)}
			for g := range r.Groups {
				qi := s*groups + g
				succ := make([]Trajectory, per)
				for j := range succ {
					prompt := make([]int32, P)
					toks := make([]int32, T)
					lps := make([]float32, T)
					for i := range toks {
						toks[i] = int32(i ^ j ^ qi)
						lps[i] = -0.25
					}
					succ[j] = Trajectory{ID: fmt.Sprintf("%d/q%05d/%d", s, qi, j), PolicyVersion: int64(s), Step: int64(s),
						PromptTokens: prompt, Tokens: toks, LogProbs: lps}
				}
				r.Groups[g] = Group{QuestionID: fmt.Sprintf("q%05d", qi), Size: 8, Correct: per, Successes: succ}
			}
			mustApply(b, p, r)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		n := p.Stats().Trajectories
		if n != steps*groups*per {
			b.Fatalf("stored %d", n)
		}
		perTraj = float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(n)
		runtime.KeepAlive(p)
	}
	b.ReportMetric(perTraj, "B/traj")
	b.ReportMetric(perTraj/(8*T), "x_payload")
}

// BenchmarkSnapshot and BenchmarkRestore: one pool holding 8 folded reports
// of 128 groups at 7/8 (7,168 trajectories of 1,024 tokens); bytes/s of snapshot.
func benchSnapshotPool(b *testing.B) *Pool {
	payload := foldPayload()
	p := mustNew(b, DefaultConfig())
	for s := range 8 {
		r := Report{Step: int64(s), Mixed: true, Groups: make([]Group, len(payload))}
		for g := range payload {
			r.Groups[g] = Group{QuestionID: fmt.Sprintf("q%d-%d", s, g), Size: 8, Correct: 7, Successes: payload[g]}
		}
		mustApply(b, p, r)
	}
	return p
}

func BenchmarkSnapshot(b *testing.B) {
	p := benchSnapshotPool(b)
	buf := p.Snapshot()
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		buf = p.AppendSnapshot(buf[:0])
	}
	b.ReportMetric(float64(len(buf))/float64(p.Stats().Tokens), "B/token")
}

func BenchmarkRestore(b *testing.B) {
	p := benchSnapshotPool(b)
	buf := p.Snapshot()
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Restore(p.Config(), buf); err != nil {
			b.Fatal(err)
		}
	}
}
