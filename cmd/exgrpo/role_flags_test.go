package main

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/metrics"
	"go.uber.org/zap"
)

// TestServeStopsOnConnectionLoss: a role whose NATS server goes away for
// longer than --conn-loss is stopped with bus.ErrConnectionLost (so that a
// supervisor restarts it); a role that ends by itself ends serve with its
// own result; a metrics address that cannot be served stops the role.
func TestServeStopsOnConnectionLoss(t *testing.T) {
	srv, err := bus.StartServer(bus.ServerConfig{Port: -1, StoreDir: t.TempDir()}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: srv.ClientURL(), Name: "test"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reg := metrics.New("test", "r", false)
	bf := &busFlags{connLoss: 300 * time.Millisecond}
	blocking := func(ctx context.Context) error { <-ctx.Done(); return nil }

	// Ends by itself: serve returns the role's result.
	want := errors.New("role result")
	if err := bf.serve(ctx, nc, zap.NewNop(), reg, func(context.Context) error { return want }); err != want {
		t.Fatalf("role ending by itself: got %v, want its own result", err)
	}

	// Metrics address in use: the role is stopped with the listen error.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := &busFlags{connLoss: bf.connLoss, metrics: ln.Addr().String()}
	if err := busy.serve(ctx, nc, zap.NewNop(), reg, blocking); err == nil {
		t.Fatal("metrics address in use: serve returned nil")
	}

	// The server goes away: the watch stops the role.
	done := make(chan error, 1)
	go func() { done <- bf.serve(ctx, nc, zap.NewNop(), reg, blocking) }()
	time.Sleep(100 * time.Millisecond) // connected and watching
	srv.Shutdown()
	select {
	case err := <-done:
		if !errors.Is(err, bus.ErrConnectionLost) {
			t.Fatalf("server gone: got %v, want bus.ErrConnectionLost", err)
		}
	case <-ctx.Done():
		t.Fatal("serve did not stop after the connection was lost")
	}
}
