package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func init() {
	registerBench("all", "every other benchmark target in turn (--quick: their short forms, about 10 minutes), then one summary table", runBenchAll)
}

// benchCPU is the process's user+system CPU time so far.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchOutcome is one target's run within `bench all`.
type benchOutcome struct {
	name    string
	err     error
	seconds float64
	lines   []string // the target's summary lines
}

// summaryLines picks a target's result lines from its output: every line
// that starts in the first column, except the first (each target's first
// line describes its set-up). Indented lines are per-repetition details.
func summaryLines(out string) []string {
	var lines []string
	for i, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if i == 0 || strings.TrimSpace(l) == "" || strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			continue
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	return lines
}

// captureStdout runs f with os.Stdout going both to the real stdout and to
// the returned string.
func captureStdout(f func() error) (string, error) {
	real := os.Stdout
	r, w, err := os.Pipe()
	if err != nil {
		return "", f()
	}
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.MultiWriter(real, &buf), r)
		close(done)
	}()
	os.Stdout = w
	ferr := f()
	os.Stdout = real
	w.Close()
	<-done
	r.Close()
	return buf.String(), ferr
}

func runBenchAll(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench all", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "every target's short form (--quick)")
	skip := fs.String("skip", "", "comma-separated targets to leave out")
	only := fs.String("only", "", "comma-separated targets to run (default all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	skipped := map[string]bool{"all": true}
	for _, n := range expList(*skip) {
		skipped[n] = true
	}
	var names []string
	if *only != "" {
		for _, n := range expList(*only) {
			if _, ok := benchmarks[n]; !ok || n == "all" {
				return fmt.Errorf("%w: --only: unknown benchmark %q (see exgrpo bench -h)", errUsage, n)
			}
			names = append(names, n)
		}
	} else {
		for _, n := range benchNames() {
			if !skipped[n] {
				names = append(names, n)
			}
		}
	}
	var targs []string
	if *quick {
		targs = []string{"--quick"}
	}
	start := time.Now()
	var outs []benchOutcome
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		fmt.Printf("\n=== exgrpo bench %s %s\n", n, strings.Join(targs, " "))
		t0 := time.Now()
		out, err := captureStdout(func() error { return benchmarks[n].run(ctx, targs) })
		o := benchOutcome{name: n, err: err, seconds: time.Since(t0).Seconds(), lines: summaryLines(out)}
		if err != nil {
			fmt.Fprintf(os.Stderr, "exgrpo bench %s: %v\n", n, err)
		}
		outs = append(outs, o)
	}
	fmt.Printf("\n## exgrpo bench all %s: %s UTC, commit %s, %d CPUs, GOMAXPROCS %d, %.0f s in all\n\n",
		strings.Join(args, " "), start.UTC().Format("2006-01-02 15:04"), buildCommit(), runtime.NumCPU(), runtime.GOMAXPROCS(0), time.Since(start).Seconds())
	fmt.Println("| target | status | seconds | result (each target's summary lines; ratios are to the anchor measured in the same run) |")
	fmt.Println("|---|---|---|---|")
	failed := 0
	for _, o := range outs {
		status := "ok"
		if o.err != nil {
			status = "FAILED: " + strings.ReplaceAll(o.err.Error(), "|", "/")
			failed++
		}
		res := strings.ReplaceAll(strings.Join(o.lines, "<br>"), "|", "/")
		fmt.Printf("| %s | %s | %.0f | %s |\n", o.name, status, o.seconds, res)
	}
	if failed > 0 {
		return fmt.Errorf("bench all: %d of %d targets failed", failed, len(outs))
	}
	return nil
}
