package service

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/replay"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// epochScript is makeScript with the ids a learner of epoch e makes
// (wire.TaskID) and reports of that epoch.
func epochScript(e int64, steps, questions int, seed uint64) script {
	sc := makeScript(steps, questions, seed)
	pre := fmt.Sprintf("e%d/", e)
	for t := range sc.reports {
		sc.reports[t].Epoch = e
		for g := range sc.reports[t].Groups {
			ids := sc.reports[t].Groups[g].TrajectoryIDs
			for i := range ids {
				ids[i] = pre + ids[i]
			}
		}
		for i := range sc.scored[t] {
			tr := &sc.scored[t][i].Traj
			tr.ID, tr.TaskID = pre+tr.ID, pre+tr.TaskID
		}
	}
	return sc
}

func (h *harness) lineage(kind string, epoch, step int64) {
	h.t.Helper()
	rec := wire.Lineage{Kind: kind, Epoch: epoch, Step: step}
	h.publish(h.b.Names.LineageSubject(), rec.MsgID(), &rec)
}

func (h *harness) publishEpochStep(sc script, t int) {
	h.publishScored(sc, t)
	h.publish(h.b.Names.Subject(bus.Control), wire.ReportMsgID(sc.reports[t].Epoch, int64(t)), &sc.reports[t])
}

// TestRewindToCheckpoint: a learner of epoch 1 reports steps 0-6 with a
// checkpoint after step 2, dies, and epoch 2 resumes at step 3 with other
// rollouts. The pool must be the fold of epoch 1's steps 0-2 and epoch 2's
// steps 3-8 (the ledger of wire.Lineage), EXPERIENCE must hold every stored
// trajectory and nothing of the undone steps 3-6 of epoch 1, and a service
// restarted afterwards must come back to the same pool. Also run with the
// service restarted between the crash and the resume.
//
// scoredFirst publishes the new epoch's rollouts before its epoch record, as
// happens when the new learner's rollouts are stored before the replay
// service reads its record: they are fetched when their reports come.
func TestRewindToCheckpoint(t *testing.T) {
	for _, tc := range []struct{ restartMid, scoredFirst bool }{{false, false}, {true, false}, {false, true}} {
		restartMid, scoredFirst := tc.restartMid, tc.scoredFirst
		t.Run(fmt.Sprintf("restart=%v,scoredFirst=%v", restartMid, scoredFirst), func(t *testing.T) {
			h := newHarness(t)
			a, b := epochScript(1, 7, 12, 11), epochScript(2, 9, 12, 12)
			r := start(t, h)
			h.lineage(wire.LineageEpoch, 1, 0)
			for s := 0; s < 7; s++ {
				h.publishEpochStep(a, s)
				if s == 2 {
					h.lineage(wire.LineageCheckpoint, 1, 2)
				}
			}
			r.waitStep(t, 6)
			if restartMid {
				r.stop(t)
				r = start(t, h)
			}
			if scoredFirst {
				for s := 3; s < 9; s++ {
					h.publishScored(b, s)
				}
				// Let the service read them before the record.
				time.Sleep(300 * time.Millisecond)
			}
			h.lineage(wire.LineageEpoch, 2, 3)
			for s := 3; s < 9; s++ {
				h.publishEpochStep(b, s)
			}
			h.lineage(wire.LineageCheckpoint, 2, 8)
			got := r.waitStep(t, 8)

			want := foldLedger(t, testConfig().Pool, []script{a, b}, []int{3, 9})
			if !bytes.Equal(got, want.Snapshot()) {
				t.Fatalf("pool after the rewind differs from the fold of the ledger: %+v vs %+v", statsOf(t, got), want.Stats())
			}
			seen := readExperience(t, h)
			stored := 0
			for q := range questionsOf(a, b) {
				for _, id := range want.StoredIDs(q) {
					stored++
					if !seen[id] {
						t.Errorf("stored trajectory %s missing from EXPERIENCE", id)
					}
				}
			}
			if stored == 0 {
				t.Fatal("script stores nothing")
			}
			for id := range seen {
				var step int
				if _, err := fmt.Sscanf(strings.TrimPrefix(id, "e1/"), "%d/", &step); strings.HasPrefix(id, "e1/") && err == nil && step >= 3 {
					t.Errorf("EXPERIENCE still holds %s, stored by a step the rewind undid", id)
				}
			}
			// A restart comes back to the same state.
			r.stop(t)
			r = start(t, h)
			if again := r.waitStep(t, 8); !bytes.Equal(again, got) {
				t.Fatal("restarted service's pool differs")
			}
			var rewinds float64
			if rewinds = counterValue(t, r.svc.met.Rewinds); rewinds != 0 {
				t.Fatalf("restarted service rewound again (%v)", rewinds)
			}
		})
	}
}

