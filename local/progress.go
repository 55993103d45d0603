package local

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows how far a loop of total steps is: a bar on a terminal,
// and on anything else (a log file, a pipe, CI) one plain line about every
// twentieth of the way and at the end, so that logs stay readable.
type progress struct {
	bar   *progressbar.ProgressBar // on a terminal
	out   io.Writer                // otherwise
	name  string
	total int64
	every int64
	start time.Time
	last  int64
}

func newProgress(out io.Writer, name string, total int64, width int) *progress {
	p := &progress{out: out, name: name, total: total, every: max(1, total/20), start: time.Now(), last: -1}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(out), progressbar.OptionSetDescription(name),
			progressbar.OptionShowCount(), progressbar.OptionSetWidth(width), progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true), progressbar.OptionThrottle(100*time.Millisecond))
	}
	return p
}

// set records that done of total steps are done, described by desc.
func (p *progress) set(done int64, desc string) {
	if p.bar != nil {
		p.bar.Describe(desc)
		_ = p.bar.Set64(done)
		return
	}
	if done == p.last || (done%p.every != 0 && done != p.total) {
		return
	}
	p.last = done
	fmt.Fprintf(p.out, "%s %d/%d  %s  [%s]\n", p.name, done, p.total, desc, time.Since(p.start).Round(time.Second))
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.out)
	}
}
