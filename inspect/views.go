package inspect

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// BucketsView is the pool as of one step (`inspect buckets`).
type BucketsView struct {
	Run string `json:"run"`
	K   int    `json:"k"`
	// Step is the last step folded, -1 when none; AtStep the step asked
	// for (-1: the latest).
	Step   int64 `json:"step"`
	AtStep int64 `json:"at_step"`
	// Mixed is the mixed-mode flag of the last folded step (ALGORITHM.md E5).
	Mixed bool `json:"mixed"`
	// Buckets lists k = 1..K-1 with its number of questions (ALGORITHM.md E3).
	Buckets      []Bucket `json:"buckets"`
	Pool         int      `json:"pool"`    // questions in some bucket: what replay samples from (E6)
	Retired      int      `json:"retired"` // ALGORITHM.md E4
	Known        int      `json:"known"`   // questions ever named by a mixed-mode step
	Trajectories int      `json:"trajectories"`
	Tokens       int64    `json:"tokens"` // response tokens stored
	Reports      int      `json:"reports"`
	// Missing counts trajectories the folded reports named for the pool
	// that ROLLOUTS no longer holds (or SCORED has no verdict for).
	Missing int `json:"missing_trajectories"`
	// Epochs is how many learner processes the run had (wire.Lineage);
	// Superseded counts the reports a restarted learner took out of the
	// ledger (it trained those steps again).
	Epochs     int `json:"learner_epochs"`
	Superseded int `json:"superseded_reports"`
}

// Bucket is one bucket's size.
type Bucket struct {
	K         int `json:"k"`
	Questions int `json:"questions"`
}

// Buckets folds the reports up to step at (at < 0: all of them).
func (l *Ledger) Buckets(run string, at int64) BucketsView {
	v := BucketsView{Run: run, K: l.K, Step: -1, AtStep: at}
	if at < 0 {
		at = 1<<63 - 1
	}
	p, last, folded, err := l.FoldTo(at)
	if err != nil || p == nil {
		return v
	}
	st := p.Stats()
	if st.HasStep {
		v.Step = st.Step
	}
	v.Mixed = folded > 0 && last.Mixed
	for k := 1; k < len(st.Buckets); k++ {
		v.Buckets = append(v.Buckets, Bucket{K: k, Questions: st.Buckets[k]})
	}
	v.Pool, v.Retired, v.Known, v.Trajectories, v.Tokens = st.Questions, st.Retired, st.Known, st.Trajectories, st.Tokens
	v.Reports = folded
	for i := range l.Reports {
		in, _ := l.InLedger(i)
		if !in {
			v.Superseded++
			continue
		}
		if l.Reports[i].Report.Step <= at {
			_, missing := rsvc.Assemble(&l.Reports[i].Report, l.lookup)
			v.Missing += len(missing)
		}
	}
	for _, r := range l.Records {
		if r.Kind == wire.LineageEpoch {
			v.Epochs++
		}
	}
	return v
}

// QuestionView is one question's story (`inspect question`).
type QuestionView struct {
	Run string `json:"run"`
	ID  string `json:"id"`
	// InPool: a mixed-mode step named it, so the pool knows it.
	InPool  bool `json:"in_pool"`
	Bucket  int  `json:"bucket"`   // bucket it is sampled from now, 0 = none
	LatestK int  `json:"latest_k"` // latest k in 1..K-1, 0 before any
	Retired bool `json:"retired"`
	// Steps: every step whose batch held the question, oldest first.
	Steps []QuestionStep `json:"steps"`
	// Stored: its trajectories in the pool now, oldest first (ALGORITHM.md E1).
	Stored []StoredTrajectory `json:"stored"`
	// Checkpoint scored the stored trajectories (entropy and log-prob under
	// the current policy); "" when none was given.
	Checkpoint string `json:"checkpoint,omitempty"`
}

// QuestionStep is one step of a question's history.
type QuestionStep struct {
	Step     int64 `json:"step"`
	Mixed    bool  `json:"mixed"`
	Replayed bool  `json:"replayed"` // the group replayed a stored trajectory (E8)
	Correct  int   `json:"k"`        // correct rollouts of Size, the replayed one included
	Size     int   `json:"size"`
	// From and To are the buckets before and after the step (0 = none);
	// Added the trajectories stored. Only mixed-mode steps move buckets.
	From    int  `json:"from"`
	To      int  `json:"to"`
	Added   int  `json:"added"`
	Retired bool `json:"retired"` // this step retired it (E4)
	// WasRetired: already retired, nothing stored.
	WasRetired bool `json:"was_retired"`
}

