package bus_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
)

// TestCluster3: three embedded nodes joined by routes (the compose
// cluster's shape) carry the topology at 3 replicas: Open waits out the
// meta-leader election, publishes are deduplicated, weights round-trip.
func TestCluster3(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster")
	}
	nodes := bustest.Cluster(t, 3)
	n1, n2 := nodes[0], nodes[1]
	cfg := bus.DefaultConfig("cl")
	cfg.Replicas = 3
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	b1, err := bus.Open(ctx, bustest.Conn(t, n1, "a"), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := bus.Open(ctx, bustest.Conn(t, n2, "b"), cfg, nil) // another node, same topology
	if err != nil {
		t.Fatal(err)
	}
	info, err := b2.JS.Stream(ctx, b2.Names.Stream(bus.Scored))
	if err != nil {
		t.Fatal(err)
	}
	if r := info.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("SCORED has %d replicas, want 3", r)
	}
	pub, err := b1.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for range 2 {
		if _, err := pub.Publish(ctx, b1.Names.Subject(bus.Scored), "same-id", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	bustest.Eventually(t, 10*time.Second, "one deduplicated message seen from the other node", func() bool {
		si, err := info.Info(ctx)
		return err == nil && si.State.Msgs == 1
	})
	blob := make([]byte, 3<<20)
	_, _ = rand.Read(blob)
	if err := b1.PublishWeights(ctx, 1, blob); err != nil {
		t.Fatal(err)
	}
	got, err := b2.FetchWeights(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, blob) {
		t.Fatal("weights differ across nodes")
	}
}
