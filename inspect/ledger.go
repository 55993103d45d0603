package inspect

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go/jetstream"
)

// Report is one step report as read from CONTROL.
type Report struct {
	Seq    uint64 // CONTROL stream sequence
	Report wire.StepReport
}

// Point is the pool and the step's figures after one folded step report:
// one point of the curves and of the bucket histogram over time.
type Point struct {
	Step    int64   `json:"step"`
	Mixed   bool    `json:"mixed"`   // the step trained in mixed mode (ALGORITHM.md E5)
	Pass1   float64 `json:"pass1"`   // batch Pass@1 of the step's rollouts (the reward curve)
	Entropy float64 `json:"entropy"` // mean token entropy of the step's rollouts
	Loss    float64 `json:"loss"`
	Groups  int     `json:"groups"`
	// Replayed groups of the step (ALGORITHM.md E8).
	Replayed int `json:"replayed"`
	// Buckets[k] is the number of pool questions in bucket k after the fold
	// (index 0 unused, len K; ALGORITHM.md E3).
	Buckets      []int `json:"buckets"`
	Pool         int   `json:"pool"`
	Retired      int   `json:"retired"`
	Trajectories int   `json:"trajectories"`
	// Missing counts the trajectories the report names for the pool that
	// ROLLOUTS no longer holds (its byte limit dropped them) or SCORED has
	// no verdict for; the fold, like the replay service, goes on without
	// them.
	Missing int `json:"missing"`
	// Skipped is why the fold skipped this report ("" when folded): a
	// repeated step, or a report the pool refuses (the service dead-letters it).
	Skipped string `json:"skipped,omitempty"`
}

// Ledger is what the streams say happened: every step report in stream
// order, every scored trajectory (a ROLLOUTS trajectory joined with its
// SCORED verdict) by id, and the pool folded from them.
// Update reads what was added since the last read, so a live view stays
// cheap. A Ledger is not safe for concurrent use.
type Ledger struct {
	// K is the group size (fixed by the first report with a group, unless
	// given).
	K       int
	Reports []Report
	Scored  map[string]*wire.Scored
	// BySeq holds the same, by ROLLOUTS sequence: the copy a report names
	// (GroupReport.Seqs) when one id was sampled twice.
	BySeq map[uint64]*wire.Scored
	// Points has one entry per report, in stream order.
	Points []Point
	// Undecodable counts CONTROL, SCORED and ROLLOUTS messages that failed
	// to decode (the roles dead-letter those).
	Undecodable int
	// Gone counts verdicts whose trajectory ROLLOUTS no longer held when
	// read (its byte limit dropped it).
	Gone int

	// Records are the learner's lineage records (wire.Lineage) in stream
	// order: which reports make up the run's ledger across restarts.
	Records []wire.Lineage
	// Rules are the pool rules the fold uses (Source.Rules); set before
	// the first Update.
	Rules PoolRules

	pool                  *replay.Pool
	ctrlSeq, scSeq, roSeq uint64
	bySeq                 map[uint64]*wire.Scored  // joined, by ROLLOUTS sequence
	waiting               map[uint64]*wire.Verdict // verdicts whose trajectory was not read yet
	verdictOf             map[string]bool          // trajectory ids with a verdict (the first counts)
	byStep                map[int64]int            // step -> index in Reports (the folded one)
	folded                int                      // Reports[:folded] are in pool
	lin                   replay.Lineage
	outside               []string // per report: why it is not in the ledger ("" when it is)
	refold                bool     // a rewind undid folded reports: fold again from the start
}

// NewLedger is an empty ledger; k = 0 takes K from the first report.
func NewLedger(k int) *Ledger {
	return &Ledger{K: k, Scored: map[string]*wire.Scored{}, byStep: map[int64]int{}, lin: replay.NewLineage(), Rules: PaperRules(),
		BySeq: map[uint64]*wire.Scored{}, waiting: map[uint64]*wire.Verdict{}, verdictOf: map[string]bool{}}
}

// Load reads the whole run once.
func (s *Source) Load(ctx context.Context) (*Ledger, error) {
	l := NewLedger(s.K)
	l.Rules = s.Rules
	if err := l.Update(ctx, s); err != nil {
		return nil, err
	}
	return l, nil
}

