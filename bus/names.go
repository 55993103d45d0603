package bus

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Kind names one stream of the topology.
type Kind string

// The streams of ARCHITECTURE.md.
const (
	Tasks      Kind = "TASKS"
	Rollouts   Kind = "ROLLOUTS"
	Scored     Kind = "SCORED"
	Experience Kind = "EXPERIENCE"
	Control    Kind = "CONTROL"
	Dead       Kind = "DEAD"
)

// Kinds lists every stream kind in creation order.
var Kinds = []Kind{Tasks, Rollouts, Scored, Experience, Control, Dead}

// VersionKey is the KV key holding the latest published policy version.
const VersionKey = "policy.version"

// Durable names of the shared consumers (TASKS: actors, ROLLOUTS: verifiers).
const (
	ActorsConsumer    = "actors"
	VerifiersConsumer = "verifiers"
)

// Names derives every subject, stream and bucket name of one run.
// The zero value is unusable; build it with NewNames.
type Names struct {
	Run string // run id as given
	up  string // run id upper-cased, for stream and bucket names
}

// NewNames validates a run id: 1-64 characters of [A-Za-z0-9_-].
func NewNames(run string) (Names, error) {
	if run == "" || len(run) > 64 {
		return Names{}, fmt.Errorf("%w: run id %q must have 1-64 characters", ErrConfig, run)
	}
	for _, c := range run {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return Names{}, fmt.Errorf("%w: run id %q may only use letters, digits, '_' and '-'", ErrConfig, run)
		}
	}
	return Names{Run: run, up: strings.ToUpper(run)}, nil
}

// Stream is the stream name of kind k: EXGRPO_<RUN>_<KIND>.
func (n Names) Stream(k Kind) string { return "EXGRPO_" + n.up + "_" + string(k) }

// Subject is the base subject of kind k: exgrpo.<run>.<kind lower-case>.
// For Experience use ExperienceSubject; for Dead, DeadSubject.
func (n Names) Subject(k Kind) string {
	if k == Experience {
		return "exgrpo." + n.Run + ".exp"
	}
	return "exgrpo." + n.Run + "." + strings.ToLower(string(k))
}

// ExperienceSubject is the subject holding one question's experience:
// exgrpo.<run>.exp.<QuestionToken(question)>.
func (n Names) ExperienceSubject(question string) string {
	return n.Subject(Experience) + "." + QuestionToken(question)
}

// LineageSubject carries the learner's lineage records (wire.Lineage) on
// CONTROL; the base subject carries the step reports. Readers of CONTROL tell
// the two apart by subject.
func (n Names) LineageSubject() string { return n.Subject(Control) + ".lineage" }

// DeadSubject is where dead letters from stream kind `from` go.
func (n Names) DeadSubject(from Kind) string {
	return n.Subject(Dead) + "." + strings.ToLower(string(from))
}

// SampleSubject is the request/reply subject of the replay service
// (wire.SampleRequest -> wire.SampleReply); not backed by a stream.
func (n Names) SampleSubject() string { return "exgrpo." + n.Run + ".replay.sample" }

// StateBucket is the KV bucket name.
func (n Names) StateBucket() string { return "EXGRPO_" + n.up + "_STATE" }

// WeightsBucket is the Object Store bucket name.
func (n Names) WeightsBucket() string { return "EXGRPO_" + n.up + "_WEIGHTS" }

// ReplayBucket is the Object Store bucket of the replay service's snapshots.
func (n Names) ReplayBucket() string { return "EXGRPO_" + n.up + "_REPLAY" }

// WeightsObject is the object name of one policy version.
func WeightsObject(version int64) string { return fmt.Sprintf("v%d", version) }

// QuestionToken maps a question id to one subject token: the id itself when
// it only uses [A-Za-z0-9_=:-], else "~" and the hex of its bytes (so ids with
// dots, spaces or wildcards cannot escape their subject). Injective.
func QuestionToken(q string) string {
	safe := q != ""
	for i := 0; i < len(q) && safe; i++ {
		c := q[i]
		safe = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '=' || c == ':'
	}
	if safe {
		return q
	}
	return "~" + hex.EncodeToString([]byte(q))
}