// StoredTrajectory is one stored trajectory of a question.
type StoredTrajectory struct {
	ID            string `json:"id"`
	Step          int64  `json:"step"`
	PolicyVersion int64  `json:"version"`
	Tokens        int    `json:"tokens"`
	Text          string `json:"text"`
	// MeanLogProb is the mean stored behaviour log-prob per token.
	MeanLogProb float64 `json:"mean_logprob"`
	// Entropy and LogProb are the mean token entropy and log-prob under the
	// checkpoint's policy (the E7 selection score), nil without one.
	Entropy *float64 `json:"entropy,omitempty"`
	LogProb *float64 `json:"logprob,omitempty"`
}

// Question builds a question's view from the full fold; ck (optional) scores
// its stored trajectories.
func (l *Ledger) Question(ctx context.Context, s *Source, id string, ck *policy.Checkpoint, ckName string) (QuestionView, error) {
	v := QuestionView{Run: s.Names.Run, ID: id, Steps: []QuestionStep{}, Stored: []StoredTrajectory{}}
	events := map[int64]replay.Event{}
	if l.pool != nil {
		if qi, ok := l.pool.Question(id); ok {
			v.InPool, v.Bucket, v.LatestK, v.Retired = true, qi.Bucket, qi.LatestK, qi.Retired
			for _, e := range l.pool.History(id) {
				events[e.Step] = e
			}
		}
	}
	for i := range l.Reports {
		rep := &l.Reports[i].Report
		if j, ok := l.byStep[rep.Step]; !ok || j != i || l.Points[i].Skipped != "" {
			continue // a skipped report: not part of the fold
		}
		for _, g := range rep.Groups {
			if g.QuestionID != id {
				continue
			}
			qs := QuestionStep{Step: rep.Step, Mixed: rep.Mixed, Replayed: g.Replayed, Correct: g.Correct, Size: g.Size}
			if e, ok := events[rep.Step]; ok {
				qs.From, qs.To, qs.Added, qs.Retired, qs.WasRetired = e.From, e.To, e.Added, e.Retired, e.WasRetired
			}
			v.Steps = append(v.Steps, qs)
		}
	}
	if len(v.Steps) == 0 && !v.InPool {
		return v, fmt.Errorf("%w: question %q is in no step report of run %s", ErrNotFound, id, s.Names.Run)
	}
	if l.pool == nil {
		return v, nil
	}
	cands := l.pool.Candidates(id)
	texts := l.experienceTexts(ctx, s, id, cands)
	seqs := make([]policy.Seq, 0, len(cands))
	for _, c := range cands {
		t := StoredTrajectory{ID: c.ID, Step: c.Step, PolicyVersion: c.PolicyVersion, Tokens: len(c.Tokens), Text: texts[c.ID]}
		var sum float64
		for _, x := range c.LogProbs {
			sum += float64(x)
		}
		t.MeanLogProb = sum / float64(max(1, len(c.LogProbs)))
		v.Stored = append(v.Stored, t)
		seqs = append(seqs, policy.Seq{Tokens: append(append([]int32{}, c.PromptTokens...), c.Tokens...), PromptLen: len(c.PromptTokens)})
	}
	if ck != nil && ck.Model != nil && len(seqs) > 0 {
		logps, ents, err := ck.Model.Score(seqs)
		if err != nil {
			return v, fmt.Errorf("inspect: score %s's trajectories under %s: %w", id, ckName, err)
		}
		v.Checkpoint = ckName
		for i := range v.Stored {
			e, lp := mean(ents[i]), mean(logps[i])
			v.Stored[i].Entropy, v.Stored[i].LogProb = &e, &lp
		}
	}
	return v, nil
}

func mean(xs []float32) float64 {
	var s float64
	for _, x := range xs {
		s += float64(x)
	}
	return s / float64(max(1, len(xs)))
}

