package verifier

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time this process has used (user + system). On a
// shared, loaded machine wall time per op mostly measures waiting for a
// core; answers per CPU-second is the per-core throughput.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportThroughput(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "answers/s")
	if cpu := cpuTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "answers/cpu-s")
	}
}

// BenchmarkTypicalBoxed measures answers graded per second on one core for
// typical short worked solutions ending in a boxed answer (the RL reward
// path). Goal: >= 20k answers/s per core.
func BenchmarkTypicalBoxed(b *testing.B) {
	items := TypicalItems()
	c, _ := Lookup("math")
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		it := items[i%len(items)]
		c.Check(it[0], it[1])
	}
	reportThroughput(b, cpu0)
}

// BenchmarkArith measures the built-in arithmetic checker.
func BenchmarkArith(b *testing.B) {
	c, _ := Lookup("arith")
	resp := "We add the tens and the ones: 37 + 48 = 85. So the answer is \\boxed{85}"
	b.ReportAllocs()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		c.Check("85", resp)
	}
	reportThroughput(b, cpu0)
}

// BenchmarkCorpus grades the whole corpus (mixed, long outputs included).
func BenchmarkCorpus(b *testing.B) {
	cases := loadCorpus(b)
	c, _ := Lookup("math")
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		tc := cases[i%len(cases)]
		c.Check(tc.Gold, tc.Prediction)
	}
	reportThroughput(b, cpu0)
}

// BenchmarkPathological reports the worst time per item over the
// pathological inputs of limits_test.go (target <= 50 ms).
func BenchmarkPathological(b *testing.B) {
	c, _ := Lookup("math")
	for name, in := range pathological() {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(in[1])))
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				c.Check(in[0], in[1])
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}
