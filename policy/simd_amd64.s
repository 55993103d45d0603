//go:build !noasm

#include "textflag.h"

// AVX2/FMA loops for the parts of the transformer that are not matrix
// products: exp (softmax, GELU) and the per-head attention rows. The Go
// versions in simd.go define what each computes.

DATA expHi<>+0(SB)/4, $0x42b0c0a5
DATA expHi<>+4(SB)/4, $0x42b0c0a5
DATA expHi<>+8(SB)/4, $0x42b0c0a5
DATA expHi<>+12(SB)/4, $0x42b0c0a5
DATA expHi<>+16(SB)/4, $0x42b0c0a5
DATA expHi<>+20(SB)/4, $0x42b0c0a5
DATA expHi<>+24(SB)/4, $0x42b0c0a5
DATA expHi<>+28(SB)/4, $0x42b0c0a5
GLOBL expHi<>(SB), RODATA|NOPTR, $32
DATA expLo<>+0(SB)/4, $0xc2aeac50
DATA expLo<>+4(SB)/4, $0xc2aeac50
DATA expLo<>+8(SB)/4, $0xc2aeac50
DATA expLo<>+12(SB)/4, $0xc2aeac50
DATA expLo<>+16(SB)/4, $0xc2aeac50
DATA expLo<>+20(SB)/4, $0xc2aeac50
DATA expLo<>+24(SB)/4, $0xc2aeac50
DATA expLo<>+28(SB)/4, $0xc2aeac50
GLOBL expLo<>(SB), RODATA|NOPTR, $32
DATA expLog2e<>+0(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+4(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+8(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+12(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+16(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+20(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+24(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+28(SB)/4, $0x3fb8aa3b
GLOBL expLog2e<>(SB), RODATA|NOPTR, $32
DATA expC1<>+0(SB)/4, $0x3f318000
DATA expC1<>+4(SB)/4, $0x3f318000
DATA expC1<>+8(SB)/4, $0x3f318000
DATA expC1<>+12(SB)/4, $0x3f318000
DATA expC1<>+16(SB)/4, $0x3f318000
DATA expC1<>+20(SB)/4, $0x3f318000
DATA expC1<>+24(SB)/4, $0x3f318000
DATA expC1<>+28(SB)/4, $0x3f318000
GLOBL expC1<>(SB), RODATA|NOPTR, $32
DATA expC2<>+0(SB)/4, $0xb95e8083
DATA expC2<>+4(SB)/4, $0xb95e8083
DATA expC2<>+8(SB)/4, $0xb95e8083
DATA expC2<>+12(SB)/4, $0xb95e8083
DATA expC2<>+16(SB)/4, $0xb95e8083
DATA expC2<>+20(SB)/4, $0xb95e8083
DATA expC2<>+24(SB)/4, $0xb95e8083
DATA expC2<>+28(SB)/4, $0xb95e8083
GLOBL expC2<>(SB), RODATA|NOPTR, $32
DATA expP0<>+0(SB)/4, $0x39506967
DATA expP0<>+4(SB)/4, $0x39506967
DATA expP0<>+8(SB)/4, $0x39506967
DATA expP0<>+12(SB)/4, $0x39506967
DATA expP0<>+16(SB)/4, $0x39506967
DATA expP0<>+20(SB)/4, $0x39506967
DATA expP0<>+24(SB)/4, $0x39506967
DATA expP0<>+28(SB)/4, $0x39506967
GLOBL expP0<>(SB), RODATA|NOPTR, $32
DATA expP1<>+0(SB)/4, $0x3ab743ce
DATA expP1<>+4(SB)/4, $0x3ab743ce
DATA expP1<>+8(SB)/4, $0x3ab743ce
DATA expP1<>+12(SB)/4, $0x3ab743ce
DATA expP1<>+16(SB)/4, $0x3ab743ce
DATA expP1<>+20(SB)/4, $0x3ab743ce
DATA expP1<>+24(SB)/4, $0x3ab743ce
DATA expP1<>+28(SB)/4, $0x3ab743ce
GLOBL expP1<>(SB), RODATA|NOPTR, $32
DATA expP2<>+0(SB)/4, $0x3c088908
DATA expP2<>+4(SB)/4, $0x3c088908
DATA expP2<>+8(SB)/4, $0x3c088908
DATA expP2<>+12(SB)/4, $0x3c088908
DATA expP2<>+16(SB)/4, $0x3c088908
DATA expP2<>+20(SB)/4, $0x3c088908
DATA expP2<>+24(SB)/4, $0x3c088908
DATA expP2<>+28(SB)/4, $0x3c088908
GLOBL expP2<>(SB), RODATA|NOPTR, $32
DATA expP3<>+0(SB)/4, $0x3d2aa9c1
DATA expP3<>+4(SB)/4, $0x3d2aa9c1
DATA expP3<>+8(SB)/4, $0x3d2aa9c1
DATA expP3<>+12(SB)/4, $0x3d2aa9c1
DATA expP3<>+16(SB)/4, $0x3d2aa9c1
DATA expP3<>+20(SB)/4, $0x3d2aa9c1
DATA expP3<>+24(SB)/4, $0x3d2aa9c1
DATA expP3<>+28(SB)/4, $0x3d2aa9c1
GLOBL expP3<>(SB), RODATA|NOPTR, $32
DATA expP4<>+0(SB)/4, $0x3e2aaaaa
DATA expP4<>+4(SB)/4, $0x3e2aaaaa
DATA expP4<>+8(SB)/4, $0x3e2aaaaa
DATA expP4<>+12(SB)/4, $0x3e2aaaaa
DATA expP4<>+16(SB)/4, $0x3e2aaaaa
DATA expP4<>+20(SB)/4, $0x3e2aaaaa
DATA expP4<>+24(SB)/4, $0x3e2aaaaa
DATA expP4<>+28(SB)/4, $0x3e2aaaaa
GLOBL expP4<>(SB), RODATA|NOPTR, $32
DATA expP5<>+0(SB)/4, $0x3f000000
DATA expP5<>+4(SB)/4, $0x3f000000
DATA expP5<>+8(SB)/4, $0x3f000000
DATA expP5<>+12(SB)/4, $0x3f000000
DATA expP5<>+16(SB)/4, $0x3f000000
DATA expP5<>+20(SB)/4, $0x3f000000
DATA expP5<>+24(SB)/4, $0x3f000000
DATA expP5<>+28(SB)/4, $0x3f000000
GLOBL expP5<>(SB), RODATA|NOPTR, $32
DATA expOne<>+0(SB)/4, $0x3f800000
DATA expOne<>+4(SB)/4, $0x3f800000
DATA expOne<>+8(SB)/4, $0x3f800000
DATA expOne<>+12(SB)/4, $0x3f800000
DATA expOne<>+16(SB)/4, $0x3f800000
DATA expOne<>+20(SB)/4, $0x3f800000
DATA expOne<>+24(SB)/4, $0x3f800000
DATA expOne<>+28(SB)/4, $0x3f800000
GLOBL expOne<>(SB), RODATA|NOPTR, $32
DATA exp127<>+0(SB)/4, $0x0000007f
DATA exp127<>+4(SB)/4, $0x0000007f
DATA exp127<>+8(SB)/4, $0x0000007f
DATA exp127<>+12(SB)/4, $0x0000007f
DATA exp127<>+16(SB)/4, $0x0000007f
DATA exp127<>+20(SB)/4, $0x0000007f
DATA exp127<>+24(SB)/4, $0x0000007f
DATA exp127<>+28(SB)/4, $0x0000007f
GLOBL exp127<>(SB), RODATA|NOPTR, $32

DATA geluK<>+0(SB)/4, $0x3d372713
DATA geluK<>+4(SB)/4, $0x3d372713
DATA geluK<>+8(SB)/4, $0x3d372713
DATA geluK<>+12(SB)/4, $0x3d372713
DATA geluK<>+16(SB)/4, $0x3d372713
DATA geluK<>+20(SB)/4, $0x3d372713
DATA geluK<>+24(SB)/4, $0x3d372713
DATA geluK<>+28(SB)/4, $0x3d372713
GLOBL geluK<>(SB), RODATA|NOPTR, $32
DATA geluK3<>+0(SB)/4, $0x3e095d4f
DATA geluK3<>+4(SB)/4, $0x3e095d4f
DATA geluK3<>+8(SB)/4, $0x3e095d4f
DATA geluK3<>+12(SB)/4, $0x3e095d4f
DATA geluK3<>+16(SB)/4, $0x3e095d4f
DATA geluK3<>+20(SB)/4, $0x3e095d4f
DATA geluK3<>+24(SB)/4, $0x3e095d4f
DATA geluK3<>+28(SB)/4, $0x3e095d4f
GLOBL geluK3<>(SB), RODATA|NOPTR, $32
DATA geluM2S<>+0(SB)/4, $0xbfcc422a
DATA geluM2S<>+4(SB)/4, $0xbfcc422a
DATA geluM2S<>+8(SB)/4, $0xbfcc422a
DATA geluM2S<>+12(SB)/4, $0xbfcc422a
DATA geluM2S<>+16(SB)/4, $0xbfcc422a
DATA geluM2S<>+20(SB)/4, $0xbfcc422a
DATA geluM2S<>+24(SB)/4, $0xbfcc422a
DATA geluM2S<>+28(SB)/4, $0xbfcc422a
GLOBL geluM2S<>(SB), RODATA|NOPTR, $32
DATA gelu2S<>+0(SB)/4, $0x3fcc422a
DATA gelu2S<>+4(SB)/4, $0x3fcc422a
DATA gelu2S<>+8(SB)/4, $0x3fcc422a
DATA gelu2S<>+12(SB)/4, $0x3fcc422a
DATA gelu2S<>+16(SB)/4, $0x3fcc422a
DATA gelu2S<>+20(SB)/4, $0x3fcc422a
DATA gelu2S<>+24(SB)/4, $0x3fcc422a
DATA gelu2S<>+28(SB)/4, $0x3fcc422a
GLOBL gelu2S<>(SB), RODATA|NOPTR, $32

// EXPY0 sets Y0 = exp(Y0) (as expAVX), clobbering Y1, Y2, Y3.
#define EXPY0 \
	VMINPS  expHi<>(SB), Y0, Y0; \
	VMAXPS  expLo<>(SB), Y0, Y0; \
	VMULPS  expLog2e<>(SB), Y0, Y1; \
	VROUNDPS $0, Y1, Y1; \
	VFNMADD231PS expC1<>(SB), Y1, Y0; \
	VFNMADD231PS expC2<>(SB), Y1, Y0; \
	VMULPS  Y0, Y0, Y2; \
	VMOVUPS expP0<>(SB), Y3; \
	VFMADD213PS expP1<>(SB), Y0, Y3; \
	VFMADD213PS expP2<>(SB), Y0, Y3; \
	VFMADD213PS expP3<>(SB), Y0, Y3; \
	VFMADD213PS expP4<>(SB), Y0, Y3; \
	VFMADD213PS expP5<>(SB), Y0, Y3; \
	VFMADD213PS Y0, Y2, Y3; \
	VADDPS  expOne<>(SB), Y3, Y3; \
	VCVTPS2DQ Y1, Y1; \
	VPADDD  exp127<>(SB), Y1, Y1; \
	VPSLLD  $23, Y1, Y1; \
	VMULPS  Y1, Y3, Y0

// func expAVX(x *float32, n int)
// x[i] = exp(x[i]) in place for n a multiple of 8: Cephes' expf (range
// reduction by ln 2 in two parts, degree-5 polynomial, 2^n by exponent bits).
TEXT ·expAVX(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	SHRQ $3, CX
	JZ   expdone

exploop:
	VMOVUPS (SI), Y0
	VMINPS  expHi<>(SB), Y0, Y0
	VMAXPS  expLo<>(SB), Y0, Y0
	VMULPS  expLog2e<>(SB), Y0, Y1
	VROUNDPS $0, Y1, Y1
	VFNMADD231PS expC1<>(SB), Y1, Y0
	VFNMADD231PS expC2<>(SB), Y1, Y0
	VMULPS  Y0, Y0, Y2
	VMOVUPS expP0<>(SB), Y3
	VFMADD213PS expP1<>(SB), Y0, Y3
	VFMADD213PS expP2<>(SB), Y0, Y3
	VFMADD213PS expP3<>(SB), Y0, Y3
	VFMADD213PS expP4<>(SB), Y0, Y3
	VFMADD213PS expP5<>(SB), Y0, Y3
	VFMADD213PS Y0, Y2, Y3
	VADDPS  expOne<>(SB), Y3, Y3
	VCVTPS2DQ Y1, Y1
	VPADDD  exp127<>(SB), Y1, Y1
	VPSLLD  $23, Y1, Y1
	VMULPS  Y1, Y3, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	DECQ CX
	JNZ  exploop

expdone:
	VZEROUPPER
	RET

// func dotRowsAVX(q, base *float32, stride, n, chunks int, out *float32)
// out[t] = q · base[t·stride : t·stride+8·chunks] for t < n. Rows go four
// at a time (four accumulators reduced together with horizontal adds), the
// last n mod 4 one at a time; a row's result depends only on n and t.
TEXT ·dotRowsAVX(SB), NOSPLIT, $0-48
	MOVQ q+0(FP), SI
	MOVQ base+8(FP), DI
	MOVQ stride+16(FP), R8
	SHLQ $2, R8
	MOVQ n+24(FP), CX
	MOVQ chunks+32(FP), R9
	MOVQ out+40(FP), DX

dot4:
	CMPQ CX, $4
	JLT  dot1
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ R9, R10
	MOVQ SI, R11
	MOVQ DI, R12
	LEAQ (DI)(R8*2), R13
	ADDQ R8, R13

dot4chunk:
	VMOVUPS (R11), Y4
	VFMADD231PS (R12), Y4, Y0
	VFMADD231PS (R12)(R8*1), Y4, Y1
	VFMADD231PS (R12)(R8*2), Y4, Y2
	VFMADD231PS (R13), Y4, Y3
	ADDQ $32, R11
	ADDQ $32, R12
	ADDQ $32, R13
	DECQ R10
	JNZ  dot4chunk
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVUPS X0, (DX)
	ADDQ $16, DX
	LEAQ (DI)(R8*4), DI
	SUBQ $4, CX
	JMP  dot4

dot1:
	TESTQ CX, CX
	JZ   dotdone

dotrow:
	VXORPS Y0, Y0, Y0
	MOVQ R9, R10
	MOVQ SI, R11
	MOVQ DI, R12

dotchunk:
	VMOVUPS (R11), Y1
	VFMADD231PS (R12), Y1, Y0
	ADDQ $32, R11
	ADDQ $32, R12
	DECQ R10
	JNZ  dotchunk
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VADDPS X1, X0, X0
	VMOVSHDUP X0, X1
	VADDSS X1, X0, X0
	VMOVSS X0, (DX)
	ADDQ $4, DX
	ADDQ R8, DI
	DECQ CX
	JNZ  dotrow

dotdone:
	VZEROUPPER
	RET

// func sumRowsAVX(w, base *float32, stride, n, chunks int, out *float32)
// out[j] += Σ_t w[t]·base[t·stride+j] for j < 8·chunks, t < n, n ≥ 1;
// even and odd rows go to separate accumulators (added at the end).
TEXT ·sumRowsAVX(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), SI
	MOVQ base+8(FP), DI
	MOVQ stride+16(FP), R8
	SHLQ $2, R8
	MOVQ n+24(FP), CX
	MOVQ chunks+32(FP), R9
	MOVQ out+40(FP), DX

sumchunk:
	VMOVUPS (DX), Y0
	VXORPS  Y1, Y1, Y1
	MOVQ CX, R10
	MOVQ SI, R12
	MOVQ DI, R11
	SHRQ $1, R10
	JZ   sumtail

sumpair:
	VBROADCASTSS (R12), Y2
	VFMADD231PS (R11), Y2, Y0
	ADDQ R8, R11
	VBROADCASTSS 4(R12), Y3
	VFMADD231PS (R11), Y3, Y1
	ADDQ R8, R11
	ADDQ $8, R12
	DECQ R10
	JNZ  sumpair

sumtail:
	TESTQ $1, CX
	JZ   sumstore
	VBROADCASTSS (R12), Y2
	VFMADD231PS (R11), Y2, Y0

sumstore:
	VADDPS Y1, Y0, Y0
	VMOVUPS Y0, (DX)
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ R9
	JNZ  sumchunk
	VZEROUPPER
	RET

// func geluAVX(out, in *float32, n int)
// out = x·sigmoid(2u) = x / (1 + exp(−2u)), u = √(2/π)(x + 0.044715x³),
// which equals GPT-2's tanh GELU; n a multiple of 8.
TEXT ·geluAVX(SB), NOSPLIT, $0-24
	MOVQ out+0(FP), DI
	MOVQ in+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ   geludone

geluloop:
	VMOVUPS (SI), Y4
	VMULPS  Y4, Y4, Y5
	VMULPS  Y4, Y5, Y5
	VMOVAPS Y4, Y6
	VFMADD231PS geluK<>(SB), Y5, Y6
	VMULPS  geluM2S<>(SB), Y6, Y0
	EXPY0
	VADDPS  expOne<>(SB), Y0, Y0
	VDIVPS  Y0, Y4, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  geluloop

geludone:
	VZEROUPPER
	RET

// func geluGradAVX(dinp, in, dout *float32, n int)
// dinp = dout·(s + 2√(2/π)·x·s(1−s)(1 + 3·0.044715x²)), s = sigmoid(2u);
// dinp may alias dout; n a multiple of 8.
TEXT ·geluGradAVX(SB), NOSPLIT, $0-32
	MOVQ dinp+0(FP), DI
	MOVQ in+8(FP), SI
	MOVQ dout+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $3, CX
	JZ   gradone

graloop:
	VMOVUPS (SI), Y4
	VMULPS  Y4, Y4, Y5
	VMULPS  Y4, Y5, Y6
	VFMADD132PS geluK<>(SB), Y4, Y6
	VMULPS  geluM2S<>(SB), Y6, Y0
	EXPY0
	VMOVUPS expOne<>(SB), Y7
	VADDPS  Y7, Y0, Y0
	VDIVPS  Y0, Y7, Y0
	VSUBPS  Y0, Y7, Y8
	VFMADD132PS geluK3<>(SB), Y7, Y5
	VMULPS  gelu2S<>(SB), Y5, Y5
	VMULPS  Y4, Y5, Y5
	VMULPS  Y0, Y5, Y5
	VMULPS  Y8, Y5, Y5
	VADDPS  Y0, Y5, Y5
	VMULPS  (DX), Y5, Y5
	VMOVUPS Y5, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	ADDQ $32, DX
	DECQ CX
	JNZ  graloop

gradone:
	VZEROUPPER
	RET