// experienceTexts returns the decoded text of the given trajectories: from
// the scored trajectories, else from the question's EXPERIENCE subject (one
// ordered read).
func (l *Ledger) experienceTexts(ctx context.Context, s *Source, id string, cands []replay.Trajectory) map[string]string {
	out := make(map[string]string, len(cands))
	need := false
	for _, c := range cands {
		if sc, ok := l.Scored[c.ID]; ok {
			out[c.ID] = sc.Traj.Text
		} else {
			need = true
		}
	}
	if !need {
		return out
	}
	_ = s.readSubject(ctx, bus.Experience, s.Names.ExperienceSubject(id), func(m raw) {
		var e wire.Experience
		if wire.Decode(m.data, &e) == nil {
			if _, ok := out[e.TrajectoryID]; !ok {
				out[e.TrajectoryID] = e.Text
			}
		}
	})
	return out
}

// StepView is the groups of one step (`inspect step`).
type StepView struct {
	Run           string  `json:"run"`
	Step          int64   `json:"step"`
	Seq           uint64  `json:"seq"` // CONTROL stream sequence
	PolicyVersion int64   `json:"version"`
	NewVersion    int64   `json:"new_version"`
	Pass1         float64 `json:"pass1"`
	Mixed         bool    `json:"mixed"`
	Loss          float64 `json:"loss"`
	GradNorm      float64 `json:"grad_norm"`
	Skipped       bool    `json:"skipped"`
	Entropy       float64 `json:"entropy"`
	StaleDropped  int     `json:"stale_dropped"`
	StepMillis    float64 `json:"step_ms"`
	UnixMs        int64   `json:"unix_ms"`
	// Buckets after the step, index k (0 unused).
	Buckets []int `json:"buckets"`
	// NotFolded says why the fold skipped this report ("" when folded).
	NotFolded string      `json:"not_folded,omitempty"`
	Groups    []GroupView `json:"groups"`
}

// GroupView is one question's group of a step.
type GroupView struct {
	QuestionID string `json:"question"`
	Size       int    `json:"size"`
	Correct    int    `json:"k"`
	Replayed   bool   `json:"replayed"`
	ReplayedID string `json:"replayed_id,omitempty"`
	// Rollouts: the group's K trajectories, the replayed one first.
	Rollouts []Rollout `json:"rollouts"`
	// Candidates: the stored trajectories scored to pick the replayed one,
	// by mean token entropy under the step's policy, lowest first (E7).
	Candidates []CandidateView `json:"candidates,omitempty"`
}

// Rollout is one trajectory of a group.
type Rollout struct {
	ID        string  `json:"id"`
	Replayed  bool    `json:"replayed"`
	Reward    float32 `json:"reward"`
	Advantage float32 `json:"advantage"`
	Reason    string  `json:"reason"`
	// Found: ROLLOUTS still holds it and SCORED its verdict (then Tokens,
	// Version and Text are set).
	Found   bool   `json:"found"`
	Tokens  int    `json:"tokens"`
	Version int64  `json:"version"`
	Text    string `json:"text"`
}

// CandidateView is one candidate of the E7 selection.
type CandidateView struct {
	ID      string  `json:"id"`
	Entropy float32 `json:"entropy"`
	Chosen  bool    `json:"chosen"`
}

// Step builds the view of step n.
func (l *Ledger) Step(run string, n int64) (StepView, error) {
	r, ok := l.Report(n)
	if !ok {
		return StepView{}, fmt.Errorf("%w: step %d has no report on CONTROL of run %s (last step %d)", ErrNotFound, n, run, l.LastStep())
	}
	rep := &r.Report
	v := StepView{Run: run, Step: rep.Step, Seq: r.Seq, PolicyVersion: rep.PolicyVersion, NewVersion: rep.NewVersion,
		Pass1: finite(rep.Pass1), Mixed: rep.Mixed, Loss: finite(rep.Loss), GradNorm: finite(rep.GradNorm), Skipped: rep.Skipped,
		Entropy: finite(rep.Entropy), StaleDropped: rep.StaleDropped, StepMillis: float64(rep.StepMicros) / 1000,
		UnixMs: rep.UnixMs, Groups: []GroupView{}}
	if i := l.byStep[n]; i < len(l.Points) {
		v.Buckets, v.NotFolded = l.Points[i].Buckets, l.Points[i].Skipped
	}
	for _, g := range rep.Groups {
		gv := GroupView{QuestionID: g.QuestionID, Size: g.Size, Correct: g.Correct, Replayed: g.Replayed, ReplayedID: g.ReplayedID,
			Rollouts: []Rollout{}}
		for i, id := range g.TrajectoryIDs {
			ro := Rollout{ID: id, Replayed: g.Replayed && id == g.ReplayedID}
			if i < len(g.Rewards) {
				ro.Reward = g.Rewards[i]
			}
			if i < len(g.Advantages) {
				ro.Advantage = g.Advantages[i]
			}
			if i < len(g.Reasons) {
				ro.Reason = g.Reasons[i]
			}
			if sc, ok := l.Scored[id]; ok {
				ro.Found, ro.Tokens, ro.Version, ro.Text = true, len(sc.Traj.Tokens), sc.Traj.PolicyVersion, sc.Traj.Text
			}
			gv.Rollouts = append(gv.Rollouts, ro)
		}
		for _, c := range g.Candidates {
			gv.Candidates = append(gv.Candidates, CandidateView{ID: c.ID, Entropy: c.Entropy, Chosen: c.ID == g.ReplayedID})
		}
		v.Groups = append(v.Groups, gv)
	}
	return v, nil
}

