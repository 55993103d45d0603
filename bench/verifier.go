package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"time"

	"github.com/exgrpo/exgrpo/verifier"
)

// verifierGoal is the anchor of issue 3: answers per second per core on
// typical boxed answers.
const verifierGoal = 20000

// VerifierConfig is `exgrpo bench verifier`.
type VerifierConfig struct {
	Seconds float64 // wall seconds per throughput measurement
	Quick   bool    // short run (0.3 s per measurement, one pass over the stress items)
}

// DefaultVerifier is the configuration BENCHMARKS.md reports.
func DefaultVerifier() VerifierConfig { return VerifierConfig{Seconds: 2} }

// Verifier measures answers/s per core on typical boxed answers (goal 20k)
// and the worst-case CPU time per item (bound 50 ms).
func Verifier(ctx context.Context, w io.Writer, cfg VerifierConfig) error {
	if cfg.Quick {
		cfg.Seconds = 0.3
	}
	// One goroutine grades; pin it so the CPU time is one core's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	math, _ := verifier.Lookup("math")
	arith, _ := verifier.Lookup("arith")
	typical := verifier.TypicalItems()
	arithItems := [][2]string{{"85", "We add the tens and the ones: 37 + 48 = 85. So the answer is \\boxed{85}"},
		{"-12", "Subtract: 5 - 17 = -12, so \\boxed{-12}"}, {"7", "7 * 1 = 7 \\boxed{8}"}}

	type row struct {
		name         string
		n            int
		wall, cpu    time.Duration
		perCPUSecond float64
	}
	measure := func(name string, c verifier.Checker, items [][2]string) (row, error) {
		deadline := time.Now().Add(time.Duration(cfg.Seconds * float64(time.Second)))
		cpu0, t0 := processCPU(), time.Now()
		n := 0
		for time.Now().Before(deadline) {
			if err := ctx.Err(); err != nil {
				return row{}, err
			}
			for i := 0; i < 256; i++ {
				it := items[n%len(items)]
				c.Check(it[0], it[1])
				n++
			}
		}
		r := row{name: name, n: n, wall: time.Since(t0), cpu: processCPU() - cpu0}
		if r.cpu > 0 {
			r.perCPUSecond = float64(n) / r.cpu.Seconds()
		}
		return r, nil
	}
	var rows []row
	for _, m := range []struct {
		name  string
		c     verifier.Checker
		items [][2]string
	}{{"math, typical boxed", math, typical}, {"arith", arith, arithItems}} {
		r, err := measure(m.name, m.c, m.items)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	fmt.Fprintf(w, "verifier throughput (one goroutine, GOMAXPROCS=%d, %s)\n", runtime.GOMAXPROCS(0), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(w, "%-22s %10s %14s %14s %10s\n", "checker", "answers", "answers/s", "answers/cpu-s", "vs 20k")
	for _, r := range rows {
		fmt.Fprintf(w, "%-22s %10d %14.0f %14.0f %9.1fx\n", r.name, r.n, float64(r.n)/r.wall.Seconds(), r.perCPUSecond, r.perCPUSecond/verifierGoal)
	}

	// Worst case per item over the stress inputs (CPU time of one Check).
	stress := verifier.StressItems()
	names := make([]string, 0, len(stress))
	for k := range stress {
		names = append(names, k)
	}
	sort.Strings(names)
	reps := 3
	if cfg.Quick {
		reps = 1
	}
	var worst time.Duration
	worstName := ""
	fmt.Fprintf(w, "\nstress items, math checker (CPU ms per item, best of %d; bound 50 ms)\n", reps)
	for _, name := range names {
		in := stress[name]
		best := time.Duration(1 << 62)
		var reason string
		for i := 0; i < reps; i++ {
			c0 := processCPU()
			v := math.Check(in[0], in[1])
			reason = v.Reason
			if d := processCPU() - c0; d < best {
				best = d
			}
		}
		fmt.Fprintf(w, "  %-26s %8.2f ms  %s\n", name, float64(best.Microseconds())/1000, reason)
		if best > worst {
			worst, worstName = best, name
		}
	}
	fmt.Fprintf(w, "worst: %s %.2f ms (%.2fx of the 50 ms bound)\n", worstName, float64(worst.Microseconds())/1000, worst.Seconds()/0.05)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	_ = os.Stdout.Sync()
	return nil
}
