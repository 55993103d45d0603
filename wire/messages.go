package wire

import "fmt"

// Task asks an actor for Samples completions of one question (TASKS stream,
// work queue). The learner writes it; TaskID is also the publish message id,
// so a retried publish is deduplicated by the server.
type Task struct {
	V          uint16  `msgpack:"v"`
	RunID      string  `msgpack:"run"`
	TaskID     string  `msgpack:"id"`   // TaskID(epoch, step, question), or RetryTaskID of it; unique within a run
	Step       int64   `msgpack:"step"` // learner step the rollouts are for
	QuestionID string  `msgpack:"q"`
	Prompt     string  `msgpack:"prompt"` // question text as given to the policy
	Answer     string  `msgpack:"gold"`   // reference answer, passed through to the verifier
	Kind       string  `msgpack:"kind"`   // verifier kind (see verifier.Lookup)
	Samples    int     `msgpack:"n"`      // K fresh, or K-1 for a replayed question (ALGORITHM.md E8)
	MinVersion int64   `msgpack:"minv"`   // actors must sample with at least this policy version
	MaxNew     int     `msgpack:"maxnew"` // response token cap
	Temp       float32 `msgpack:"temp"`   // sampling temperature T (log-probs and entropies are recorded under softmax(z/T), see policy)
	Seed       int64   `msgpack:"seed"`   // base seed; sample i uses Seed+i, so a redelivered task samples the same
	// PromptTokens is the prompt as the trainer's tokenizer and chat
	// template make it (BOS and system prompt included), so that an engine
	// actor generates from exactly the tokens the learner trains on and
	// never tokenizes (GPU.md "Engine actors"). Empty from a learner that
	// does not fill it; the built-in actor encodes Prompt itself.
	PromptTokens Int32s `msgpack:"pt,omitempty"`
}

// Trajectory is one sampled completion (ROLLOUTS stream: the one store of a
// trajectory, read by the verifiers, the learner and the replay service). ID
// is "<TaskID>/<index>" and is the publish message id.
type Trajectory struct {
	V             uint16   `msgpack:"v"`
	RunID         string   `msgpack:"run"`
	ID            string   `msgpack:"id"`
	TaskID        string   `msgpack:"task"`
	Step          int64    `msgpack:"step"`
	QuestionID    string   `msgpack:"q"`
	Index         int      `msgpack:"i"`     // 0..Samples-1 within the task
	PolicyVersion int64    `msgpack:"ver"`   // version of the behaviour policy
	ActorID       string   `msgpack:"actor"` // who sampled it
	PromptTokens  Int32s   `msgpack:"pt"`
	Tokens        Int32s   `msgpack:"tok"`    // response token ids, EOS included when emitted
	LogProbs      Float32s `msgpack:"lp"`     // per response token, behaviour log-prob under softmax(z/T) at the task's T
	Entropies     Float32s `msgpack:"ent"`    // per response token, entropy of the full softmax(z/T) distribution
	Text          string   `msgpack:"text"`   // decoded response
	Finish        string   `msgpack:"finish"` // "eos" or "length"
	Answer        string   `msgpack:"gold"`   // copied from the task
	Kind          string   `msgpack:"kind"`   // copied from the task
	SampleMicros  int64    `msgpack:"us"`     // wall time spent sampling this task / Samples
	CreatedUnixMs int64    `msgpack:"t"`
	// EntropyKind says what Entropies hold: "" (EntropyExact) the entropy of
	// the full next-token distribution (the built-in model); from an
	// inference engine, which returns no entropies, one of the estimates
	// EntropySample, EntropyTopKLower or EntropyTopKUpper (GPU.md "Engine
	// actors"). Omitted when exact, so built-in trajectories encode as before.
	EntropyKind string `msgpack:"entk,omitempty"`
}

// Entropy kinds of Trajectory.EntropyKind.
const (
	EntropyExact = "" // entropy of the full distribution
	// EntropySample is -log p of the sampled token: an unbiased one-sample
	// estimate of the entropy.
	EntropySample = "sample"
	// EntropyTopKLower is -sum p_i log p_i over the top-k tokens plus
	// r * (-log p_min) for the rest mass r: a lower bound.
	EntropyTopKLower = "topk-lower"
	// EntropyTopKUpper is -sum p_i log p_i over the top-k tokens plus
	// r * log((V-k)/r): an upper bound.
	EntropyTopKUpper = "topk-upper"
)

