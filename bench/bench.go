// Package bench holds the harnesses behind `exgrpo bench <target>`: each
// measures one part of the system against its anchor, measured in the same
// run, and prints its set-up on the first line and its result lines after
// it (lines in the first column; indented lines are per-repetition details).
//
// One file per target: a Config with its Default and a function
// Target(ctx, w, cfg) that writes to w. cmd/exgrpo only turns flags into a
// Config and calls it. The PyTorch reference scripts live in bench/pytorch.
package bench

import (
	"errors"
	"syscall"
	"time"
)

// ErrConfig marks a benchmark configuration that cannot run (the command
// line's fault); test with errors.Is.
var ErrConfig = errors.New("bench: bad configuration")

// processCPU is this process's user+system CPU time so far. Per-core figures
// are per CPU-second: on a shared machine wall time also counts waiting for
// a core.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
