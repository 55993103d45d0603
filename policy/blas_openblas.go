//go:build openblas && cgo

package policy

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
*/
import "C"

import "unsafe"

// BLAS names the matrix-product backend compiled in: "gonum" (pure Go, the
// default and the static build) or "openblas" (build tag openblas, cgo).
const BLAS = "openblas"

func init() {
	// sgemm splits work over goroutines itself; OpenBLAS threads on top of
	// that would oversubscribe the cores.
	C.openblas_set_num_threads(1)
}

// sgemmPart computes c = a·b + beta·c for one slab of the output on the
// calling goroutine. Row-major; tA / tB say that a is stored (k, m) and b is
// stored (n, k).
func sgemmPart(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := uint32(C.CblasNoTrans), uint32(C.CblasNoTrans)
	if tA {
		ta = C.CblasTrans
	}
	if tB {
		tb = C.CblasTrans
	}
	if k == 0 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				row[j] *= beta
			}
		}
		return
	}
	C.cblas_sgemm(C.CblasRowMajor, ta, tb, C.blasint(m), C.blasint(n), C.blasint(k), 1,
		(*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb), C.float(beta),
		(*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
}
