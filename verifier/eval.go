package verifier

import (
	"hash/fnv"
	"math"
	"math/big"
	"math/cmplx"
)

// Limits on exact arithmetic: results beyond them fall back to floating
// point (and, beyond float range, to "cannot decide by value").
const (
	maxExactBits  = 1 << 16 // bits of a numerator or denominator
	maxFactorial  = 3000    // largest n for which n! is computed exactly
	maxPMVariants = 16      // ± expansions per answer
)

// exact evaluates n to an exact rational when it has no variables and only
// rational operations (integer powers, factorials, perfect-square roots).
// It returns nil when the value is not (provably) rational or too large.
func exact(n *node, bud *budget) *big.Rat {
	if n == nil || !bud.spend(1) {
		return nil
	}
	switch n.op {
	case opNum:
		return n.num
	case opNeg:
		a := exact(n.kids[0], bud)
		if a == nil {
			return nil
		}
		return new(big.Rat).Neg(a)
	case opAdd, opSub, opMul, opDiv:
		a := exact(n.kids[0], bud)
		if a == nil {
			return nil
		}
		b := exact(n.kids[1], bud)
		if b == nil {
			return nil
		}
		if !bud.spend((a.Num().BitLen() + a.Denom().BitLen() + b.Num().BitLen() + b.Denom().BitLen()) / 256) {
			return nil
		}
		r := new(big.Rat)
		switch n.op {
		case opAdd:
			r.Add(a, b)
		case opSub:
			r.Sub(a, b)
		case opMul:
			r.Mul(a, b)
		case opDiv:
			if b.Sign() == 0 {
				return nil
			}
			r.Quo(a, b)
		}
		if tooBig(r) {
			return nil
		}
		return r
	case opPow:
		a := exact(n.kids[0], bud)
		if a == nil {
			return nil
		}
		e := exact(n.kids[1], bud)
		if e == nil || !e.IsInt() || !e.Num().IsInt64() {
			return nil
		}
		k := e.Num().Int64()
		if k < 0 && a.Sign() == 0 {
			return nil
		}
		abs := k
		if abs < 0 {
			abs = -abs
		}
		bits := int64(a.Num().BitLen() + a.Denom().BitLen())
		if abs > maxExactBits || bits*abs > maxExactBits {
			return nil
		}
		if !bud.spend(int(bits*abs/64) + 1) {
			return nil
		}
		num := new(big.Int).Exp(a.Num(), big.NewInt(abs), nil)
		den := new(big.Int).Exp(a.Denom(), big.NewInt(abs), nil)
		if k < 0 {
			num, den = den, num
		}
		return new(big.Rat).SetFrac(num, den)
	case opFunc:
		switch n.name {
		case "fact":
			a := exact(n.kids[0], bud)
			if a == nil || !a.IsInt() || a.Sign() < 0 || !a.Num().IsInt64() || a.Num().Int64() > maxFactorial {
				return nil
			}
			k := a.Num().Int64()
			if !bud.spend(int(k*k/64) + 1) {
				return nil
			}
			f := new(big.Int).MulRange(1, k)
			if k == 0 {
				f.SetInt64(1)
			}
			return new(big.Rat).SetInt(f)
		case "abs":
			a := exact(n.kids[0], bud)
			if a == nil {
				return nil
			}
			return new(big.Rat).Abs(a)
		case "sqrt":
			a := exact(n.kids[0], bud)
			if a == nil || a.Sign() < 0 {
				return nil
			}
			rn, okn := exactSqrt(a.Num())
			rd, okd := exactSqrt(a.Denom())
			if !okn || !okd {
				return nil
			}
			return new(big.Rat).SetFrac(rn, rd)
		case "binom":
			a := exact(n.kids[0], bud)
			b := exact(n.kids[1], bud)
			if a == nil || b == nil || !a.IsInt() || !b.IsInt() || !a.Num().IsInt64() || !b.Num().IsInt64() {
				return nil
			}
			x, y := a.Num().Int64(), b.Num().Int64()
			if x < 0 || y < 0 || y > x || x > maxFactorial {
				return nil
			}
			return new(big.Rat).SetInt(new(big.Int).Binomial(x, y))
		}
	}
	return nil
}

func tooBig(r *big.Rat) bool {
	return r.Num().BitLen() > maxExactBits || r.Denom().BitLen() > maxExactBits
}

func exactSqrt(x *big.Int) (*big.Int, bool) {
	if x.Sign() < 0 {
		return nil, false
	}
	r := new(big.Int).Sqrt(x)
	return r, new(big.Int).Mul(r, r).Cmp(x) == 0
}

// point assigns values to variables for one evaluation. Values are a pure
// function of (seed, point index, variable name): both sides of a comparison
// see the same value for the same name.
type point struct {
	seed uint64
	k    int
	neg  bool // use negative values (the second pass that tells |x| from x)
}

func (pt point) value(name string) complex128 {
	h := fnv.New64a()
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(pt.seed >> (8 * i))
		b[8+i] = byte(uint64(pt.k) >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(name))
	u := float64(h.Sum64()>>11) / float64(1<<53) // [0,1)
	v := 0.6 + 1.8*u                             // [0.6, 2.4): away from 0, 1 and branch cuts
	if pt.neg {
		v = -v
	}
	return complex(v, 0)
}