// Verdict is a verifier's grading of one trajectory (SCORED stream). The
// trajectory itself stays where the actor stored it, on ROLLOUTS: Seq is its
// ROLLOUTS stream sequence, so a reader joins the two by sequence (or fetches
// the trajectory by it). The verifier writes it with the trajectory's ID as
// message id.
type Verdict struct {
	V            uint16  `msgpack:"v"`
	RunID        string  `msgpack:"run"`
	ID           string  `msgpack:"id"`   // trajectory id
	TaskID       string  `msgpack:"task"` // the trajectory's task (its epoch and step, see ParseTaskID)
	Seq          uint64  `msgpack:"seq"`  // ROLLOUTS stream sequence of the message graded
	Size         int     `msgpack:"size"` // bytes of that message
	Reward       float32 `msgpack:"r"`    // 0 or 1
	Reason       string  `msgpack:"why"`  // "correct", "wrong_value", "timeout", ...
	Extracted    string  `msgpack:"ans"`  // the answer the verifier extracted, if any
	VerifyMicros int64   `msgpack:"vus"`
}

// Verdicts is what a verifier publishes on SCORED: the verdicts of the
// rollouts it graded together, one message for all of them (the verifier
// acks those rollouts once this message is stored). A message holding a
// single Verdict, as verifiers wrote before batches, is read as a batch of
// one (DecodeVerdicts). One rollout can have two verdicts on SCORED (a
// verifier that died between its publish and its acks; the redelivered
// rollout is graded again in another batch): readers keep the first per
// ROLLOUTS sequence.
type Verdicts struct {
	V        uint16    `msgpack:"v"`
	RunID    string    `msgpack:"run"`
	Verdicts []Verdict `msgpack:"vs"`
}

// DecodeVerdicts reads one SCORED message: a Verdicts batch, or a single
// Verdict (the format before batches). Every verdict must name its
// trajectory and its ROLLOUTS sequence; otherwise the whole message is
// refused (the caller dead-letters it with the error).
func DecodeVerdicts(b []byte) ([]Verdict, error) {
	var batch Verdicts
	if err := Decode(b, &batch); err != nil {
		return nil, err
	}
	vs := batch.Verdicts
	if len(vs) == 0 {
		var one Verdict
		if err := Decode(b, &one); err != nil {
			return nil, err
		}
		vs = []Verdict{one}
	}
	for i := range vs {
		v := &vs[i]
		if v.V != VerdictSchema {
			return nil, fmt.Errorf("%w: verdict %d of %d: version %d (this build reads %d)", ErrSchema, i+1, len(vs), v.V, VerdictSchema)
		}
		if v.ID == "" || v.Seq == 0 {
			return nil, fmt.Errorf("%w: verdict %d of %d names no trajectory (id %q, ROLLOUTS sequence %d)", ErrDecode, i+1, len(vs), v.ID, v.Seq)
		}
	}
	return vs, nil
}

// Join is the scored trajectory of t graded by v (the caller has matched
// them, by ROLLOUTS sequence and id).
func (v *Verdict) Join(t Trajectory) *Scored {
	return &Scored{Traj: t, Reward: v.Reward, Reason: v.Reason, Extracted: v.Extracted, VerifyMicros: v.VerifyMicros}
}

// Scored is a trajectory joined with its verdict: what the learner trains on
// and what inspection and retraining read. It is no longer a stream's
// message (SCORED holds Verdicts); it keeps its encoding for the records
// that store it whole.
type Scored struct {
	V            uint16     `msgpack:"v"`
	Traj         Trajectory `msgpack:"traj"`
	Reward       float32    `msgpack:"r"`   // 0 or 1
	Reason       string     `msgpack:"why"` // verifier verdict reason: "correct", "wrong_value", "timeout", ...
	Extracted    string     `msgpack:"ans"` // the answer the verifier extracted, if any
	VerifyMicros int64      `msgpack:"vus"`
}

