package task

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrExpr reports an arithmetic expression the solver cannot handle: a syntax
// error, division by zero, an inexact division, or an intermediate result out
// of range.
var ErrExpr = errors.New("task: bad expression")

// node is one node of an expression tree: a leaf (op == 0) holding val, or a
// binary operation over l and r.
type node struct {
	op   byte // 0 for a leaf, else one of + - * /
	val  int64
	l, r *node
}

// parseExpr parses integer arithmetic over + - * / and parentheses with the
// usual precedence and left associativity. Operands are non-negative integer
// literals; there is no unary minus (the generators never write one).
func parseExpr(s string) (*node, error) {
	if len(s) > maxExprChars {
		return nil, fmt.Errorf("%w: expression of %d chars (max %d)", ErrExpr, len(s), maxExprChars)
	}
	p := exprParser{s: s}
	n, err := p.sum()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("%w: unexpected %q at %d in %q", ErrExpr, p.s[p.i], p.i, s)
	}
	return n, nil
}

type exprParser struct {
	s string
	i int
}

func (p *exprParser) sum() (*node, error) {
	l, err := p.product()
	if err != nil {
		return nil, err
	}
	for p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
		op := p.s[p.i]
		p.i++
		r, err := p.product()
		if err != nil {
			return nil, err
		}
		l = &node{op: op, l: l, r: r}
	}
	return l, nil
}

func (p *exprParser) product() (*node, error) {
	l, err := p.atom()
	if err != nil {
		return nil, err
	}
	for p.i < len(p.s) && (p.s[p.i] == '*' || p.s[p.i] == '/') {
		op := p.s[p.i]
		p.i++
		r, err := p.atom()
		if err != nil {
			return nil, err
		}
		l = &node{op: op, l: l, r: r}
	}
	return l, nil
}

// Bounds that keep parsing shallow and arithmetic exact: literals have at
// most 9 digits and every intermediate value is at most maxValue in absolute
// value, so no sum or product of two of them overflows int64.
const (
	maxExprChars     = 4096
	maxLiteralDigits = 9
	maxValue         = 1_000_000_000
)

func (p *exprParser) atom() (*node, error) {
	if p.i >= len(p.s) {
		return nil, fmt.Errorf("%w: unexpected end of %q", ErrExpr, p.s)
	}
	if p.s[p.i] == '(' {
		p.i++
		n, err := p.sum()
		if err != nil {
			return nil, err
		}
		if p.i >= len(p.s) || p.s[p.i] != ')' {
			return nil, fmt.Errorf("%w: missing ')' in %q", ErrExpr, p.s)
		}
		p.i++
		return n, nil
	}
	start := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	if p.i == start {
		return nil, fmt.Errorf("%w: expected a number at %d in %q", ErrExpr, start, p.s)
	}
	if p.i-start > maxLiteralDigits {
		return nil, fmt.Errorf("%w: literal longer than %d digits in %q", ErrExpr, maxLiteralDigits, p.s)
	}
	v, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrExpr, err)
	}
	return &node{val: v}, nil
}

// step is one line of a worked solution: l op r = v.
type step struct {
	l, r, v int64
	op      byte
}

// evalSteps evaluates n in post-order, left subtree first, appending one step
// per operation. That order is what a person does: innermost parentheses
// first, then products left to right, then sums left to right. Every
// intermediate value must lie in [lo, hi], which callers keep within
// ±maxValue.
func evalSteps(n *node, lo, hi int64, steps []step) (int64, []step, error) {
	if n.op == 0 {
		return n.val, steps, nil
	}
	l, steps, err := evalSteps(n.l, lo, hi, steps)
	if err != nil {
		return 0, steps, err
	}
	r, steps, err := evalSteps(n.r, lo, hi, steps)
	if err != nil {
		return 0, steps, err
	}
	var v int64
	switch n.op {
	case '+':
		v = l + r
	case '-':
		v = l - r
	case '*':
		v = l * r
	case '/':
		if r == 0 {
			return 0, steps, fmt.Errorf("%w: division by zero", ErrExpr)
		}
		if l%r != 0 {
			return 0, steps, fmt.Errorf("%w: inexact division %d/%d", ErrExpr, l, r)
		}
		v = l / r
	default:
		return 0, steps, fmt.Errorf("%w: operator %q", ErrExpr, n.op)
	}
	if v < lo || v > hi {
		return 0, steps, fmt.Errorf("%w: intermediate %d outside [%d, %d]", ErrExpr, v, lo, hi)
	}
	return v, append(steps, step{l: l, r: r, v: v, op: n.op}), nil
}

// Solve evaluates an integer arithmetic expression (+ - * /, parentheses, no
// unary minus) and returns its value and the worked solution the built-in
// policy is taught to write: one "a op b = v" step per operation, separated
// by commas, then the answer in \boxed{}. For example "7-2*3+4" gives
// "2*3=6,7-6=1,1+4=5,\boxed{5}". Every intermediate value must satisfy
// |v| <= maxAbs (maxAbs <= 0: the overflow guard 10^9 only); a division
// must be exact.
func Solve(expr string, maxAbs int64) (answer int64, solution string, err error) {
	if maxAbs <= 0 || maxAbs > maxValue {
		maxAbs = maxValue
	}
	return solveIn(expr, -maxAbs, maxAbs)
}

// solveIn is Solve with every intermediate value bounded to [lo, hi]
// (clamped to ±maxValue).
func solveIn(expr string, lo, hi int64) (answer int64, solution string, err error) {
	lo, hi = max(lo, -maxValue), min(hi, maxValue)
	n, err := parseExpr(expr)
	if err != nil {
		return 0, "", err
	}
	v, steps, err := evalSteps(n, lo, hi, nil)
	if err != nil {
		return 0, "", fmt.Errorf("%w (in %q)", err, expr)
	}
	var b strings.Builder
	for _, s := range steps {
		fmt.Fprintf(&b, "%d%c%d=%d,", s.l, s.op, s.r, s.v)
	}
	b.WriteString(Boxed(strconv.FormatInt(v, 10)))
	return v, b.String(), nil
}

// Boxed wraps an answer the way every built-in solution ends, \boxed{answer},
// which is what the verifiers extract.
func Boxed(answer string) string { return `\boxed{` + answer + `}` }
