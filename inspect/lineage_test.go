package inspect

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/replay"
	"github.com/exgrpo/exgrpo/wire"
)

// TestLedgerFollowsLineage: a learner of epoch 1 reports steps 0-3 with a
// checkpoint after step 1 and dies; epoch 2 resumes at step 2 with other
// groups. Inspect's pool at every step must be the fold of the ledger
// (epoch 1's steps 0-1, epoch 2's steps 2-3), its report of step 2 epoch
// 2's, and the buckets view must say the learner restarted.
func TestLedgerFollowsLineage(t *testing.T) {
	srv := bustest.Server(t)
	b := bustest.Open(t, srv, bus.DefaultConfig(fxRun))
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	send := func(subject, id string, m wire.Message) {
		data, err := wire.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.Publish(ctx, subject, id, data); err != nil {
			t.Fatal(err)
		}
	}
	record := func(kind string, e, s int64) {
		rec := wire.Lineage{Kind: kind, Epoch: e, Step: s}
		send(b.Names.LineageSubject(), rec.MsgID(), &rec)
	}
	report := func(e, s int64, k int) *wire.StepReport {
		r := &wire.StepReport{Epoch: e, Step: s, Mixed: true, Groups: []wire.GroupReport{{QuestionID: "q1", Size: 4, Correct: k},
			{QuestionID: "q2", Size: 4, Correct: 4 - k}}}
		send(b.Names.Subject(bus.Control), wire.ReportMsgID(e, s), r)
		return r
	}
	record(wire.LineageEpoch, 1, 0)
	want := []*wire.StepReport{report(1, 0, 1), report(1, 1, 2)}
	record(wire.LineageCheckpoint, 1, 1)
	report(1, 2, 3)
	report(1, 3, 4)
	record(wire.LineageEpoch, 2, 2)
	want = append(want, report(2, 2, 0), report(2, 3, 1))

	s, err := NewSource(bustest.Conn(t, srv, "inspect"), fxRun)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := l.poolConfig()
	ref, err := replay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range want {
		if err := ref.Apply(replay.Report{Step: r.Step, Mixed: true, Groups: []replay.Group{
			{QuestionID: "q1", Size: 4, Correct: r.Groups[0].Correct}, {QuestionID: "q2", Size: 4, Correct: r.Groups[1].Correct}}}); err != nil {
			t.Fatal(err)
		}
		got, _, _, err := l.FoldTo(r.Step)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Snapshot(), ref.Snapshot()) {
			t.Errorf("pool at step %d differs from the fold of the ledger: %+v vs %+v", r.Step, got.Stats(), ref.Stats())
		}
	}
	if !bytes.Equal(l.Pool().Snapshot(), ref.Snapshot()) {
		t.Errorf("live pool differs from the fold of the ledger")
	}
	if rep, ok := l.Report(2); !ok || rep.Report.Epoch != 2 {
		t.Errorf("report of step 2: %+v, want epoch 2's", rep)
	}
	v := l.Buckets(fxRun, -1)
	if v.Epochs != 2 || v.Superseded != 2 || v.Reports != 4 {
		t.Errorf("buckets view: %d epochs, %d superseded, %d folded; want 2, 2, 4", v.Epochs, v.Superseded, v.Reports)
	}
}