// GroupReport is one question's group in a step (ALGORITHM.md E8, E9).
type GroupReport struct {
	QuestionID    string   `msgpack:"q"`
	Size          int      `msgpack:"n"` // K
	Correct       int      `msgpack:"k"` // correct rollouts, the replayed one included
	Replayed      bool     `msgpack:"rep"`
	ReplayedID    string   `msgpack:"repid"` // trajectory id of the replayed experience, if any
	TrajectoryIDs []string `msgpack:"ids"`   // all K, replayed first when present
	// Seqs are the ROLLOUTS stream sequences of TrajectoryIDs (0 for the
	// replayed one, which EXPERIENCE holds): where the replay service and
	// inspection fetch the trajectories the pool stores. Empty in reports
	// written before trajectories were stored once.
	Seqs       []uint64  `msgpack:"seqs,omitempty"`
	Rewards    []float32 `msgpack:"r"`
	Advantages []float32 `msgpack:"a"`
	Reasons    []string  `msgpack:"why"`
	// Candidates ranks the replayed question's stored trajectories by mean
	// token entropy under the current policy (ALGORITHM.md E7), lowest first.
	Candidates []Candidate `msgpack:"cand,omitempty"`
}

// Candidate is one stored trajectory considered for replay.
type Candidate struct {
	ID      string  `msgpack:"id"`
	Entropy float32 `msgpack:"h"`
}

// StepReport is the learner's ledger entry for one step (CONTROL stream,
// subject exgrpo.<run>.control, message id "e<epoch>/step/<n>"). The replay
// state is a deterministic fold of the reports of the run's lineage (see
// Lineage) plus the trajectories they name (ROLLOUTS, by GroupReport.Seqs).
type StepReport struct {
	V             uint16        `msgpack:"v"`
	RunID         string        `msgpack:"run"`
	Step          int64         `msgpack:"step"`
	Epoch         int64         `msgpack:"epoch"` // the learner incarnation that trained it (see Lineage)
	PolicyVersion int64         `msgpack:"ver"`   // version the step's fresh rollouts were asked from
	NewVersion    int64         `msgpack:"nver"`  // version published after the update
	Pass1         float64       `msgpack:"pass1"`
	Mixed         bool          `msgpack:"mixed"` // this step trained in mixed mode (collection on; ALGORITHM.md E5)
	Groups        []GroupReport `msgpack:"groups"`
	Loss          float64       `msgpack:"loss"`
	GradNorm      float64       `msgpack:"gnorm"`
	Skipped       bool          `msgpack:"skip"`
	Entropy       float64       `msgpack:"ent"` // mean token entropy of the step's rollouts
	StaleDropped  int           `msgpack:"stale"`
	StepMicros    int64         `msgpack:"us"`
	UnixMs        int64         `msgpack:"t"`
}

// Experience is one stored successful trajectory (EXPERIENCE stream, subject
// per question). ALGORITHM.md E1: token ids, never re-tokenised text.
type Experience struct {
	V             uint16   `msgpack:"v"`
	RunID         string   `msgpack:"run"`
	QuestionID    string   `msgpack:"q"`
	TrajectoryID  string   `msgpack:"id"`
	Step          int64    `msgpack:"step"`
	PolicyVersion int64    `msgpack:"ver"`
	PromptTokens  Int32s   `msgpack:"pt"`
	Tokens        Int32s   `msgpack:"tok"`
	LogProbs      Float32s `msgpack:"lp"`
	Text          string   `msgpack:"text"`
}

// SampleRequest asks the replay service for n_exp pool questions (ALGORITHM.md E6).
type SampleRequest struct {
	V     uint16 `msgpack:"v"`
	RunID string `msgpack:"run"`
	Step  int64  `msgpack:"step"`
	N     int    `msgpack:"n"`
	Seed  int64  `msgpack:"seed"`
	// Epoch is the asking learner's incarnation: the reply must reflect the
	// lineage of that epoch (its Lineage record folded), never an older one.
	Epoch int64 `msgpack:"epoch"`
	// AfterStep: the reply must reflect every step report up to and including it.
	AfterStep int64 `msgpack:"after"`
}

// SampledQuestion is one question drawn from the pool.
type SampledQuestion struct {
	QuestionID string   `msgpack:"q"`
	Bucket     int      `msgpack:"k"`
	Candidates []string `msgpack:"ids"` // stored trajectory ids, oldest first, capped (ALGORITHM.md E7)
}

