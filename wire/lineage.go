package wire

import (
	"fmt"
	"strconv"
	"strings"
)

// Lineage records on CONTROL (subject exgrpo.<run>.control.lineage) say which
// step reports make up the run's history when the learner has restarted.
//
// Every learner process is one epoch (incarnation), numbered from 1 and one
// above the last epoch on CONTROL. Before its first task it publishes an
// epoch record {Epoch: E, Step: S}: it trains steps S, S+1, ... from a
// checkpoint of step S-1 (S = 0: from the base model). The ledger of the run
// is then: the reports of earlier epochs for steps < S, and the reports of
// epoch E for steps >= S. Reports of older epochs for steps >= S, and any
// report of an epoch older than the newest record, are not part of it. Epochs
// appear in every id the learner makes (tasks, hence trajectories, and
// reports), so no id of a new epoch can collide with one of an old epoch:
// the server's duplicate window never swallows a resumed learner's message,
// and no trajectory id ever names two contents.
//
// After each checkpoint the learner publishes a checkpoint record {Epoch: E,
// Step: C}: a later epoch may start at C+1. The replay service keeps the pool
// as it was after such steps so that it can return to it (see
// replay/service), and defers what it cannot undo (purging a retired
// question's experience) until no resume can go back before it.
type Lineage struct {
	V      uint16 `msgpack:"v"`
	RunID  string `msgpack:"run"`
	Kind   string `msgpack:"kind"`  // LineageEpoch or LineageCheckpoint
	Epoch  int64  `msgpack:"epoch"` // >= 1
	Step   int64  `msgpack:"step"`  // epoch: first step it trains; checkpoint: last step the checkpoint holds
	UnixMs int64  `msgpack:"t"`
}

// Kinds of Lineage records.
const (
	LineageEpoch      = "epoch"
	LineageCheckpoint = "checkpoint"
)

// Validate checks a decoded record.
func (l *Lineage) Validate() error {
	switch {
	case l.Kind != LineageEpoch && l.Kind != LineageCheckpoint:
		return fmt.Errorf("%w: lineage record of kind %q", ErrDecode, l.Kind)
	case l.Epoch < 1:
		return fmt.Errorf("%w: lineage record with epoch %d (epochs start at 1)", ErrDecode, l.Epoch)
	case l.Step < 0:
		return fmt.Errorf("%w: %s record with step %d", ErrDecode, l.Kind, l.Step)
	}
	return nil
}

// MsgID is the record's publish message id.
func (l *Lineage) MsgID() string { return fmt.Sprintf("e%d/%s/%d", l.Epoch, l.Kind, l.Step) }

// ReportMsgID is the publish message id of epoch e's report of step n.
func ReportMsgID(epoch, step int64) string { return fmt.Sprintf("e%d/step/%d", epoch, step) }

// TaskID is the id of the task of question q in step `step` of learner epoch
// `epoch`: "e<epoch>/<step>/<q>". Trajectory ids append "/<index>".
func TaskID(epoch, step int64, q string) string { return fmt.Sprintf("e%d/%d/%s", epoch, step, q) }

// RetryTaskID names the task that asks again for rollout `index` of task
// `task` (attempt 1, 2, ...), after the first one was refused: one sample,
// a fresh seed, an id of its own.
func RetryTaskID(task string, index, attempt int) string {
	return fmt.Sprintf("%s~%d.%d", task, index, attempt)
}

// TaskEpoch returns the learner epoch in a task id made by TaskID (or
// RetryTaskID); ok is false for an id of another shape (a run written before
// epochs existed reads as epoch 0).
func TaskEpoch(task string) (epoch int64, ok bool) {
	epoch, _, ok = ParseTaskID(task)
	return epoch, ok
}

// ParseTaskID returns the epoch and step of a task id made by TaskID (or
// RetryTaskID); ok is false for an id of another shape.
func ParseTaskID(task string) (epoch, step int64, ok bool) {
	head, rest, found := strings.Cut(task, "/")
	if !found || len(head) < 2 || head[0] != 'e' {
		return 0, 0, false
	}
	e, err := strconv.ParseInt(head[1:], 10, 64)
	if err != nil || e < 1 {
		return 0, 0, false
	}
	st, _, found := strings.Cut(rest, "/")
	n, err := strconv.ParseInt(st, 10, 64)
	if !found || err != nil || n < 0 {
		return 0, 0, false
	}
	return e, n, true
}