// TrajectoryView is one scored trajectory (the web page's trajectory link).
type TrajectoryView struct {
	ID            string  `json:"id"`
	Question      string  `json:"question"`
	Step          int64   `json:"step"`
	PolicyVersion int64   `json:"version"`
	Actor         string  `json:"actor"`
	Tokens        int     `json:"tokens"`
	Finish        string  `json:"finish"`
	Reward        float32 `json:"reward"`
	Reason        string  `json:"reason"`
	Extracted     string  `json:"extracted"`
	Answer        string  `json:"answer"`
	MeanLogProb   float64 `json:"mean_logprob"`
	MeanEntropy   float64 `json:"mean_entropy"` // behaviour policy's, recorded while sampling
	Text          string  `json:"text"`
}

// Trajectory returns one scored trajectory.
func (l *Ledger) Trajectory(id string) (TrajectoryView, error) {
	sc, ok := l.Scored[id]
	if !ok {
		return TrajectoryView{}, fmt.Errorf("%w: trajectory %q is not scored (no verdict on SCORED, or ROLLOUTS dropped it by its byte limit)", ErrNotFound, id)
	}
	t := &sc.Traj
	return TrajectoryView{ID: t.ID, Question: t.QuestionID, Step: t.Step, PolicyVersion: t.PolicyVersion, Actor: t.ActorID,
		Tokens: len(t.Tokens), Finish: t.Finish, Reward: sc.Reward, Reason: sc.Reason, Extracted: sc.Extracted, Answer: t.Answer,
		MeanLogProb: mean(t.LogProbs), MeanEntropy: mean(t.Entropies), Text: t.Text}, nil
}

// StreamsView is every stream of the run and its consumers (`inspect streams`).
type StreamsView struct {
	Run     string      `json:"run"`
	UnixMs  int64       `json:"unix_ms"` // when read
	Streams []StreamRow `json:"streams"`
	// Dead is DEAD's most recent entries, newest first.
	Dead []DeadRow `json:"dead"`
}

// StreamRow is one stream's state.
type StreamRow struct {
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Exists   bool   `json:"exists"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// FirstUnixMs and LastUnixMs are the oldest and newest message times (0 when empty).
	FirstUnixMs int64         `json:"first_unix_ms"`
	LastUnixMs  int64         `json:"last_unix_ms"`
	Consumers   []ConsumerRow `json:"consumers"`
}

// ConsumerRow is one consumer's lag: what tells a starved learner (nothing
// pending anywhere) from a slow actor (TASKS pending grows).
type ConsumerRow struct {
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`     // stored, not yet delivered
	AckPending  int    `json:"ack_pending"` // delivered, not yet acknowledged
	Redelivered int    `json:"redelivered"` // delivered more than once, not yet acknowledged
	Waiting     int    `json:"waiting"`     // pull requests waiting (idle workers)
	Delivered   uint64 `json:"delivered"`   // stream sequence delivered up to
	AckFloor    uint64 `json:"ack_floor"`   // stream sequence acknowledged up to
}

// DeadRow is one dead letter.
type DeadRow struct {
	Seq        uint64 `json:"seq"`
	UnixMs     int64  `json:"unix_ms"`
	Stream     string `json:"stream"`
	Subject    string `json:"subject"`
	Sequence   uint64 `json:"orig_seq"`
	Role       string `json:"role"`
	Reason     string `json:"reason"`
	Deliveries uint64 `json:"deliveries"`
	Bytes      int    `json:"bytes"`
}

