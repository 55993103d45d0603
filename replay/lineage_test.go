package replay

import (
	"math"
	"slices"
	"testing"

	"github.com/exgrpo/exgrpo/wire"
)

// TestLineage scripts CONTROL sequences through the lineage rules
// (wire.Lineage) and checks which reports make the ledger.
func TestLineage(t *testing.T) {
	rep := func(e, s int64) *wire.StepReport { return &wire.StepReport{Epoch: e, Step: s} }
	ep := func(e, s int64) *wire.Lineage { return &wire.Lineage{Kind: wire.LineageEpoch, Epoch: e, Step: s} }
	ck := func(e, s int64) *wire.Lineage { return &wire.Lineage{Kind: wire.LineageCheckpoint, Epoch: e, Step: s} }
	type msg struct {
		rep *wire.StepReport
		rec *wire.Lineage
	}
	tests := []struct {
		name    string
		msgs    []msg
		ledger  []int64 // epoch*100 + step of the reports left in the ledger, in step order
		rewinds []int64
		floor   int64
	}{
		{name: "one epoch", msgs: []msg{{rec: ep(1, 0)}, {rep: rep(1, 0)}, {rep: rep(1, 1)}, {rep: rep(1, 1)}},
			ledger: []int64{100, 101}, floor: math.MaxInt64},
		{name: "runs before epochs", msgs: []msg{{rep: rep(0, 0)}, {rep: rep(0, 1)}}, ledger: []int64{0, 1}, floor: math.MaxInt64},
		{name: "resume after the last report", msgs: []msg{{rec: ep(1, 0)}, {rep: rep(1, 0)}, {rep: rep(1, 1)}, {rec: ck(1, 1)},
			{rec: ep(2, 2)}, {rep: rep(2, 2)}}, ledger: []int64{100, 101, 202}, floor: 1},
		{name: "resume from an older checkpoint rewinds", msgs: []msg{{rec: ep(1, 0)}, {rep: rep(1, 0)}, {rec: ck(1, 0)}, {rep: rep(1, 1)},
			{rep: rep(1, 2)}, {rec: ep(2, 1)}, {rep: rep(2, 1)}, {rep: rep(2, 2)}},
			ledger: []int64{100, 201, 202}, rewinds: []int64{0}, floor: 0},
		{name: "a zombie epoch's reports are left out", msgs: []msg{{rec: ep(1, 0)}, {rep: rep(1, 0)}, {rec: ep(2, 0)},
			{rep: rep(1, 1)}, {rep: rep(2, 0)}, {rep: rep(2, 1)}}, ledger: []int64{200, 201}, rewinds: []int64{-1}, floor: math.MaxInt64},
		{name: "a stale epoch record is ignored", msgs: []msg{{rec: ep(2, 0)}, {rep: rep(2, 0)}, {rec: ep(1, 0)}, {rep: rep(2, 1)}},
			ledger: []int64{200, 201}, floor: math.MaxInt64},
		{name: "two checkpoints set the floor", msgs: []msg{{rec: ep(1, 0)}, {rep: rep(1, 0)}, {rec: ck(1, 0)}, {rep: rep(1, 1)},
			{rec: ck(1, 1)}, {rep: rep(1, 2)}, {rec: ck(1, 2)}, {rec: ck(1, 2)}}, ledger: []int64{100, 101, 102}, floor: 1},
		{name: "a rewind drops later checkpoints", msgs: []msg{{rec: ep(1, 0)}, {rep: rep(1, 0)}, {rec: ck(1, 0)}, {rep: rep(1, 1)},
			{rec: ck(1, 1)}, {rep: rep(1, 2)}, {rec: ep(2, 1)}}, ledger: []int64{100}, rewinds: []int64{0}, floor: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLineage()
			var ledger []*wire.StepReport
			var rewinds []int64
			for _, m := range tc.msgs {
				if m.rec != nil {
					if err := m.rec.Validate(); err != nil {
						t.Fatal(err)
					}
					if d := l.Record(m.rec); d.Rewind {
						rewinds = append(rewinds, d.To)
						ledger = slices.DeleteFunc(ledger, func(r *wire.StepReport) bool { return r.Step > d.To })
					}
					continue
				}
				if d := l.Report(m.rep); d.Fold {
					ledger = append(ledger, m.rep)
				} else if d.Why == "" {
					t.Fatalf("report %+v neither folded nor explained", m.rep)
				}
			}
			var got []int64
			for _, r := range ledger {
				got = append(got, r.Epoch*100+r.Step)
			}
			if !slices.Equal(got, tc.ledger) || !slices.Equal(rewinds, tc.rewinds) || l.Floor() != tc.floor {
				t.Errorf("ledger %v rewinds %v floor %d; want %v, %v, %d", got, rewinds, l.Floor(), tc.ledger, tc.rewinds, tc.floor)
			}
		})
	}
}

func TestTaskEpoch(t *testing.T) {
	for _, tc := range []struct {
		id    string
		epoch int64
		ok    bool
	}{
		{wire.TaskID(3, 17, "q/with/slashes"), 3, true},
		{wire.RetryTaskID(wire.TaskID(12, 0, "q1"), 4, 2), 12, true},
		{"17/q1", 0, false}, {"e0/1/q", 0, false}, {"ex/1/q", 0, false}, {"", 0, false},
	} {
		if e, ok := wire.TaskEpoch(tc.id); e != tc.epoch || ok != tc.ok {
			t.Errorf("TaskEpoch(%q) = %d, %v; want %d, %v", tc.id, e, ok, tc.epoch, tc.ok)
		}
	}
}