// Update reads the CONTROL, SCORED and ROLLOUTS messages added since the
// last Update and folds the new reports. CONTROL is read first, then SCORED,
// then ROLLOUTS: the learner joined a report's verdicts before publishing it,
// and the verifier graded a trajectory after it was stored, so each read
// finds what the previous one names. A verdict naming a trajectory read by
// an earlier Update (before its verdict existed) gets it by sequence.
func (l *Ledger) Update(ctx context.Context, s *Source) error {
	var err error
	l.ctrlSeq, err = s.read(ctx, bus.Control, l.ctrlSeq+1, func(m raw) {
		if m.subj == s.Names.LineageSubject() {
			var rec wire.Lineage
			if wire.Decode(m.data, &rec) != nil || rec.Validate() != nil {
				l.Undecodable++
				return
			}
			l.record(rec)
			return
		}
		var r wire.StepReport
		if wire.Decode(m.data, &r) != nil {
			l.Undecodable++
			return
		}
		l.Reports = append(l.Reports, Report{Seq: m.seq, Report: r})
		d := l.lin.Report(&r)
		l.outside = append(l.outside, d.Why)
	})
	if err != nil {
		return err
	}
	l.scSeq, err = s.read(ctx, bus.Scored, l.scSeq+1, func(m raw) {
		vs, err := wire.DecodeVerdicts(m.data)
		if err != nil {
			// (A run written before trajectories were stored once holds
			// wire.Scored here, which names no ROLLOUTS sequence.)
			l.Undecodable++
			return
		}
		for i := range vs {
			v := &vs[i]
			if !l.verdictOf[v.ID] { // a regraded rollout: the first verdict counts
				l.verdictOf[v.ID] = true
				l.waiting[v.Seq] = v
			}
		}
	})
	if err != nil {
		return err
	}
	l.roSeq, err = s.read(ctx, bus.Rollouts, l.roSeq+1, func(m raw) {
		if v, ok := l.waiting[m.seq]; ok {
			delete(l.waiting, m.seq)
			l.join(v, m.seq, m.data)
		}
	})
	if err != nil {
		return err
	}
	if err := l.fetchWaiting(ctx, s); err != nil {
		return err
	}
	return l.foldNew()
}

// join files a trajectory (ROLLOUTS seq, its bytes) with its verdict.
func (l *Ledger) join(v *wire.Verdict, seq uint64, data []byte) {
	var t wire.Trajectory
	if wire.Decode(data, &t) != nil || t.ID != v.ID {
		l.Undecodable++ // the verifier would not have graded it
		return
	}
	sc := v.Join(t)
	l.BySeq[seq] = sc
	if _, dup := l.Scored[t.ID]; !dup {
		l.Scored[t.ID] = sc
	}
}

// fetchWaiting gets by sequence the trajectories of the waiting verdicts
// that ROLLOUTS was read past; the ones it no longer holds are counted.
func (l *Ledger) fetchWaiting(ctx context.Context, s *Source) error {
	var st jetstream.Stream
	for seq, v := range l.waiting {
		if seq > l.roSeq {
			continue // its trajectory comes with the next read
		}
		if st == nil {
			var err error
			if st, err = s.JS.Stream(ctx, s.Names.Stream(bus.Rollouts)); err != nil {
				return fmt.Errorf("inspect: stream %s: %w", s.Names.Stream(bus.Rollouts), err)
			}
		}
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			delete(l.waiting, seq)
			l.Gone++
			continue
		}
		if err != nil {
			return fmt.Errorf("inspect: read %s seq %d: %w", s.Names.Stream(bus.Rollouts), seq, err)
		}
		delete(l.waiting, seq)
		l.join(v, seq, m.Data)
	}
	return nil
}

// record applies one lineage record: a rewind takes the reports after its
// step out of the ledger (wire.Lineage), and the pool is folded again.
func (l *Ledger) record(rec wire.Lineage) {
	l.Records = append(l.Records, rec)
	d := l.lin.Record(&rec)
	if !d.Rewind {
		return
	}
	for i := range l.Reports {
		if l.outside[i] == "" && l.Reports[i].Report.Step > d.To {
			l.outside[i] = fmt.Sprintf("superseded: learner epoch %d resumed at step %d", rec.Epoch, rec.Step)
			l.refold = true
		}
	}
}

// InLedger says whether Reports[i] is part of the run's ledger, and if not why.
func (l *Ledger) InLedger(i int) (bool, string) { return l.outside[i] == "", l.outside[i] }

// lookup finds a scored trajectory by ROLLOUTS sequence (by id for a
// report that gives none).
func (l *Ledger) lookup(id string, seq uint64) (*wire.Trajectory, bool) {
	sc, ok := l.Scored[id]
	if seq != 0 {
		sc, ok = l.BySeq[seq]
		ok = ok && sc.Traj.ID == id
	}
	if !ok {
		return nil, false
	}
	return &sc.Traj, true
}

// poolConfig is the pool inspect folds into: the run's K; every stored
// trajectory listed as a candidate (the cap only limits what Candidates
// returns, not the fold).
func (l *Ledger) poolConfig() replay.Config {
	c := replay.DefaultConfig()
	c.K, c.Mu = l.K, float64(l.K)/2
	c.RetireAfter, c.ReplayLimit = l.Rules.RetireAfter, l.Rules.ReplayLimit
	c.MaxCandidates = math.MaxInt32
	return c
}

