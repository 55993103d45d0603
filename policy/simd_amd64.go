//go:build !noasm

package policy

//go:noescape
func expAVX(x *float32, n int)

//go:noescape
func dotRowsAVX(q, base *float32, stride, n, chunks int, out *float32)

//go:noescape
func sumRowsAVX(w, base *float32, stride, n, chunks int, out *float32)

//go:noescape
func geluAVX(out, in *float32, n int)

//go:noescape
func geluGradAVX(dinp, in, dout *float32, n int)
