package progress

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestPlainLines: off a terminal, progress prints one plain line at the
// first step, about every twentieth of the way and at the end, never a bar's
// control characters, and never the same step twice; a description that
// changes while the count stands still (a warm-up phase) prints again only
// after PlainEvery.
func TestPlainLines(t *testing.T) {
	for _, c := range []struct {
		total int64
		lines int
	}{{100, 21}, {250, 22}, {7, 7}, {1, 1}} { // the first step, then every twentieth
		var buf bytes.Buffer
		p := New(&buf, "training", c.total, 25)
		for s := int64(1); s <= c.total; s++ {
			p.Set(s, "reward 0.50")
			p.Set(s, "reward 0.50") // a repeat prints nothing
		}
		p.Finish()
		out := buf.String()
		got := strings.Count(out, "\n")
		if got != c.lines || strings.ContainsAny(out, "\r\x1b") {
			t.Errorf("total %d: %d lines (want %d), control characters %v:\n%s", c.total, got, c.lines, strings.ContainsAny(out, "\r\x1b"), out)
		}
		if want := fmt.Sprintf("training %d/%d  reward 0.50", c.total, c.total); !strings.Contains(out, want) {
			t.Errorf("total %d: no final line %q in:\n%s", c.total, want, out)
		}
	}
}

func TestPlainLinesPhaseWithoutProgress(t *testing.T) {
	var buf bytes.Buffer
	p := New(&buf, "experiment", 1000, 25)
	for i := range 50 {
		p.Set(0, fmt.Sprintf("warm-up %d/50", i+1))
	}
	if got := strings.Count(buf.String(), "\n"); got != 1 {
		t.Errorf("%d lines within PlainEvery, want 1:\n%s", got, buf.String())
	}
}
