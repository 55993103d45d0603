//go:build !noasm

package policy

import "golang.org/x/sys/cpu"

// haveKernel reports whether the assembly register-tile kernel can run here.
var haveKernel = cpu.X86.HasAVX2 && cpu.X86.HasFMA

//go:noescape
func sgemmKernel6x16(k int, a, b, c *float32, ldc int)

//go:noescape
func sgemmKernel6x16S(k int, a *float32, rs, cs int, b, c *float32, ldc int)
