package local

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestProgressPlainLines: off a terminal, progress prints one plain line
// about every twentieth of the way and at the end, never a bar's control
// characters, and never the same step twice.
func TestProgressPlainLines(t *testing.T) {
	for _, c := range []struct {
		total int64
		lines int
	}{{100, 20}, {250, 21}, {7, 7}, {1, 1}} {
		var buf bytes.Buffer
		p := newProgress(&buf, "training", c.total, 25)
		for s := int64(1); s <= c.total; s++ {
			p.set(s, "reward 0.50")
			p.set(s, "reward 0.50") // a repeat prints nothing
		}
		p.finish()
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
