package endurance

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// Ledger is CONTROL, SCORED and ROLLOUTS as an auditor reads them: the
// run's final lineage (wire.Lineage, folded by replay.Lineage) and every
// scored trajectory (a ROLLOUTS trajectory joined with its SCORED verdict by
// sequence) by id.
type Ledger struct {
	Reports []*wire.StepReport // the final lineage, in step order
	Epochs  []int64            // epochs of the epoch records, in stream order
	Rewinds int                // epoch records that took reports out of the ledger
	Scored  map[string]*wire.Scored
	// Conflicts are trajectory ids stored on ROLLOUTS with different
	// contents, or graded on SCORED with different rewards.
	Conflicts []string
	// Undecodable counts CONTROL, SCORED and ROLLOUTS messages that did not
	// decode.
	Undecodable int
}

// ReadLedger reads the whole of CONTROL, SCORED and ROLLOUTS of b's run.
func ReadLedger(ctx context.Context, b *bus.Bus) (*Ledger, error) {
	l := &Ledger{Scored: map[string]*wire.Scored{}}
	lin := replay.NewLineage()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	all := func(k bus.Kind) []string { return []string{b.Names.Subject(k), b.Names.Subject(k) + ".>"} }
	err := bus.ReadSubjects(rctx, b, bus.Control, all(bus.Control), func(m jetstream.Msg) {
		if m.Subject() == b.Names.LineageSubject() {
			var rec wire.Lineage
			if wire.Decode(m.Data(), &rec) != nil || rec.Validate() != nil {
				l.Undecodable++
				return
			}
			if rec.Kind == wire.LineageEpoch {
				l.Epochs = append(l.Epochs, rec.Epoch)
			}
			if d := lin.Record(&rec); d.Rewind {
				l.Rewinds++
				keep := l.Reports[:0]
				for _, r := range l.Reports {
					if r.Step <= d.To {
						keep = append(keep, r)
					}
				}
				l.Reports = keep
			}
			return
		}
		r := new(wire.StepReport)
		if wire.Decode(m.Data(), r) != nil {
			l.Undecodable++
			return
		}
		if lin.Report(r).Fold {
			l.Reports = append(l.Reports, r)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("endurance: read CONTROL: %w", err)
	}
	verdicts := map[uint64]*wire.Verdict{} // by ROLLOUTS sequence
	reward := map[string]float32{}
	err = bus.ReadSubjects(rctx, b, bus.Scored, all(bus.Scored), func(m jetstream.Msg) {
		vs, err := wire.DecodeVerdicts(m.Data())
		if err != nil {
			l.Undecodable++
			return
		}
		for i := range vs {
			v := &vs[i]
			if r, ok := reward[v.ID]; ok && r != v.Reward {
				l.Conflicts = append(l.Conflicts, v.ID)
			}
			reward[v.ID] = v.Reward
			verdicts[v.Seq] = v
		}
	})
	if err != nil {
		return nil, fmt.Errorf("endurance: read SCORED: %w", err)
	}
	raw := map[string][]byte{}
	err = bus.ReadSubjects(rctx, b, bus.Rollouts, all(bus.Rollouts), func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		t := new(wire.Trajectory)
		if wire.Decode(m.Data(), t) != nil {
			l.Undecodable++
			return
		}
		if prev, ok := raw[t.ID]; ok && !bytes.Equal(prev, m.Data()) {
			l.Conflicts = append(l.Conflicts, t.ID)
		}
		raw[t.ID] = bytes.Clone(m.Data())
		v, ok := verdicts[md.Sequence.Stream]
		if !ok || v.ID != t.ID {
			return // never graded (dead-lettered, or of a superseded epoch)
		}
		l.Scored[t.ID] = v.Join(*t)
	})
	if err != nil {
		return nil, fmt.Errorf("endurance: read ROLLOUTS: %w", err)
	}
	return l, nil
}

// Audit is what the ledger says about a run's promises.
type Audit struct {
	Steps            int      // steps in the final lineage
	StepGaps         []int64  // steps 0..last missing from the lineage
	StepRepeats      []int64  // steps in it more than once
	Named            int      // fresh trajectories the lineage names
	Missing          []string // named but not scored (no verdict, or not on ROLLOUTS: lost)
	NamedTwice       []string // named by two reports (counted twice)
	Conflicts        []string // one id, two contents
	PoolQuestions    int
	PoolTrajectories int
}

// Check audits the lineage and returns the independent fold of it (the
// pure pool with cfg), which the replay service's pool must equal.
func (l *Ledger) Check(cfg replay.Config) (Audit, *replay.Pool, error) {
	a := Audit{Steps: len(l.Reports), Conflicts: l.Conflicts}
	seen := map[int64]int{}
	named := map[string]int{}
	last := int64(-1)
	for _, r := range l.Reports {
		seen[r.Step]++
		last = max(last, r.Step)
		for _, g := range r.Groups {
			for _, id := range g.TrajectoryIDs {
				if g.Replayed && id == g.ReplayedID {
					continue // stored experience of an earlier step
				}
				named[id]++
				if _, ok := l.Scored[id]; !ok {
					a.Missing = append(a.Missing, id)
				}
			}
		}
	}
	for s := int64(0); s <= last; s++ {
		switch n := seen[s]; {
		case n == 0:
			a.StepGaps = append(a.StepGaps, s)
		case n > 1:
			a.StepRepeats = append(a.StepRepeats, s)
		}
	}
	for id, n := range named {
		if n > 1 {
			a.NamedTwice = append(a.NamedTwice, id)
		}
	}
	a.Named = len(named)
	pool, err := replay.New(cfg)
	if err != nil {
		return a, nil, err
	}
	for _, r := range l.Reports {
		rep, _ := rsvc.Assemble(r, func(id string, _ uint64) (*wire.Trajectory, bool) {
			sc, ok := l.Scored[id]
			if !ok {
				return nil, false
			}
			return &sc.Traj, true
		})
		if err := pool.Apply(rep); err != nil {
			return a, nil, fmt.Errorf("endurance: fold step %d: %w", r.Step, err)
		}
	}
	st := pool.Stats()
	a.PoolQuestions, a.PoolTrajectories = st.Questions, st.Trajectories
	return a, pool, nil
}

// OK says whether the audit found nothing lost and nothing twice.
func (a Audit) OK() bool {
	return len(a.StepGaps) == 0 && len(a.StepRepeats) == 0 && len(a.Missing) == 0 && len(a.NamedTwice) == 0 && len(a.Conflicts) == 0
}
