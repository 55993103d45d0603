// Package progress shows how far a long loop is: a bar on a terminal, plain
// lines anywhere else (log files, pipes, CI), so that logs stay readable.
package progress

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar shows how far a loop of total steps is: a bar on a terminal, and on
// anything else one plain line about every twentieth of the way, at the
// end, and at least every PlainEvery while the description changes (a
// long phase that does not advance the count, such as a warm-up).
type Bar struct {
	bar   *progressbar.ProgressBar // on a terminal
	out   io.Writer                // otherwise
	name  string
	total int64
	every int64
	start time.Time
	last  int64     // the count last printed
	desc  string    // the description last printed
	at    time.Time // when a line was last printed
}

// PlainEvery is the longest silence of a plain-lines Bar whose description
// changes.
const PlainEvery = 30 * time.Second

// New returns a Bar for total steps named name, drawn on out (width: the
// bar's width in characters on a terminal).
func New(out io.Writer, name string, total int64, width int) *Bar {
	p := &Bar{out: out, name: name, total: total, every: max(1, total/20), start: time.Now(), last: -1}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription(name),
			progressbar.OptionShowCount(), progressbar.OptionSetWidth(width), progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true), progressbar.OptionThrottle(100*time.Millisecond))
	}
	return p
}

// Set records that done of total steps are done, described by desc.
func (p *Bar) Set(done int64, desc string) {
	if p.bar != nil {
		p.bar.Describe(desc)
		_ = p.bar.Set64(done)
		return
	}
	milestone := done != p.last && (done%p.every == 0 || done == p.total)
	quiet := desc != p.desc && time.Since(p.at) >= PlainEvery
	if !milestone && !quiet {
		return
	}
	p.last, p.desc, p.at = done, desc, time.Now()
	fmt.Fprintf(p.out, "%s %d/%d  %s  [%s]\n", p.name, done, p.total, desc, time.Since(p.start).Round(time.Second))
}

// Finish ends the bar's line.
func (p *Bar) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.out)
	}
}

// Clear erases the bar from a terminal line before other output (nothing in
// plain mode).
func (p *Bar) Clear() {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
}
