package bench

import (
	"bytes"
	"context"
	"runtime/pprof"
	"testing"
	"time"
)

// TestLabelCPU profiles a busy loop under a label and one without: the
// parser must attribute most of the CPU to each where it ran.
func TestLabelCPU(t *testing.T) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		t.Skip("CPU profiling unavailable:", err)
	}
	spin := func(d time.Duration) {
		x := 0
		for end := time.Now().Add(d); time.Now().Before(end); {
			x++
		}
		_ = x
	}
	pprof.Do(context.Background(), pprof.Labels("role", "busy"), func(context.Context) {
		done := make(chan struct{})
		go func() { spin(300 * time.Millisecond); close(done) }() // inherits the label
		<-done
	})
	spin(100 * time.Millisecond)
	pprof.StopCPUProfile()
	cpu, n, err := labelCPU(buf.Bytes(), "role")
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Skipf("only %d samples (a loaded machine)", n)
	}
	busy, other := cpu["busy"], cpu[""]
	if busy < 2*other || busy < int64(150*time.Millisecond) || other == 0 {
		t.Fatalf("labelled %v, unlabelled %v over %d samples; want about 300 ms and 100 ms", time.Duration(busy), time.Duration(other), n)
	}
}
