package bus_test

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
)

// GetRollouts returns each stored message by sequence (more than its 64 in
// flight), says which are gone for good (deleted, or sequence 0) and which
// may come later (beyond the last sequence), and asks once for a sequence
// named twice.
func TestGetRollouts(t *testing.T) {
	s := bustest.Server(t)
	b := bustest.Open(t, s, bus.DefaultConfig("gr"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub := bustest.Publisher(t, b)
	const n = 150
	sent := map[uint64][]byte{}
	for i := range n {
		data := []byte(fmt.Sprintf("trajectory %d %s", i, bytes.Repeat([]byte{'x'}, i*97)))
		ack, err := pub.Publish(ctx, b.Names.Subject(bus.Rollouts), fmt.Sprintf("id-%d", i), data)
		if err != nil {
			t.Fatal(err)
		}
		sent[ack.Sequence] = data
	}
	st, err := b.Stream(ctx, bus.Rollouts)
	if err != nil {
		t.Fatal(err)
	}
	const deleted = 7
	if err := st.DeleteMsg(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for seq := range uint64(n) {
		seqs = append(seqs, seq+1)
	}
	seqs = append(seqs, 3, 0, n+5) // twice, never, not yet
	got, err := b.GetRollouts(ctx, seqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Msgs) != n-1 {
		t.Errorf("%d messages, want %d", len(got.Msgs), n-1)
	}
	for seq, m := range got.Msgs {
		if !bytes.Equal(m.Data, sent[seq]) || m.Sequence != seq || m.Subject != b.Names.Subject(bus.Rollouts) {
			t.Errorf("sequence %d: %d bytes, sequence %d, subject %q; want the %d bytes sent", seq, len(m.Data), m.Sequence, m.Subject, len(sent[seq]))
		}
		if m.Header.Get("Nats-Msg-Id") != fmt.Sprintf("id-%d", seq-1) {
			t.Errorf("sequence %d: message id %q", seq, m.Header.Get("Nats-Msg-Id"))
		}
	}
	if want := []uint64{0, deleted}; !reflect.DeepEqual(got.Gone, want) {
		t.Errorf("gone %v, want %v", got.Gone, want)
	}
	if want := []uint64{n + 5}; !reflect.DeepEqual(got.Later, want) || got.Err == nil {
		t.Errorf("later %v (%v), want %v with the reason", got.Later, got.Err, want)
	}
}
