package bus_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestNodeLossClient: a client connected to one node of a 3-node cluster
// (replication 3) does what the learner does, all at once: publishes with
// acks, publishes weights (Object Store chunks, then the KV version), watches
// the KV version and pull-consumes a stream that another client fills. The
// node it is connected to is shut down mid-way; every activity must carry on
// through the other nodes within a bounded time.
func TestNodeLossClient(t *testing.T) {
	bustest.NodeLossRounds(t, nodeLossClient)
}

func nodeLossClient(t *testing.T) {
	nodes := bustest.Cluster(t, 3)
	cfg := bus.DefaultConfig("fo")
	cfg.Replicas = 3
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	core, logs := observer.New(zapcore.InfoLevel)
	b := bustest.OpenCluster(ctx, t, nodes, "client", cfg, zap.New(core))
	feeder := bustest.OpenCluster(ctx, t, nodes, "feeder", cfg, zap.NewNop())

	// progress counts what each activity got done.
	var progress [4]atomic.Int64
	const (
		pubs = iota
		weights
		watched
		consumed
	)
	names := [...]string{"acked publishes", "weights versions", "watched versions", "consumed messages"}
	bg, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	goLoop := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bg.Err() == nil {
				if err := f(); err != nil && bg.Err() == nil {
					errs <- err
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var n atomic.Int64
	goLoop(func() error {
		id := fmt.Sprint(n.Add(1))
		if _, err := pub.Publish(bg, b.Names.Subject(bus.Control), id, []byte(id)); err != nil {
			return err
		}
		progress[pubs].Add(1)
		return nil
	})
	blob := make([]byte, 4<<20)
	_, _ = rand.Read(blob)
	var version atomic.Int64
	goLoop(func() error {
		if err := b.PublishWeights(bg, version.Add(1), blob); err != nil {
			return err
		}
		progress[weights].Add(1)
		return nil
	})
	vw, err := b.WatchVersion(bg)
	if err != nil {
		t.Fatal(err)
	}
	goLoop(func() error {
		seen := vw.Latest()
		if _, err := vw.Wait(bg, seen+1); err != nil {
			return err
		}
		progress[watched].Add(1)
		return nil
	})
	fpub, err := feeder.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer fpub.Close()
	var fn atomic.Int64
	goLoop(func() error {
		id := fmt.Sprint(fn.Add(1))
		_, err := fpub.Publish(bg, feeder.Names.Subject(bus.Scored), id, make([]byte, 2048))
		return err
	})
	cons, err := b.Reader(ctx, bus.Scored, "client", bus.ReaderOptions{MaxAckPending: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		progress[consumed].Add(1)
	}, jetstream.PullMaxMessages(1024))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	defer func() { stop(); wg.Wait() }()

	// waitProgress requires every activity to advance within d.
	waitProgress := func(d time.Duration, what string) {
		t.Helper()
		var from [4]int64
		for i := range progress {
			from[i] = progress[i].Load()
		}
		deadline := time.Now().Add(d)
		for {
			var stuck []string
			for i := range progress {
				if progress[i].Load() <= from[i]+2 {
					stuck = append(stuck, names[i])
				}
			}
			if len(stuck) == 0 {
				return
			}
			if time.Now().After(deadline) {
				var es []error
				for len(errs) > 0 {
					es = append(es, <-errs)
				}
				t.Fatalf("%s: no progress within %s of %v (connection %s); errors %v; log:\n%s",
					what, d, stuck, b.NC.Status(), es, bustest.LogDump(logs))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitProgress(time.Minute, "before the node loss")
	name := b.NC.ConnectedServerName()
	for _, s := range nodes {
		if s.NATS().Name() == name {
			s.Shutdown()
		}
	}
	waitProgress(time.Minute, "after node "+name+" was shut down")
}

// TestWatchConnection: a connection whose server is gone is reported once
// it has been down longer than allowed; one that is up is not.
func TestWatchConnection(t *testing.T) {
	s := bustest.Server(t)
	nc := bustest.Conn(t, s, "w")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lost := bus.WatchConnection(ctx, nc, 200*time.Millisecond)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		t.Fatalf("reported while connected: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	s.Shutdown()
	select {
	case err := <-lost:
		if !errors.Is(err, bus.ErrConnectionLost) {
			t.Fatalf("error %v, want ErrConnectionLost", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a connection down for 30s was not reported")
	}
}
