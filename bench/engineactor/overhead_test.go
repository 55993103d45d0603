package engineactor

import (
	"context"
	"testing"
)

// BenchmarkActorOverhead is the figure: go test ./bench/engineactor
// -run XXX -bench ActorOverhead -benchtime 1x (about a minute on two
// cores; the engine phase dominates).
func BenchmarkActorOverhead(b *testing.B) {
	for _, k := range []int{0, 5} {
		b.Run(map[int]string{0: "no-top-k", 5: "top-5"}[k], func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.TopLogProbs = k
			for range b.N {
				r, err := Measure(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				b.Log(r)
				b.ReportMetric(float64(r.ActorPerTraj.Microseconds()), "actor-µs/traj")
				b.ReportMetric(r.EnginePerTraj.Seconds(), "engine-s/traj")
				b.ReportMetric(100*r.OverheadOfRollout, "overhead-%")
			}
		})
	}
}

// TestMeasureSmall runs the harness at a small size so that it keeps
// working: every figure is positive and the actor's share is below 100%.
func TestMeasureSmall(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Requests, cfg.InFlight, cfg.Tokens, cfg.Workers = 4, 4, 32, 2
	r, err := Measure(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.EnginePerTraj <= 0 || r.ActorPerTraj <= 0 || r.TrajectoryBytes <= 0 || r.OverheadOfRollout >= 1 {
		t.Fatalf("figures %+v", r)
	}
	t.Log(r)
}
