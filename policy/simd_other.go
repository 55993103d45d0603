//go:build !amd64 || noasm

package policy

func expAVX(x *float32, n int)                                         { panic("policy: no assembly") }
func dotRowsAVX(q, base *float32, stride, n, chunks int, out *float32) { panic("policy: no assembly") }
func sumRowsAVX(w, base *float32, stride, n, chunks int, out *float32) { panic("policy: no assembly") }

func geluAVX(out, in *float32, n int)            { panic("policy: no assembly") }
func geluGradAVX(dinp, in, dout *float32, n int) { panic("policy: no assembly") }