// TestRewindWithoutCheckpointStartsOver: an epoch that starts at step 0
// again (no checkpoint to resume from) empties the pool and EXPERIENCE.
func TestRewindWithoutCheckpointStartsOver(t *testing.T) {
	h := newHarness(t)
	a, b := epochScript(1, 5, 10, 21), epochScript(2, 3, 10, 22)
	r := start(t, h)
	h.lineage(wire.LineageEpoch, 1, 0)
	for s := range 5 {
		h.publishEpochStep(a, s)
	}
	r.waitStep(t, 4)
	h.lineage(wire.LineageEpoch, 2, 0)
	for s := range 3 {
		h.publishEpochStep(b, s)
	}
	// Epoch 1 already folded step 4, so waiting for step 2 would return at
	// once unless the rewind has happened first.
	for deadline := time.Now().Add(30 * time.Second); counterValue(t, r.svc.met.Rewinds) < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the epoch starting at step 0 did not rewind the pool")
		}
	}
	got := r.waitStep(t, 2)
	want := foldLedger(t, testConfig().Pool, []script{b}, []int{3})
	if !bytes.Equal(got, want.Snapshot()) {
		t.Fatalf("pool differs from the fold of epoch 2 alone: %+v vs %+v", statsOf(t, got), want.Stats())
	}
	for id := range readExperience(t, h) {
		if strings.HasPrefix(id, "e1/") {
			t.Errorf("EXPERIENCE still holds %s of the abandoned epoch", id)
		}
	}
}

// TestResumeWithoutCheckpointRecordFails: a resume at a step the service
// kept no pool for is an error that says so, not a silent wrong pool.
func TestResumeWithoutCheckpointRecordFails(t *testing.T) {
	h := newHarness(t)
	a := epochScript(1, 4, 10, 31)
	svc, err := New(testConfig(), h.b, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(t.Context()) }()
	h.lineage(wire.LineageEpoch, 1, 0)
	for s := range 4 {
		h.publishEpochStep(a, s)
	}
	h.lineage(wire.LineageEpoch, 2, 2)
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "cannot return the pool") {
			t.Fatalf("Run returned %v; want ErrNoRewind", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("service did not report the impossible rewind")
	}
}

// foldLedger folds, with the pure pool, script i's steps below upto[i] that
// the previous scripts did not reach: the ledger of consecutive epochs.
func foldLedger(t *testing.T, cfg replay.Config, scripts []script, upto []int) *replay.Pool {
	t.Helper()
	var merged script
	for i, sc := range scripts {
		for s := len(merged.reports); s < upto[i]; s++ {
			merged.reports = append(merged.reports, sc.reports[s])
			merged.scored = append(merged.scored, sc.scored[s])
		}
	}
	return reference(t, cfg, merged, len(merged.reports))
}

func questionsOf(scripts ...script) map[string]bool {
	qs := map[string]bool{}
	for _, sc := range scripts {
		for _, r := range sc.reports {
			for _, g := range r.Groups {
				qs[g.QuestionID] = true
			}
		}
	}
	return qs
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
