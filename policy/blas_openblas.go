//go:build openblas && cgo

package policy

import "github.com/exgrpo/exgrpo/policy/internal/openblas"

// BLAS names the BLAS backend compiled in: "gonum" (pure Go, the default
// and the static build) or "openblas" (build tag openblas, cgo).
const BLAS = "openblas"

// sgemmPart computes c = a·b + beta·c for one slab of the output on the
// calling goroutine. Row-major; tA / tB say that a is stored (k, m) and b is
// stored (n, k).
func sgemmPart(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	openblas.Sgemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc)
}
