package auth

import (
	"bytes"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestEachRoleDoesItsJob walks one step of the data path of ARCHITECTURE.md
// with each role on its own credentials: every operation must succeed.
func TestEachRoleDoesItsJob(t *testing.T) {
	s, dir := startServer(t)
	n, _ := newRunNames(testRun)
	lnc, ljs := connect(t, s.ClientURL(), dir, Learner)
	topology(t, lnc, ljs, n)
	anc, ajs := connect(t, s.ClientURL(), dir, Actor)
	vnc, vjs := connect(t, s.ClientURL(), dir, Verifier)
	rnc, rjs := connect(t, s.ClientURL(), dir, Replay)
	inc, ijs := connect(t, s.ClientURL(), dir, Inspect)
	ctx := ctxT(t, 60*time.Second)
	must := func(nc *nats.Conn, what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, Explain(nc, "", err))
		}
	}
	pub := func(nc *nats.Conn, js jetstream.JetStream, subj, id string, data []byte) {
		t.Helper()
		_, err := js.Publish(ctx, subj, data, jetstream.WithMsgID(id))
		must(nc, "publish "+subj, err)
	}
	fetchOne := func(nc *nats.Conn, cons jetstream.Consumer, ack bool) jetstream.Msg {
		t.Helper()
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		must(nc, "fetch", err)
		var got jetstream.Msg
		for m := range b.Messages() {
			got = m
		}
		must(nc, "fetch", b.Error())
		if got == nil {
			t.Fatal("fetch: no message")
		}
		if ack {
			must(nc, "ack", got.DoubleAck(ctx))
		}
		return got
	}
	weights := bytes.Repeat([]byte{7}, 300<<10) // several chunks

	// Learner: weights v1, the version key, one task.
	lobs, err := ljs.ObjectStore(ctx, n.WeightsBucket())
	must(lnc, "learner object store", err)
	_, err = lobs.PutBytes(ctx, "v1", weights)
	must(lnc, "learner puts weights", err)
	lkv, err := ljs.KeyValue(ctx, n.StateBucket())
	must(lnc, "learner kv", err)
	_, err = lkv.Put(ctx, bus.VersionKey, []byte("1"))
	must(lnc, "learner puts version", err)
	pub(lnc, ljs, n.Subject(bus.Tasks), "0/q1", []byte("task"))

	// Actor: watches the version, fetches the weights, takes the task,
	// publishes a rollout.
	akv, err := ajs.KeyValue(ctx, n.StateBucket())
	must(anc, "actor kv", err)
	w, err := akv.Watch(ctx, bus.VersionKey)
	must(anc, "actor watches version", err)
	select {
	case e := <-w.Updates():
		if e == nil || string(e.Value()) != "1" {
			t.Fatalf("actor's version watch: got %v", e)
		}
	case <-ctx.Done():
		t.Fatal("actor's version watch: nothing")
	}
	must(anc, "actor stops watch", w.Stop())
	// ... and leases a shared-filesystem version while it reads it.
	_, err = akv.Put(ctx, "weights.lease.a1", []byte(`{"actor":"a1","version":1}`))
	must(anc, "actor leases a version", err)
	must(anc, "actor ends its lease", akv.Delete(ctx, "weights.lease.a1"))
	aobs, err := ajs.ObjectStore(ctx, n.WeightsBucket())
	must(anc, "actor object store", err)
	got, err := aobs.GetBytes(ctx, "v1")
	must(anc, "actor gets weights", err)
	if !bytes.Equal(got, weights) {
		t.Fatal("actor got different weights")
	}
	acons, err := ajs.Consumer(ctx, n.Stream(bus.Tasks), bus.ActorsConsumer)
	must(anc, "actor looks up the tasks consumer", err)
	task := fetchOne(anc, acons, false)
	must(anc, "actor marks in progress", task.InProgress())
	pub(anc, ajs, n.Subject(bus.Rollouts), "0/q1/0", []byte("rollout"))
	must(anc, "actor acks task", task.DoubleAck(ctx))
	pub(anc, ajs, n.Subject(bus.Dead)+".tasks", "dead-a", []byte("dead letter"))

	// Verifier: takes the rollout, publishes its verdict.
	vcons, err := vjs.Consumer(ctx, n.Stream(bus.Rollouts), bus.VerifiersConsumer)
	must(vnc, "verifier looks up its consumer", err)
	fetchOne(vnc, vcons, false).DoubleAck(ctx)
	pub(vnc, vjs, n.Subject(bus.Scored), "0/q1/0", []byte("verdict"))

	// Learner follows the verdicts and the trajectories with ordered
	// consumers (no acks).
	for _, k := range []bus.Kind{bus.Scored, bus.Rollouts} {
		oc, err := ljs.OrderedConsumer(ctx, n.Stream(k), jetstream.OrderedConsumerConfig{})
		must(lnc, "learner follows "+string(k), err)
		if _, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
			must(lnc, "learner reads "+string(k), err)
		}
	}

	// Replay gets the trajectories its reports name by sequence (direct get),
	// and has no business reading the verdicts.
	rro, err := rjs.Stream(ctx, n.Stream(bus.Rollouts))
	must(rnc, "replay looks up ROLLOUTS", err)
	rm, err := rro.GetMsg(ctx, 1)
	must(rnc, "replay gets a trajectory by sequence", err)
	if string(rm.Data) != "rollout" {
		t.Fatalf("trajectory %q", rm.Data)
	}

	// Replay serves sample requests; the learner asks.
	sub, err := rnc.Subscribe(n.SampleSubject(), func(m *nats.Msg) { _ = m.Respond([]byte("q1")) })
	must(rnc, "replay subscribes to sample requests", err)
	defer sub.Unsubscribe()
	must(rnc, "replay flush", rnc.Flush())
	reply, err := lnc.RequestWithContext(ctx, n.SampleSubject(), []byte("n=1"))
	must(lnc, "learner requests a sample", err)
	if string(reply.Data) != "q1" {
		t.Fatalf("sample reply %q", reply.Data)
	}

	// Learner: the step report; replay folds it and stores experience.
	pub(lnc, ljs, n.Subject(bus.Control), "step/0", []byte("report"))
	rc, err := rjs.CreateOrUpdateConsumer(ctx, n.Stream(bus.Control), jetstream.ConsumerConfig{Durable: "replay", AckPolicy: jetstream.AckExplicitPolicy})
	must(rnc, "replay creates its CONTROL reader", err)
	fetchOne(rnc, rc, true)
	expSubj := n.Subject(bus.Experience) + ".q1"
	pub(rnc, rjs, expSubj, "0/q1/0", []byte("experience"))
	rkv, err := rjs.KeyValue(ctx, n.StateBucket())
	must(rnc, "replay kv", err)
	_, err = rkv.Put(ctx, "replay.q1", []byte("bucket 1"))
	must(rnc, "replay writes its state", err)

	// Replay snapshots its pool into its own Object Store and reads it back.
	snap, err := rjs.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: n.replayBucket(), Storage: jetstream.MemoryStorage})
	must(rnc, "replay creates its snapshot store", err)
	_, err = snap.PutBytes(ctx, "pool", []byte("pool state"))
	must(rnc, "replay writes a snapshot", err)
	_, err = snap.PutBytes(ctx, "pool", []byte("pool state 2"))
	must(rnc, "replay replaces the snapshot", err)
	got, err = snap.GetBytes(ctx, "pool")
	must(rnc, "replay reads its snapshot", err)
	if string(got) != "pool state 2" {
		t.Fatalf("snapshot %q", got)
	}

	// Learner fetches the experience by subject (direct get).
	lexp, err := ljs.Stream(ctx, n.Stream(bus.Experience))
	must(lnc, "learner experience stream", err)
	m, err := lexp.GetLastMsgForSubject(ctx, expSubj)
	must(lnc, "learner gets experience", err)
	if string(m.Data) != "experience" {
		t.Fatalf("experience %q", m.Data)
	}

	// Inspect reads every stream with an ordered consumer, and the state.
	for _, k := range bus.Kinds {
		if k == bus.Tasks {
			// A work queue admits only explicit-ack consumers; inspect
			// reads its state and single messages instead.
			st, err := ijs.Stream(ctx, n.Stream(k))
			must(inc, "inspect stream info "+string(k), err)
			if st.CachedInfo().State.FirstSeq > 0 {
				_, err = st.GetMsg(ctx, st.CachedInfo().State.FirstSeq)
				if err != nil && err != jetstream.ErrMsgNotFound {
					must(inc, "inspect gets a message of "+string(k), err)
				}
			}
			continue
		}
		oc, err := ijs.OrderedConsumer(ctx, n.Stream(k), jetstream.OrderedConsumerConfig{})
		must(inc, "inspect reads "+string(k), err)
		info, err := oc.Info(ctx)
		must(inc, "inspect consumer info "+string(k), err)
		if k != bus.Tasks && info.NumPending == 0 {
			t.Errorf("inspect sees %s empty", k)
		}
	}
	names := ijs.StreamNames(ctx)
	cnt := 0
	for range names.Name() {
		cnt++
	}
	must(inc, "inspect lists streams", names.Err())
	if cnt != len(n.allStreams()) {
		t.Errorf("inspect lists %d streams, want %d", cnt, len(n.allStreams()))
	}
	ikv, err := ijs.KeyValue(ctx, n.StateBucket())
	must(inc, "inspect kv", err)
	_, err = ikv.Get(ctx, bus.VersionKey)
	must(inc, "inspect reads the version", err)

	// Replay retires the question: purges its experience.
	must(rnc, "replay purges", func() error {
		st, err := rjs.Stream(ctx, n.Stream(bus.Experience))
		if err != nil {
			return err
		}
		return st.Purge(ctx, jetstream.WithPurgeSubject(expSubj))
	}())
	// The learner replaces old weights (the Object Store purges chunks).
	_, err = lobs.PutBytes(ctx, "v1", weights[:1000])
	must(lnc, "learner replaces weights", err)
	must(lnc, "learner deletes weights", lobs.Delete(ctx, "v1"))
}
