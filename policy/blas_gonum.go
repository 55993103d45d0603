//go:build !openblas || !cgo

package policy

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// BLAS names the BLAS backend compiled in: "gonum" (pure Go, the default
// and the static build) or "openblas" (build tag openblas, cgo).
const BLAS = "gonum"

var gonumImpl gonum.Implementation

// sgemmPart computes c = a·b + beta·c for one slab of the output on the
// calling goroutine's behalf (gonum may still split large slabs itself).
// Row-major; tA / tB say that a is stored (k, m) and b is stored (n, k).
func sgemmPart(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if tA {
		ta = blas.Trans
	}
	if tB {
		tb = blas.Trans
	}
	gonumImpl.Sgemm(ta, tb, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
}