// ensurePool creates the pool once K is known.
func (l *Ledger) ensurePool() error {
	if l.pool != nil {
		return nil
	}
	if l.K == 0 {
		for _, r := range l.Reports {
			if len(r.Report.Groups) > 0 {
				l.K = r.Report.Groups[0].Size
				break
			}
		}
	}
	if l.K == 0 {
		return nil // no group yet
	}
	p, err := replay.New(l.poolConfig())
	if err != nil {
		return fmt.Errorf("inspect: group size K = %d from the step reports: %w", l.K, err)
	}
	l.pool = p
	return nil
}

// foldNew folds the reports read since the last fold.
func (l *Ledger) foldNew() error {
	if err := l.ensurePool(); err != nil {
		return err
	}
	if l.pool == nil {
		return nil
	}
	if l.refold {
		p, err := replay.New(l.poolConfig())
		if err != nil {
			return err
		}
		l.pool, l.folded, l.Points, l.byStep, l.refold = p, 0, l.Points[:0], map[int64]int{}, false
	}
	for ; l.folded < len(l.Reports); l.folded++ {
		r := &l.Reports[l.folded]
		if why := l.outside[l.folded]; why != "" {
			pt := point(l.pool, &r.Report)
			pt.Skipped = why
			if _, seen := l.byStep[r.Report.Step]; !seen {
				l.byStep[r.Report.Step] = l.folded
			}
			l.Points = append(l.Points, pt)
			continue
		}
		pt, ok := apply(l.pool, &r.Report, l.lookup)
		if _, seen := l.byStep[r.Report.Step]; ok || !seen {
			// The folded report of a step, else the first that named it
			// (its Point says why it was skipped).
			l.byStep[r.Report.Step] = l.folded
		}
		l.Points = append(l.Points, pt)
	}
	return nil
}

// apply folds one report into p as the replay service does (stream order;
// a repeated step or a refused report leaves the pool as it was) and returns
// the point after it; ok says it was folded.
func apply(p *replay.Pool, rep *wire.StepReport, lookup func(string, uint64) (*wire.Trajectory, bool)) (Point, bool) {
	r, missing := rsvc.Assemble(rep, lookup)
	err := p.Apply(r)
	pt := point(p, rep)
	pt.Missing = len(missing)
	switch {
	case errors.Is(err, replay.ErrStaleReport):
		pt.Skipped = "step already folded (repeated report)"
	case err != nil:
		pt.Skipped = err.Error()
	}
	return pt, err == nil
}

func point(p *replay.Pool, rep *wire.StepReport) Point {
	st := p.Stats()
	pt := Point{Step: rep.Step, Mixed: rep.Mixed, Pass1: finite(rep.Pass1), Entropy: finite(rep.Entropy),
		Loss: finite(rep.Loss), Groups: len(rep.Groups), Buckets: st.Buckets, Pool: st.Questions,
		Retired: st.Retired, Trajectories: st.Trajectories}
	for _, g := range rep.Groups {
		if g.Replayed {
			pt.Replayed++
		}
	}
	return pt
}

// finite maps NaN and infinities to 0: JSON has no NaN.
func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

// Pool is the pool after every report read (nil before the first group).
func (l *Ledger) Pool() *replay.Pool { return l.pool }

// LastStep is the last folded step, -1 before any.
func (l *Ledger) LastStep() int64 {
	if l.pool == nil {
		return -1
	}
	if s, ok := l.pool.LastStep(); ok {
		return s
	}
	return -1
}

// FoldTo folds, into a fresh pool, the reports (in stream order) up to and
// including step n: the pool as it was right after step n. It also returns
// the point of the last report folded (zero when none).
func (l *Ledger) FoldTo(n int64) (*replay.Pool, Point, int, error) {
	if err := l.ensurePool(); err != nil {
		return nil, Point{}, 0, err
	}
	p, err := replay.New(l.poolConfig())
	if err != nil || l.pool == nil {
		if l.K == 0 {
			return nil, Point{}, 0, nil
		}
		return nil, Point{}, 0, err
	}
	var last Point
	folded := 0
	for i := range l.Reports {
		rep := &l.Reports[i].Report
		if rep.Step > n || l.outside[i] != "" {
			continue // a report of a later step, or one outside the ledger
		}
		pt, ok := apply(p, rep, l.lookup)
		if ok {
			last, folded = pt, folded+1
		}
	}
	return p, last, folded, nil
}

// Report returns the folded report of step n.
func (l *Ledger) Report(n int64) (*Report, bool) {
	i, ok := l.byStep[n]
	if !ok {
		return nil, false
	}
	return &l.Reports[i], true
}

// Steps lists the folded steps in order.
func (l *Ledger) Steps() []int64 {
	out := make([]int64, 0, len(l.byStep))
	for s := range l.byStep {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
