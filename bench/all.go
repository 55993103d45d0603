package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Target is one benchmark as `bench all` runs it: its name and a function
// that runs it with command-line arguments, writing to w.
type Target struct {
	Name string
	Run  func(ctx context.Context, w io.Writer, args []string) error
}

// AllConfig is `exgrpo bench all`.
type AllConfig struct {
	Targets []Target // in the order to run them
	Quick   bool     // pass --quick to every target
	Args    string   // the command line, for the summary's heading
	Commit  string   // the binary's VCS revision, for the heading
}

// outcome is one target's run within All.
type outcome struct {
	name    string
	err     error
	seconds float64
	lines   []string // the target's summary lines
}

// SummaryLines picks a target's result lines from its output: every line
// that starts in the first column, except the first (each target's first
// line describes its set-up). Indented lines are per-repetition details.
func SummaryLines(out string) []string {
	var lines []string
	for i, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if i == 0 || strings.TrimSpace(l) == "" || strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			continue
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	return lines
}

// All runs every target in turn, its output going to w as it comes, then
// writes one summary table. A failing target does not stop the others; All
// returns an error naming how many failed.
func All(ctx context.Context, w io.Writer, cfg AllConfig) error {
	var targs []string
	if cfg.Quick {
		targs = []string{"--quick"}
	}
	start := time.Now()
	var outs []outcome
	for _, t := range cfg.Targets {
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Fprintf(w, "\n=== exgrpo bench %s %s\n", t.Name, strings.Join(targs, " "))
		t0 := time.Now()
		var buf bytes.Buffer
		err := t.Run(ctx, io.MultiWriter(w, &buf), targs)
		o := outcome{name: t.Name, err: err, seconds: time.Since(t0).Seconds(), lines: SummaryLines(buf.String())}
		if err != nil {
			fmt.Fprintf(os.Stderr, "exgrpo bench %s: %v\n", t.Name, err)
		}
		outs = append(outs, o)
	}
	fmt.Fprintf(w, "\n## exgrpo bench all %s: %s UTC, commit %s, %d CPUs, GOMAXPROCS %d, %.0f s in all\n\n",
		cfg.Args, start.UTC().Format("2006-01-02 15:04"), cfg.Commit, runtime.NumCPU(), runtime.GOMAXPROCS(0), time.Since(start).Seconds())
	fmt.Fprintln(w, "| target | status | seconds | result (each target's summary lines; ratios are to the anchor measured in the same run) |")
	fmt.Fprintln(w, "|---|---|---|---|")
	failed := 0
	for _, o := range outs {
		status := "ok"
		if o.err != nil {
			status = "FAILED: " + strings.ReplaceAll(o.err.Error(), "|", "/")
			failed++
		}
		res := strings.ReplaceAll(strings.Join(o.lines, "<br>"), "|", "/")
		fmt.Fprintf(w, "| %s | %s | %.0f | %s |\n", o.name, status, o.seconds, res)
	}
	if failed > 0 {
		return fmt.Errorf("bench all: %d of %d targets failed", failed, len(outs))
	}
	return nil
}
