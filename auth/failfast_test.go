package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"go.uber.org/zap"
)

// TestDeniedFailsFast: refused credentials and refused subjects are
// permanent, so a role must fail within seconds with an error that says
// "denied" and names the connection, the run and the subject, instead of
// retrying until a deadline (or for ever): no credentials, another run's
// credentials, and one role's credentials used for another role's work.
func TestDeniedFailsFast(t *testing.T) {
	s, dir := startServer(t)
	n, _ := newRunNames(testRun)
	lnc, ljs := connect(t, s.ClientURL(), dir, Learner)
	topology(t, lnc, ljs, n)
	const limit = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	check := func(what string, start time.Time, err error, want ...string) {
		t.Helper()
		took := time.Since(start)
		if !errors.Is(err, bus.ErrDenied) {
			t.Fatalf("%s: got %v; want bus.ErrDenied", what, err)
		}
		if took > limit {
			t.Errorf("%s: failed after %v; want within %v", what, took, limit)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not name %q", what, err, w)
			}
		}
		t.Logf("%s: denied after %v: %v", what, took.Round(time.Millisecond), err)
	}

	start := time.Now()
	_, err := bus.Connect(ctx, bus.ConnConfig{URL: s.ClientURL(), Name: "actor"}, zap.NewNop())
	check("no credentials", start, err, "refused the credentials", "actor")

	// Credentials of this bundle's actor, for another run.
	start = time.Now()
	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: s.ClientURL(), Name: "actor", CredsFile: CredsFile(dir, Actor)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, err = bus.Open(ctx, nc, bus.DefaultConfig("other"), zap.NewNop())
	check("another run's credentials", start, err, "permissions violation", "run other", "actor")

	// The actor's credentials doing the learner's work on the right run.
	nc2, err := bus.Connect(ctx, bus.ConnConfig{URL: s.ClientURL(), Name: "learner?", CredsFile: CredsFile(dir, Actor)}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	b, err := bus.Open(ctx, nc2, bus.DefaultConfig(testRun), zap.NewNop())
	if err != nil {
		t.Fatalf("the actor's own run refused: %v", err)
	}
	pub, err := b.NewPublisher(bus.DefaultPublisherConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	start = time.Now()
	_, err = pub.Publish(ctx, b.Names.Subject(bus.Control), "x", []byte("x"))
	check("an actor publishing a step report", start, err, b.Names.Subject(bus.Control), "may not publish")
}
