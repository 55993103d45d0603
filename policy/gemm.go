package policy

import "sync"

// The built-in matrix product (used when the CPU has AVX2 and FMA, unless
// built with the openblas tag): the classic packed GEMM. op(B) is packed
// once into panels of 16 columns, split along k into chunks that stay in L2;
// for each block of 6 rows of op(A), a (kc, 6) panel is packed and the
// assembly kernel multiplies it with every B panel, adding a 6×16 tile into
// C. Each element of C is accumulated in the same order (k chunk by k chunk)
// whatever the row count or the split over goroutines, so a row's result
// does not depend on which batch it was computed in.

const (
	tileM = 6  // rows of a register tile
	tileN = 16 // columns of a register tile
)

// packedB is op(B) (k, n) in kernel order: for the k chunk starting at k0
// with length kl, panel p (columns 16p…16p+15, zero padded) is the kl·16
// floats at k0·panels·16 + p·kl·16.
type packedB struct {
	k, n, kc, panels int
	data             []float32
}

// chunkK is the k chunk length for n columns: a chunk of all panels should
// stay within about 256 KiB of L2.
func chunkK(k, n int) int {
	np := (n + tileN - 1) / tileN * tileN
	kc := min(512, max(64, (1<<16)/np))
	return min(k, kc)
}

// packB packs op(B) (k, n); tB means b is stored (n, k).
func packB(tB bool, k, n int, b []float32, ldb int, dst []float32) packedB {
	pb := packedB{k: k, n: n, kc: chunkK(k, n), panels: (n + tileN - 1) / tileN}
	size := k * pb.panels * tileN
	if cap(dst) < size {
		dst = make([]float32, size)
	}
	pb.data = dst[:size]
	for k0 := 0; k0 < k; k0 += pb.kc {
		kl := min(pb.kc, k-k0)
		for p := 0; p < pb.panels; p++ {
			panel := pb.data[k0*pb.panels*tileN+p*kl*tileN : k0*pb.panels*tileN+(p+1)*kl*tileN]
			j0 := p * tileN
			nj := min(tileN, n-j0)
			if tB {
				for jj := 0; jj < tileN; jj++ {
					if jj >= nj {
						for kk := 0; kk < kl; kk++ {
							panel[kk*tileN+jj] = 0
						}
						continue
					}
					row := b[(j0+jj)*ldb+k0 : (j0+jj)*ldb+k0+kl]
					for kk, v := range row {
						panel[kk*tileN+jj] = v
					}
				}
			} else {
				for kk := 0; kk < kl; kk++ {
					dst := panel[kk*tileN : kk*tileN+tileN]
					copy(dst, b[(k0+kk)*ldb+j0:(k0+kk)*ldb+j0+nj])
					clear(dst[nj:])
				}
			}
		}
	}
	return pb
}

var packPool = sync.Pool{New: func() any { return new([]float32) }}

// gemmPacked computes rows [r0, r1) and panels [p0, p1) of
// c = op(a)·B + beta·c with B packed; tA means a is stored (k, m).
func gemmPacked(tA bool, k int, a []float32, lda int, pb *packedB, beta float32, c []float32, ldc int, r0, r1, p0, p1 int) {
	n := pb.n
	c0, c1 := p0*tileN, min(p1*tileN, n)
	if beta != 1 {
		for i := r0; i < r1; i++ {
			row := c[i*ldc+c0 : i*ldc+c1]
			if beta == 0 {
				clear(row)
			} else {
				for j := range row {
					row[j] *= beta
				}
			}
		}
	}
	if k == 0 {
		return
	}
	var apack [tileM * 512]float32 // (kc, 6), kc ≤ 512
	var tile [tileM * tileN]float32
	for k0 := 0; k0 < k; k0 += pb.kc {
		kl := min(pb.kc, k-k0)
		bchunk := pb.data[k0*pb.panels*tileN:]
		for i := r0; i < r1; i += tileM {
			mi := min(tileM, r1-i)
			// Full row blocks read A in place; the last, short one is
			// packed with zero rows.
			var ap []float32
			var a0 *float32
			rs, cs := lda, 1
			if tA {
				rs, cs = 1, lda
			}
			if mi == tileM {
				// bounds of the block the kernel reads, checked here
				if tA {
					_ = a[(k0+kl-1)*lda+i+tileM-1]
					a0 = &a[k0*lda+i]
				} else {
					_ = a[(i+tileM-1)*lda+k0+kl-1]
					a0 = &a[i*lda+k0]
				}
			} else {
				ap = apack[:kl*tileM]
				clear(ap)
				if tA {
					for kk := 0; kk < kl; kk++ {
						copy(ap[kk*tileM:kk*tileM+mi], a[(k0+kk)*lda+i:(k0+kk)*lda+i+mi])
					}
				} else {
					for ii := 0; ii < mi; ii++ {
						row := a[(i+ii)*lda+k0 : (i+ii)*lda+k0+kl]
						for kk, v := range row {
							ap[kk*tileM+ii] = v
						}
					}
				}
			}
			for p := p0; p < p1; p++ {
				j := p * tileN
				nj := min(tileN, n-j)
				bp := &bchunk[p*kl*tileN]
				_ = bchunk[(p+1)*kl*tileN-1]
				if mi == tileM && nj == tileN {
					_ = c[(i+tileM-1)*ldc+j+tileN-1]
					sgemmKernel6x16S(kl, a0, rs, cs, bp, &c[i*ldc+j], ldc)
					continue
				}
				clear(tile[:])
				if ap == nil {
					sgemmKernel6x16S(kl, a0, rs, cs, bp, &tile[0], tileN)
				} else {
					sgemmKernel6x16(kl, &ap[0], bp, &tile[0], tileN)
				}
				for ii := 0; ii < mi; ii++ {
					row := c[(i+ii)*ldc+j : (i+ii)*ldc+j+nj]
					for jj := range row {
						row[jj] += tile[ii*tileN+jj]
					}
				}
			}
		}
	}
}

// gemmKernel runs c = op(a)·B + beta·c with B packed, over the workers:
// slabs of whole row tiles when there are enough rows, else slabs of panels.
func gemmKernel(tA bool, m, k int, a []float32, lda int, pb *packedB, beta float32, c []float32, ldc int) {
	w := workers()
	if w <= 1 || 2*m*pb.n*k < sgemmParallelFlops {
		gemmPacked(tA, k, a, lda, pb, beta, c, ldc, 0, m, 0, pb.panels)
		return
	}
	rowTiles := (m + tileM - 1) / tileM
	var wg sync.WaitGroup
	if rowTiles >= 2*w || rowTiles >= pb.panels {
		w = min(w, rowTiles)
		wg.Add(w)
		for s := range w {
			r0, r1 := s*rowTiles/w*tileM, min((s+1)*rowTiles/w*tileM, m)
			go func() {
				defer wg.Done()
				gemmPacked(tA, k, a, lda, pb, beta, c, ldc, r0, r1, 0, pb.panels)
			}()
		}
	} else {
		w = min(w, pb.panels)
		wg.Add(w)
		for s := range w {
			p0, p1 := s*pb.panels/w, (s+1)*pb.panels/w
			go func() {
				defer wg.Done()
				gemmPacked(tA, k, a, lda, pb, beta, c, ldc, 0, m, p0, p1)
			}()
		}
	}
	wg.Wait()
}