// Streams reads every stream's info and consumers, and DEAD's last nDead
// entries.
func (s *Source) Streams(ctx context.Context, nDead int) (StreamsView, error) {
	v := StreamsView{Run: s.Names.Run, UnixMs: time.Now().UnixMilli(), Streams: []StreamRow{}, Dead: []DeadRow{}}
	type entry struct{ kind, name string }
	var all []entry
	for _, k := range bus.Kinds {
		all = append(all, entry{string(k), s.Names.Stream(k)})
	}
	all = append(all, entry{"KV state", "KV_" + s.Names.StateBucket()}, entry{"weights", "OBJ_" + s.Names.WeightsBucket()},
		entry{"replay snapshot", "OBJ_" + rsvc.SnapshotBucket(s.Names)})
	for _, e := range all {
		row := StreamRow{Kind: e.kind, Name: e.name, Consumers: []ConsumerRow{}}
		st, err := s.JS.Stream(ctx, e.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			v.Streams = append(v.Streams, row)
			continue
		}
		if err != nil {
			if isPermission(err) {
				continue // not readable with these credentials
			}
			return v, fmt.Errorf("inspect: stream %s: %w", e.name, err)
		}
		info := st.CachedInfo()
		row.Exists = true
		row.Messages, row.Bytes, row.FirstSeq, row.LastSeq = info.State.Msgs, info.State.Bytes, info.State.FirstSeq, info.State.LastSeq
		if info.State.Msgs > 0 {
			row.FirstUnixMs, row.LastUnixMs = info.State.FirstTime.UnixMilli(), info.State.LastTime.UnixMilli()
		}
		lister := st.ListConsumers(ctx)
		for ci := range lister.Info() {
			if strings.HasPrefix(ci.Name, consumerPrefix) {
				continue // our own reads
			}
			row.Consumers = append(row.Consumers, ConsumerRow{Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending,
				Redelivered: ci.NumRedelivered, Waiting: ci.NumWaiting, Delivered: ci.Delivered.Stream, AckFloor: ci.AckFloor.Stream})
		}
		if err := lister.Err(); err != nil && !isPermission(err) {
			return v, fmt.Errorf("inspect: consumers of %s: %w", e.name, err)
		}
		sort.Slice(row.Consumers, func(i, j int) bool { return row.Consumers[i].Name < row.Consumers[j].Name })
		v.Streams = append(v.Streams, row)
		if e.kind == string(bus.Dead) && nDead > 0 {
			v.Dead = s.recentDead(ctx, st, info.State.FirstSeq, info.State.LastSeq, nDead)
		}
	}
	return v, nil
}

// recentDead reads DEAD's newest entries by sequence, newest first.
func (s *Source) recentDead(ctx context.Context, st jetstream.Stream, first, last uint64, n int) []DeadRow {
	out := []DeadRow{}
	for seq, tries := last, 0; seq >= first && seq > 0 && len(out) < n && tries < 4*n; seq, tries = seq-1, tries+1 {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted, or a gap
		}
		row := DeadRow{Seq: m.Sequence, UnixMs: m.Time.UnixMilli(), Subject: m.Subject, Bytes: len(m.Data)}
		var dl wire.DeadLetter
		if err := wire.Decode(m.Data, &dl); err != nil {
			row.Reason = "undecodable dead letter: " + err.Error()
		} else {
			row.Stream, row.Subject, row.Sequence, row.Role, row.Reason, row.Deliveries = dl.Stream, dl.Subject, dl.Sequence, dl.Role, dl.Reason, dl.Deliveries
			row.Bytes = len(dl.Data)
		}
		out = append(out, row)
	}
	return out
}

func isPermission(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "permission")
}

// readSubject reads one subject of a stream (ordered consumer, filtered).
func (s *Source) readSubject(ctx context.Context, k bus.Kind, subject string, fn func(raw)) error {
	name := s.Names.Stream(k)
	cons, err := s.JS.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{NamePrefix: consumerName(),
		FilterSubjects: []string{subject}, InactiveThreshold: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("inspect: read %s: %w", subject, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("inspect: read %s: %w", subject, err)
	}
	defer s.drop(ctx, name, cons)
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 512)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("inspect: read %s: %w", subject, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			left--
			if md, err := m.Metadata(); err == nil {
				fn(raw{seq: md.Sequence.Stream, subj: m.Subject(), data: m.Data(), time: md.Timestamp})
			}
		}
		if n == 0 {
			break
		}
	}
	return nil
}
