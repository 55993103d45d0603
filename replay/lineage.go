package replay

import (
	"fmt"
	"math"

	"github.com/exgrpo/exgrpo/wire"
)

// Lineage decides, message by message in CONTROL's stream order, which step
// reports make up the run's ledger across learner restarts (wire.Lineage
// has the rules). It is the one place those rules live: the replay service,
// inspection and the audits in the tests all fold through it, so they agree.
//
// It holds only the newest epoch and the last step of the ledger; the caller
// keeps the reports, the pool and whatever it derives from them, and undoes
// them when Epoch says to rewind. The zero value is ready: before any epoch
// record, reports of epoch 0 (runs written before epochs existed) are
// accepted in step order.
type Lineage struct {
	Epoch int64 `msgpack:"epoch"` // newest epoch seen; 0 before any epoch record
	Last  int64 `msgpack:"last"`  // last step in the ledger; -1 before any (see NewLineage)
	// Checkpoints of the current lineage, oldest first, at most two: where a
	// later epoch may start again (at step C+1). See wire.Lineage.
	Checkpoints []int64 `msgpack:"ckpt"`
}

// NewLineage is the lineage of a run with no reports yet.
func NewLineage() Lineage { return Lineage{Last: -1} }

// Decision is what the caller does with one CONTROL message.
type Decision struct {
	// Fold: the report is the next of the ledger; fold it.
	Fold bool
	// Rewind: an epoch record starts again at step To+1 while the ledger
	// already holds reports after To. The caller returns its state to what it
	// was right after step To (To = -1: the empty state) before anything else.
	Rewind bool
	To     int64
	// Why is set when the message is left out of the ledger (Fold and Rewind
	// false): a repeated report, one of a superseded epoch, a stale record.
	Why string
}

// Report decides about one step report.
func (l *Lineage) Report(r *wire.StepReport) Decision {
	switch {
	case r.Epoch != l.Epoch:
		return Decision{Why: fmt.Sprintf("report of step %d from learner epoch %d, superseded by epoch %d", r.Step, r.Epoch, l.Epoch)}
	case r.Step <= l.Last:
		return Decision{Why: fmt.Sprintf("step %d already in the ledger (repeated report)", r.Step)}
	}
	l.Last = r.Step
	return Decision{Fold: true}
}

// Record decides about one lineage record (rec must have passed Validate).
func (l *Lineage) Record(rec *wire.Lineage) Decision {
	switch rec.Kind {
	case wire.LineageEpoch:
		if rec.Epoch <= l.Epoch {
			return Decision{Why: fmt.Sprintf("epoch %d record after epoch %d", rec.Epoch, l.Epoch)}
		}
		l.Epoch = rec.Epoch
		keep := l.Checkpoints[:0]
		for _, c := range l.Checkpoints {
			if c < rec.Step {
				keep = append(keep, c)
			}
		}
		l.Checkpoints = keep
		if l.Last >= rec.Step {
			l.Last = rec.Step - 1
			return Decision{Rewind: true, To: rec.Step - 1}
		}
		return Decision{}
	case wire.LineageCheckpoint:
		if rec.Epoch != l.Epoch {
			return Decision{Why: fmt.Sprintf("checkpoint record of epoch %d in epoch %d", rec.Epoch, l.Epoch)}
		}
		if n := len(l.Checkpoints); n > 0 && l.Checkpoints[n-1] >= rec.Step {
			return Decision{Why: fmt.Sprintf("checkpoint of step %d after one of step %d", rec.Step, l.Checkpoints[n-1])}
		}
		l.Checkpoints = append(l.Checkpoints, rec.Step)
		if len(l.Checkpoints) > 2 {
			l.Checkpoints = l.Checkpoints[len(l.Checkpoints)-2:]
		}
		return Decision{}
	}
	return Decision{Why: fmt.Sprintf("lineage record of kind %q", rec.Kind)}
}

// Floor is the earliest checkpoint a later epoch may return to: effects of
// steps <= Floor that cannot be undone (purging a retired question's
// experience) are safe to carry out, later ones must wait. With no
// checkpoint recorded, a later epoch can only start from the beginning,
// which undoes everything anyway, so nothing has to wait (math.MaxInt64).
func (l *Lineage) Floor() int64 {
	if len(l.Checkpoints) == 0 {
		return math.MaxInt64
	}
	return l.Checkpoints[0]
}