// SampleReply answers a SampleRequest. Error is set instead of Questions when
// the request could not be served.
type SampleReply struct {
	V         uint16            `msgpack:"v"`
	Step      int64             `msgpack:"step"`
	Questions []SampledQuestion `msgpack:"qs"`
	Error     string            `msgpack:"err,omitempty"`
}

// DeadLetter records a message that could not be processed (DEAD stream).
type DeadLetter struct {
	V          uint16 `msgpack:"v"`
	RunID      string `msgpack:"run"`
	Stream     string `msgpack:"stream"`
	Subject    string `msgpack:"subj"`
	Sequence   uint64 `msgpack:"seq"`
	Role       string `msgpack:"role"`
	Reason     string `msgpack:"why"`
	Deliveries uint64 `msgpack:"dlv"`
	Data       []byte `msgpack:"data"` // the original payload, truncated to 64 KiB
	UnixMs     int64  `msgpack:"t"`
}

// Probe is published with each policy version (KV, see bus.PublishProbe):
// the log-probs of a few fixed sequences under that version, computed by the
// learner. An engine actor scores the same sequences after loading the
// version and refuses to serve when they disagree (GPU.md: an HTTP 200 from a
// weight reload is not proof that the weights changed).
type Probe struct {
	V       uint16     `msgpack:"v"`
	RunID   string     `msgpack:"run"`
	Version int64      `msgpack:"ver"`
	Temp    float32    `msgpack:"temp"` // temperature of LogProbs (1: softmax(logits))
	Seqs    []ProbeSeq `msgpack:"seqs"`
}

// ProbeSeq is one probe sequence: LogProbs[j] is the log-prob of
// Tokens[PromptLen+j] given the tokens before it.
type ProbeSeq struct {
	Tokens    Int32s   `msgpack:"tok"`
	PromptLen int      `msgpack:"pl"`
	LogProbs  Float32s `msgpack:"lp"`
}

func (m *Task) schema() (string, uint16, uint16)       { return "task", TaskSchema, m.V }
func (m *Probe) schema() (string, uint16, uint16)      { return "probe", ProbeSchema, m.V }
func (m *Trajectory) schema() (string, uint16, uint16) { return "trajectory", TrajectorySchema, m.V }
func (m *Scored) schema() (string, uint16, uint16)     { return "scored", ScoredSchema, m.V }
func (m *Verdict) schema() (string, uint16, uint16)    { return "verdict", VerdictSchema, m.V }
func (m *Verdicts) schema() (string, uint16, uint16)   { return "verdicts", VerdictsSchema, m.V }
func (m *StepReport) schema() (string, uint16, uint16) { return "step report", StepReportSchema, m.V }
func (m *Experience) schema() (string, uint16, uint16) { return "experience", ExperienceSchema, m.V }
func (m *SampleRequest) schema() (string, uint16, uint16) {
	return "sample request", SampleRequestSchema, m.V
}
func (m *SampleReply) schema() (string, uint16, uint16) {
	return "sample reply", SampleReplySchema, m.V
}
func (m *DeadLetter) schema() (string, uint16, uint16) { return "dead letter", DeadLetterSchema, m.V }
func (m *Lineage) schema() (string, uint16, uint16)    { return "lineage record", LineageSchema, m.V }

// Stamp sets the schema version of a message about to be encoded; encoders
// call it so that a zero-valued V never leaves the process.
func Stamp(m Message) {
	switch x := m.(type) {
	case *Task:
		x.V = TaskSchema
	case *Trajectory:
		x.V = TrajectorySchema
	case *Scored:
		x.V = ScoredSchema
		x.Traj.V = TrajectorySchema
	case *Verdict:
		x.V = VerdictSchema
	case *Verdicts:
		x.V = VerdictsSchema
		for i := range x.Verdicts {
			x.Verdicts[i].V = VerdictSchema
		}
	case *StepReport:
		x.V = StepReportSchema
	case *Experience:
		x.V = ExperienceSchema
	case *SampleRequest:
		x.V = SampleRequestSchema
	case *SampleReply:
		x.V = SampleReplySchema
	case *DeadLetter:
		x.V = DeadLetterSchema
	case *Lineage:
		x.V = LineageSchema
	case *Probe:
		x.V = ProbeSchema
	}
}
