//go:build !amd64 || noasm

package policy

// haveKernel is false where there is no assembly kernel: products go to the
// BLAS backend.
const haveKernel = false

func sgemmKernel6x16(k int, a, b, c *float32, ldc int) { panic("policy: no assembly kernel") }

func sgemmKernel6x16S(k int, a *float32, rs, cs int, b, c *float32, ldc int) {
	panic("policy: no assembly kernel")
}
