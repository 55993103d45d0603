package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// readerInactive is how long the server keeps a finished reader of
// ReadSubjects when its delete did not get through (a connection that broke
// at the end); the server's default is five minutes, which a learner asking
// for experience every step turns into hundreds of idle consumers.
const readerInactive = 10 * time.Second

// ReadSubjects delivers every message now stored on the given subjects of
// stream kind k to fn, in stream order, with one ordered consumer that is
// deleted when the read ends. fn runs on the caller's goroutine. A message
// purged while the read goes on is skipped. The read is bounded by ctx; give
// it a deadline.
func ReadSubjects(ctx context.Context, b *Bus, k Kind, subjects []string, fn func(jetstream.Msg)) error {
	stream := b.Names.Stream(k)
	cons, err := b.JS.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, InactiveThreshold: readerInactive})
	if err != nil {
		return fmt.Errorf("bus: read %s: %w", stream, err)
	}
	defer func() {
		info := cons.CachedInfo()
		if info == nil {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.JS.DeleteConsumer(dctx, stream, info.Name) // best effort; the inactivity threshold is the fallback
	}()
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("bus: read %s: %w", stream, err)
	}
	left := info.NumPending
	for left > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("bus: read %s: %w", stream, err)
		}
		batch, err := cons.Fetch(int(min(left, 1024)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("bus: read %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			left--
			fn(m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("bus: read %s: %w", stream, err)
		}
		if n == 0 {
			return nil // purged meanwhile
		}
	}
	return nil
}
