package replay

import (
	"bytes"
	"fmt"
	"testing"
)

// ALGORITHM.md E4 with Config.RetireAfter = m and Config.ReplayLimit: each
// case folds a question's groups (k per step, r = replayed) and checks
// where it ends: retired, in which bucket (0 = none), with how many
// trajectories. A snapshot of the end state restores to the same bytes.
func TestRetireAfterAndReplayLimit(t *testing.T) {
	const K = 4
	type visit struct {
		k        int
		replayed bool
	}
	v := func(k int) visit { return visit{k: k} }
	r := func(k int) visit { return visit{k: k, replayed: true} }
	for _, tc := range []struct {
		name         string
		after, limit int
		visits       []visit
		retired      bool
		bucket       int
		trajs        int
	}{
		{"paper: one all-correct group retires", 1, 0, []visit{v(2), v(4)}, true, 0, 0},
		{"paper: all correct on the first visit", 1, 0, []visit{v(4)}, true, 0, 0},
		{"m=2: one all-correct group parks the question", 2, 0, []visit{v(2), v(4)}, false, 0, 2},
		{"m=2: parked, back in its bucket at the next k<K", 2, 0, []visit{v(2), v(4), v(3)}, false, 3, 5},
		{"m=2: two in a row retire", 2, 0, []visit{v(2), v(4), v(4)}, true, 0, 0},
		{"m=2: interrupted runs do not", 2, 0, []visit{v(4), v(1), v(4), v(2), v(4)}, false, 0, 3},
		{"m=2: k=0 interrupts the run", 2, 0, []visit{v(2), v(4), v(0), v(4)}, false, 0, 2},
		{"m=3: three in a row", 3, 0, []visit{v(2), v(4), v(4), v(4)}, true, 0, 0},
		{"never: all correct forever", RetireNever, 0, []visit{v(2), v(4), v(4), v(4), v(4)}, false, 0, 2},
		{"never: back in a bucket", RetireNever, 0, []visit{v(4), v(4), v(1)}, false, 1, 1},
		{"limit 2: one replay keeps the bucket", 1, 2, []visit{v(2), r(3)}, false, 3, 5},
		{"limit 2: two replays leave the bucket", 1, 2, []visit{v(2), r(3), r(2)}, false, 0, 7},
		{"limit 2: and fresh groups do not bring it back", 1, 2, []visit{v(2), r(3), r(2), v(1), v(3)}, false, 0, 11},
		{"limit 2: fresh groups do not count", 1, 2, []visit{v(2), v(3), v(1), r(2)}, false, 2, 8},
		{"limit 1 with retirement", 1, 1, []visit{v(2), r(4)}, true, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.K, cfg.Mu, cfg.RetireAfter, cfg.ReplayLimit = K, 2, tc.after, tc.limit
			p := mustNew(t, cfg)
			for i, vi := range tc.visits {
				var succ []Trajectory
				for j := range vi.k {
					succ = append(succ, traj(fmt.Sprintf("%d/%d", i, j), int32(i), int32(j)))
				}
				g := group("q", K, vi.k, succ...)
				g.Replayed = vi.replayed
				mustApply(t, p, Report{Step: int64(i), Mixed: true, Groups: []Group{g}})
			}
			info, _ := p.Question("q")
			if p.Retired("q") != tc.retired || info.Bucket != tc.bucket || info.Trajectories != tc.trajs {
				t.Fatalf("retired %v, bucket %d, %d trajectories; want %v, %d, %d (history %+v)",
					p.Retired("q"), info.Bucket, info.Trajectories, tc.retired, tc.bucket, tc.trajs, p.History("q"))
			}
			if n := p.Len(); (n == 1) != (tc.bucket > 0) {
				t.Fatalf("pool size %d with bucket %d", n, tc.bucket)
			}
			snap := p.Snapshot()
			back, err := Restore(cfg, snap)
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if !bytes.Equal(back.Snapshot(), snap) {
				t.Fatal("restored pool's snapshot differs")
			}
		})
	}
}

func TestConfigRetireValidate(t *testing.T) {
	for _, tc := range []struct {
		after, limit int
		ok           bool
	}{{1, 0, true}, {0, 0, true}, {5, 3, true}, {-1, 0, false}, {1, -1, false}, {MaxRetireAfter + 1, 0, false}} {
		c := DefaultConfig()
		c.RetireAfter, c.ReplayLimit = tc.after, tc.limit
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("RetireAfter %d ReplayLimit %d: %v, want ok %v", tc.after, tc.limit, err, tc.ok)
		}
	}
}