// evalC evaluates n at a point in complex arithmetic (principal branches),
// so that roots and logarithms of negative intermediate values stay defined.
// ok is false when n contains something without a scalar value.
func evalC(n *node, pt point, bud *budget) (complex128, bool) {
	if n == nil || !bud.spend(1) {
		return 0, false
	}
	switch n.op {
	case opNum:
		f, _ := n.num.Float64()
		return complex(f, 0), true
	case opVar:
		return pt.value(n.name), true
	case opConst:
		switch n.name {
		case "pi":
			return complex(math.Pi, 0), true
		case "e":
			return complex(math.E, 0), true
		case "inf":
			return complex(math.Inf(1), 0), true
		}
		return 0, false
	case opNeg:
		a, ok := evalC(n.kids[0], pt, bud)
		return -a, ok
	case opAdd, opSub, opMul, opDiv, opPow:
		a, ok := evalC(n.kids[0], pt, bud)
		if !ok {
			return 0, false
		}
		if n.op == opPow {
			if e := exact(n.kids[1], bud); e != nil && e.Num().IsInt64() && e.Denom().IsInt64() {
				num, den := e.Num().Int64(), e.Denom().Int64()
				if den == 1 && absI64(num) <= 64 {
					return ipow(a, num), true
				}
				if den%2 == 1 && imag(a) == 0 && real(a) < 0 {
					// odd roots of negative reals are real: (-8)^(2/3) = 4
					r := math.Pow(-real(a), float64(num)/float64(den))
					if num%2 != 0 {
						r = -r
					}
					return complex(r, 0), true
				}
			}
		}
		b, ok := evalC(n.kids[1], pt, bud)
		if !ok {
			return 0, false
		}
		switch n.op {
		case opAdd:
			return a + b, true
		case opSub:
			return a - b, true
		case opMul:
			return a * b, true
		case opDiv:
			if b == 0 {
				return cmplx.Inf(), true
			}
			return a / b, true
		default:
			if a == 0 {
				if real(b) > 0 {
					return 0, true
				}
				return cmplx.Inf(), true
			}
			return cmplx.Pow(a, b), true
		}
	case opFunc:
		a, ok := evalC(n.kids[0], pt, bud)
		if !ok {
			return 0, false
		}
		switch n.name {
		case "sqrt":
			return cmplx.Sqrt(a), true
		case "root":
			d, ok := evalC(n.kids[1], pt, bud)
			if !ok || d == 0 {
				return 0, false
			}
			// odd integer roots of negative reals are real
			if imag(a) == 0 && real(a) < 0 && imag(d) == 0 && math.Mod(real(d), 2) == 1 {
				return complex(-math.Pow(-real(a), 1/real(d)), 0), true
			}
			return cmplx.Pow(a, 1/d), true
		case "sin":
			return cmplx.Sin(a), true
		case "cos":
			return cmplx.Cos(a), true
		case "tan":
			return cmplx.Tan(a), true
		case "sec":
			return 1 / cmplx.Cos(a), true
		case "csc":
			return 1 / cmplx.Sin(a), true
		case "cot":
			return cmplx.Cos(a) / cmplx.Sin(a), true
		case "asin":
			return cmplx.Asin(a), true
		case "acos":
			return cmplx.Acos(a), true
		case "atan":
			return cmplx.Atan(a), true
		case "sinh":
			return cmplx.Sinh(a), true
		case "cosh":
			return cmplx.Cosh(a), true
		case "tanh":
			return cmplx.Tanh(a), true
		case "ln":
			return cmplx.Log(a), true
		case "log":
			if len(n.kids) > 1 {
				b, ok := evalC(n.kids[1], pt, bud)
				if !ok {
					return 0, false
				}
				return cmplx.Log(a) / cmplx.Log(b), true
			}
			// log without a base: natural log, as in most answer keys
			return cmplx.Log(a), true
		case "log10":
			return cmplx.Log10(a), true
		case "exp":
			return cmplx.Exp(a), true
		case "abs":
			return complex(cmplx.Abs(a), 0), true
		case "floor":
			return complex(math.Floor(real(a)), 0), true
		case "ceil":
			return complex(math.Ceil(real(a)), 0), true
		case "fact":
			if imag(a) != 0 {
				return 0, false
			}
			return complex(math.Gamma(real(a)+1), 0), true
		case "binom":
			b, ok := evalC(n.kids[1], pt, bud)
			if !ok || imag(a) != 0 || imag(b) != 0 {
				return 0, false
			}
			x, y := real(a), real(b)
			return complex(math.Gamma(x+1)/(math.Gamma(y+1)*math.Gamma(x-y+1)), 0), true
		}
	}
	return 0, false
}

func absI64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func ipow(a complex128, k int64) complex128 {
	if k < 0 {
		if a == 0 {
			return cmplx.Inf()
		}
		return 1 / ipow(a, -k)
	}
	r := complex(1, 0)
	for k > 0 {
		if k&1 == 1 {
			r *= a
		}
		a *= a
		k >>= 1
	}
	return r
}

func finite(z complex128) bool {
	return !math.IsNaN(real(z)) && !math.IsNaN(imag(z)) && !math.IsInf(real(z), 0) && !math.IsInf(imag(z), 0)
}

// vars collects the variable names of n (at most limit).
func vars(n *node, into map[string]bool, limit int) {
	if n == nil || len(into) > limit {
		return
	}
	if n.op == opVar {
		into[n.name] = true
	}
	for _, k := range n.kids {
		vars(k, into, limit)
	}
}
