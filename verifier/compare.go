package verifier

import (
	"math"
	"math/cmplx"
)

// comparer decides whether two parsed answers are the same. It carries the
// configuration and the step budget of one Check.
type comparer struct {
	cfg Config
	bud *budget
}

// maxItems bounds the size of compared collections (their comparison is
// quadratic).
const maxItems = 256

// simple reports whether a relation side is a name rather than a value: it
// holds no number literal and no addition, subtraction or sign. "x", "f(x)",
// "|AB|", "A:B", "S_{MBCN}", "\frac{NO}{BO}", "(p,q)" are simple; "7",
// "a+3z", "2x" are not.
func simple(n *node) bool {
	if n == nil {
		return false
	}
	switch n.op {
	case opNum, opAdd, opSub, opNeg, opPM, opConst, opRel, opMatrix, opText:
		return false
	}
	for _, k := range n.kids {
		if !simple(k) {
			return false
		}
	}
	return true
}

// canon turns a parsed answer into the value to grade: an equation with a
// simple left side ("x = 3", "f(x) = 2x") grades its right side; a chain
// ("x = 5+5+1 = 11") grades its last part; "a < x < b" becomes an interval;
// "x \in S" grades S; ± expands to the set of its values. A value taken from
// a relation remembers it in orig, for comparison against another relation.
func (c *comparer) canon(n *node, gold bool) *node {
	if n == nil || !c.bud.spend(1) {
		return n
	}
	switch n.op {
	case opRel:
		allEq := true
		for _, r := range n.rels {
			if r != "=" && r != "~" && r != "->" {
				allEq = false
			}
		}
		parts := n.kids
		switch {
		case allEq && (len(parts) >= 3 || simple(parts[0]) || !gold):
			v := parts[len(parts)-1]
			if n.rels[len(n.rels)-1] == "~" && len(parts) >= 2 && !simple(parts[len(parts)-2]) {
				v = parts[len(parts)-2]
			}
			return withOrig(c.canon(v, gold), n)
		case len(parts) == 2 && n.rels[0] == "in" && simple(parts[0]):
			return withOrig(c.canon(parts[1], gold), n)
		case len(parts) == 3 && simple(parts[1]):
			if iv := chainInterval(n); iv != nil {
				if u := c.absInterval(parts[1], iv); u != nil {
					return withOrig(u, n)
				}
				return withOrig(iv, n)
			}
		}
		return n
	case opSeq:
		out := &node{op: opSeq, open: n.open, close: n.close}
		for _, k := range n.kids {
			v := c.canon(k, gold)
			if (n.open == 0 || n.open == '{') && hasPM(v) {
				out.kids = append(out.kids, expandPM(v)...)
				continue
			}
			out.kids = append(out.kids, v)
		}
		return out
	case opUnion, opMatrix, opRatio:
		out := *n
		out.kids = make([]*node, len(n.kids))
		for i, k := range n.kids {
			out.kids[i] = c.canon(k, gold)
		}
		return &out
	}
	if hasPM(n) {
		vs := expandPM(n)
		return &node{op: opSeq, kids: vs}
	}
	return n
}

func withOrig(v, rel *node) *node {
	if v == nil {
		return nil
	}
	w := *v
	w.orig = rel
	return &w
}

// chainInterval turns "a < x <= b" (or the reversed "b > x >= a") into the
// interval (a, b].
func chainInterval(n *node) *node {
	r0, r1 := n.rels[0], n.rels[1]
	lo, hi := n.kids[0], n.kids[2]
	var openB, closeB byte
	switch {
	case (r0 == "<" || r0 == "<=") && (r1 == "<" || r1 == "<="):
		openB, closeB = bracketFor(r0, true), bracketFor(r1, false)
	case (r0 == ">" || r0 == ">=") && (r1 == ">" || r1 == ">="):
		lo, hi = hi, lo
		openB, closeB = bracketFor(r1, true), bracketFor(r0, false)
	default:
		return nil
	}
	return &node{op: opSeq, open: openB, close: closeB, kids: []*node{lo, hi}}
}

func bracketFor(rel string, open bool) byte {
	strict := rel == "<" || rel == ">"
	switch {
	case open && strict:
		return '('
	case open:
		return '['
	case strict:
		return ')'
	}
	return ']'
}

// absInterval turns an interval of |x| with a non-negative lower end,
// "a <= |x| <= b", into the set of x: [-b, -a] \cup [a, b]. It returns nil
// when middle is not an absolute value or the lower end is not known to be
// non-negative.
func (c *comparer) absInterval(middle, iv *node) *node {
	if middle.op != opFunc || middle.name != "abs" {
		return nil
	}
	lo, hi := iv.kids[0], iv.kids[1]
	if v := exact(lo, c.bud); v == nil || v.Sign() < 0 {
		return nil
	}
	neg := func(x *node) *node { return &node{op: opNeg, kids: []*node{x}} }
	mirror := map[byte]byte{'(': ')', '[': ']', ')': '(', ']': '['}
	left := &node{op: opSeq, open: mirror[iv.close], close: mirror[iv.open], kids: []*node{neg(hi), neg(lo)}}
	return &node{op: opUnion, kids: []*node{left, iv}}
}

// relInterval turns "x > 5" ("5 < x", "x \le 2") into an interval when one
// side is simple and the other has no variables.
func relInterval(n *node) *node {
	if n.op != opRel || len(n.kids) != 2 {
		return nil
	}
	l, r, rel := n.kids[0], n.kids[1], n.rels[0]
	if !simple(l) {
		l, r = r, l
		switch rel {
		case "<":
			rel = ">"
		case ">":
			rel = "<"
		case "<=":
			rel = ">="
		case ">=":
			rel = "<="
		}
	}
	if !simple(l) {
		return nil
	}
	m := map[string]bool{}
	vars(r, m, 4)
	if len(m) > 0 {
		return nil
	}
	inf := &node{op: opConst, name: "inf"}
	ninf := &node{op: opNeg, kids: []*node{inf}}
	switch rel {
	case "<":
		return &node{op: opSeq, open: '(', close: ')', kids: []*node{ninf, r}}
	case "<=":
		return &node{op: opSeq, open: '(', close: ']', kids: []*node{ninf, r}}
	case ">":
		return &node{op: opSeq, open: '(', close: ')', kids: []*node{r, inf}}
	case ">=":
		return &node{op: opSeq, open: '[', close: ')', kids: []*node{r, inf}}
	}
	return nil
}

func hasPM(n *node) bool {
	if n == nil {
		return false
	}
	if n.op == opPM {
		return true
	}
	if n.op == opSeq || n.op == opMatrix {
		return false
	}
	for _, k := range n.kids {
		if hasPM(k) {
			return true
		}
	}
	return false
}

// expandPM returns the values of an expression with ± signs: each ± is
// chosen + or - independently (at most maxPMVariants values).
func expandPM(n *node) []*node {
	if n == nil {
		return nil
	}
	if n.op == opPM {
		var out []*node
		for _, b := range expandPM(n.kids[1]) {
			if n.kids[0] == nil {
				out = append(out, b, &node{op: opNeg, kids: []*node{b}})
				continue
			}
			for _, a := range expandPM(n.kids[0]) {
				out = append(out, &node{op: opAdd, kids: []*node{a, b}}, &node{op: opSub, kids: []*node{a, b}})
			}
		}
		if len(out) > maxPMVariants {
			out = out[:maxPMVariants]
		}
		return out
	}
	if len(n.kids) == 0 || n.op == opSeq || n.op == opMatrix {
		return []*node{n}
	}
	out := []*node{n}
	for i, k := range n.kids {
		if !hasPM(k) {
			continue
		}
		var next []*node
		for _, v := range out {
			for _, kv := range expandPM(k) {
				w := *v
				w.kids = append([]*node(nil), v.kids...)
				w.kids[i] = kv
				next = append(next, &w)
			}
		}
		out = next
		if len(out) > maxPMVariants {
			out = out[:maxPMVariants]
		}
	}
	return out
}

func lastPart(n *node) *node {
	if n.op == opRel {
		return n.kids[len(n.kids)-1]
	}
	return n
}

// same decides equality of a gold value g and a predicted value p.
func (c *comparer) same(g, p *node) bool {
	if g == nil || p == nil || !c.bud.spend(1) {
		return false
	}
	if g.op == opRel || p.op == opRel {
		gr, pr := g, p
		if gr.op != opRel && gr.orig != nil {
			gr = gr.orig
		}
		if pr.op != opRel && pr.orig != nil {
			pr = pr.orig
		}
		if gr.op == opRel && pr.op == opRel {
			return c.relSame(gr, pr)
		}
		if g.op == opRel {
			if iv := relInterval(g); iv != nil && isCollection(p) {
				return c.same(iv, p)
			}
			return false
		}
		if iv := relInterval(p); iv != nil && isCollection(g) {
			return c.same(g, iv)
		}
		return c.same(g, lastPart(p))
	}
	if isVectorTuplePair(g, p) {
		return len(g.kids) == len(p.kids) && c.ordered(g.kids, p.kids)
	}
	gc, pc := isCollection(g), isCollection(p)
	if gc || pc {
		return c.collectionSame(g, p, gc, pc)
	}
	if g.op == opUnion || p.op == opUnion {
		gi, pi := unionItems(g), unionItems(p)
		return c.setSame(gi, pi)
	}
	if g.op == opMatrix || p.op == opMatrix {
		if g.op != opMatrix {
			g = matEval(g, 0)
		}
		if p.op != opMatrix {
			p = matEval(p, 0)
		}
		if g == nil || p == nil || g.rows != p.rows || g.cols != p.cols {
			return false
		}
		if g.op != p.op || g.rows != p.rows || g.cols != p.cols {
			return false
		}
		for i := range g.kids {
			if !c.same(g.kids[i], p.kids[i]) {
				return false
			}
		}
		return true
	}
	if g.op == opRatio || p.op == opRatio {
		if g.op != p.op || len(g.kids) != len(p.kids) {
			return false
		}
		for i := range g.kids {
			if !c.same(g.kids[i], p.kids[i]) {
				return false
			}
		}
		return true
	}
	if g.op == opText || p.op == opText {
		return g.op == p.op && g.name == p.name
	}
	return c.scalarSame(g, p)
}

func isCollection(n *node) bool { return n.op == opSeq }

// isVectorTuplePair reports a one-column or one-row matrix against a
// parenthesised tuple: a vector written as \begin{pmatrix}1\\2\end{pmatrix}
// or as (1, 2); they are compared element by element.
func isVectorTuplePair(g, p *node) bool {
	m, t := g, p
	if m.op != opMatrix {
		m, t = p, g
	}
	return m.op == opMatrix && t.op == opSeq && t.open == '(' && t.close == ')' && (m.rows == 1 || m.cols == 1)
}

func isTuple(n *node) bool {
	return n.op == opSeq && (n.open == '(' || n.open == '[')
}

func unionItems(n *node) []*node {
	if n.op == opUnion {
		return n.kids
	}
	return []*node{n}
}

// collectionSame compares tuples (ordered, brackets matter), sets and lists
// (unordered, duplicates ignored). A tuple against a set or bare list is
// compared in order; a one-item collection equals its item.
func (c *comparer) collectionSame(g, p *node, gc, pc bool) bool {
	if !gc || !pc {
		// a single value against a set or list is the one-item set
		// (\boxed{1}\boxed{1} answers 1; \boxed{1}\boxed{2} does not)
		if gc && !isTuple(g) {
			return c.setSame(g.kids, []*node{p})
		}
		if pc && !isTuple(p) {
			return c.setSame([]*node{g}, p.kids)
		}
		return false
	}
	if len(g.kids) > maxItems || len(p.kids) > maxItems {
		return false
	}
	gt, pt := isTuple(g), isTuple(p)
	switch {
	case gt && pt:
		if g.open != p.open || g.close != p.close || len(g.kids) != len(p.kids) {
			return false
		}
		return c.ordered(g.kids, p.kids)
	case gt && !pt:
		if len(g.kids) != len(p.kids) {
			return false
		}
		return c.ordered(g.kids, p.kids)
	}
	return c.setSame(g.kids, p.kids)
}

func (c *comparer) ordered(a, b []*node) bool {
	for i := range a {
		if !c.same(a[i], b[i]) {
			return false
		}
	}
	return true
}

// setSame: every gold item equals some predicted item and every predicted
// item equals some gold item (set semantics: order and repeats are free).
func (c *comparer) setSame(g, p []*node) bool {
	if len(g) > maxItems || len(p) > maxItems || len(g) == 0 != (len(p) == 0) {
		return false
	}
	matchedP := make([]bool, len(p))
	for _, gi := range g {
		found := false
		for j, pj := range p {
			if c.same(gi, pj) {
				matchedP[j] = true
				found = true
			}
		}
		if !found {
			return false
		}
	}
	for _, m := range matchedP {
		if !m {
			return false
		}
	}
	return true
}

// relSame compares two relations. Equations f = g and f' = g' are the same
// when f-g = c (f'-g') for a constant c != 0; inequalities need the same
// strictness and c > 0 after both are written as "expression > 0".
func (c *comparer) relSame(a, b *node) bool {
	if len(a.kids) != 2 || len(b.kids) != 2 {
		if len(a.kids) != len(b.kids) {
			return false
		}
		for i := range a.rels {
			if a.rels[i] != b.rels[i] {
				return false
			}
		}
		return c.ordered(a.kids, b.kids)
	}
	fa, sa, ka := relForm(a)
	fb, sb, kb := relForm(b)
	if ka != kb || sa != sb {
		return false
	}
	if ka == "in" {
		return c.same(a.kids[1], b.kids[1])
	}
	return c.proportional(fa, fb, ka == "ineq")
}

// relForm writes a two-sided relation as one expression f with a kind:
// "eq" (f = 0), "ne" (f != 0), "ineq" (f > 0, strict or not), "in".
func relForm(n *node) (f *node, strict bool, kind string) {
	l, r := n.kids[0], n.kids[1]
	switch n.rels[0] {
	case "=", "~", "->":
		return &node{op: opSub, kids: []*node{l, r}}, false, "eq"
	case "!=":
		return &node{op: opSub, kids: []*node{l, r}}, false, "ne"
	case "<":
		return &node{op: opSub, kids: []*node{r, l}}, true, "ineq"
	case "<=":
		return &node{op: opSub, kids: []*node{r, l}}, false, "ineq"
	case ">":
		return &node{op: opSub, kids: []*node{l, r}}, true, "ineq"
	case ">=":
		return &node{op: opSub, kids: []*node{l, r}}, false, "ineq"
	}
	return nil, false, n.rels[0]
}

// proportional checks f = c g at the evaluation points for one constant c
// (c > 0 when positive is set).
func (c *comparer) proportional(f, g *node, positive bool) bool {
	var ratio complex128
	have := false
	valid := 0
	for k := 0; k < c.cfg.Points; k++ {
		pt := point{seed: c.cfg.Seed, k: k}
		a, ok1 := evalC(f, pt, c.bud)
		b, ok2 := evalC(g, pt, c.bud)
		if !ok1 || !ok2 {
			return false
		}
		if !finite(a) || !finite(b) {
			continue
		}
		if !have {
			if cmplx.Abs(b) < 1e-12 {
				if cmplx.Abs(a) < 1e-12 {
					valid++
					continue
				}
				return false
			}
			ratio = a / b
			if positive && (math.Abs(imag(ratio)) > 1e-9 || real(ratio) <= 0) {
				return false
			}
			have = true
			valid++
			continue
		}
		if !c.close(a, ratio*b) {
			return false
		}
		valid++
	}
	return valid >= (c.cfg.Points+1)/2
}

func (c *comparer) close(a, b complex128) bool { return closeTol(a, b, c.cfg.Tolerance) }

// constTolerance is the relative tolerance for constants without decimal
// literals: well above float64 rounding of a short expression, far below any
// difference between distinct answers a task would have.
const constTolerance = 1e-11

func closeTol(a, b complex128, tol float64) bool {
	d := cmplx.Abs(a - b)
	s := math.Max(1, math.Max(cmplx.Abs(a), cmplx.Abs(b)))
	return d <= tol*s
}

func hasDecimal(n *node) bool {
	if n == nil {
		return false
	}
	if n.op == opNum && n.dp > 0 {
		return true
	}
	for _, k := range n.kids {
		if hasDecimal(k) {
			return true
		}
	}
	return false
}

// scalarSame compares two scalar expressions: exactly when both are
// rational, numerically when both are constants, and at evaluation points
// when they have variables.
func (c *comparer) scalarSame(g, p *node) bool {
	eg := exact(g, c.bud)
	ep := exact(p, c.bud)
	if eg != nil && ep != nil {
		if eg.Cmp(ep) == 0 {
			return true
		}
		gf, _ := eg.Float64()
		pf, _ := ep.Float64()
		return c.rounded(g, p, gf, pf)
	}
	names := map[string]bool{}
	vars(g, names, 16)
	vars(p, names, 16)
	if len(names) > 16 {
		return false
	}
	if len(names) == 0 {
		pt := point{seed: c.cfg.Seed}
		a, ok1 := evalC(g, pt, c.bud)
		b, ok2 := evalC(p, pt, c.bud)
		if !ok1 || !ok2 {
			return false
		}
		if !finite(a) || !finite(b) {
			return isInfEq(a, b)
		}
		// Constants without decimal literals are compared nearly exactly
		// (floating-point noise only): sqrt(12) = 2 sqrt(3) passes, two
		// different radicals that happen to be close do not.
		tol := c.cfg.Tolerance
		if !hasDecimal(g) && !hasDecimal(p) {
			tol = math.Min(tol, constTolerance)
		}
		if closeTol(a, b, tol) {
			return true
		}
		if math.Abs(imag(a)) > 1e-12 || math.Abs(imag(b)) > 1e-12 {
			return false
		}
		return c.rounded(g, p, real(a), real(b))
	}
	return c.symbolic(g, p)
}

func isInfEq(a, b complex128) bool {
	ra, rb := real(a), real(b)
	return math.IsInf(ra, 0) && math.IsInf(rb, 0) && (ra > 0) == (rb > 0) && imag(a) == 0 && imag(b) == 0
}

// literalDP returns the decimal places of a number literal (possibly
// negated), or -1 when n is not a decimal literal.
func literalDP(n *node) int {
	if n.op == opNeg {
		n = n.kids[0]
	}
	if n.op == opNum {
		return n.dp
	}
	return -1
}

// rounded applies the rounding conventions: a prediction given to more
// places than a gold decimal (with >= 2 places) is rounded to the gold's
// places; a decimal prediction with >= 2 places matches a gold that is not a
// decimal (a fraction, a root, pi) when it is that value correctly rounded.
func (c *comparer) rounded(g, p *node, gv, pv float64) bool {
	gd, pd := literalDP(g), literalDP(p)
	if gd >= 2 && (pd < 0 || pd > gd) {
		scale := math.Pow(10, float64(gd))
		return math.Abs(math.Round(pv*scale)/scale-gv) <= 1e-9*math.Max(1, math.Abs(gv))
	}
	if pd >= 2 && gd < 0 && g.op != opNum {
		return math.Abs(pv-gv) <= 0.5*math.Pow(10, -float64(pd))*(1+1e-9)
	}
	return false
}

// symbolic compares expressions with variables at Points evaluation points
// (all finite points must agree; at least half must be finite), then at
// negative points where both sides are real, to tell |x| from x.
func (c *comparer) symbolic(g, p *node) bool {
	valid := 0
	for k := 0; k < c.cfg.Points; k++ {
		pt := point{seed: c.cfg.Seed, k: k}
		a, ok1 := evalC(g, pt, c.bud)
		b, ok2 := evalC(p, pt, c.bud)
		if !ok1 || !ok2 {
			return false
		}
		if !finite(a) || !finite(b) {
			continue
		}
		if !c.close(a, b) {
			return false
		}
		valid++
	}
	if valid < (c.cfg.Points+1)/2 {
		return false
	}
	for k := 0; k < c.cfg.Points; k++ {
		pt := point{seed: c.cfg.Seed, k: k, neg: true}
		a, ok1 := evalC(g, pt, c.bud)
		b, ok2 := evalC(p, pt, c.bud)
		if !ok1 || !ok2 || !finite(a) || !finite(b) {
			continue
		}
		if math.Abs(imag(a)) > 1e-9 || math.Abs(imag(b)) > 1e-9 {
			continue
		}
		if !c.close(a, b) {
			return false
		}
	}
	return true
}

// matEval evaluates sums, differences and products of matrices (and
// scalar multiples) into one matrix of cell expressions, or returns nil.
func matEval(n *node, depth int) *node {
	if n == nil || depth > maxDepth {
		return nil
	}
	switch n.op {
	case opMatrix:
		return n
	case opNeg:
		a := matEval(n.kids[0], depth+1)
		if a == nil {
			return nil
		}
		out := &node{op: opMatrix, rows: a.rows, cols: a.cols}
		for _, k := range a.kids {
			out.kids = append(out.kids, &node{op: opNeg, kids: []*node{k}})
		}
		return out
	case opAdd, opSub:
		a, b := matEval(n.kids[0], depth+1), matEval(n.kids[1], depth+1)
		if a == nil || b == nil || a.rows != b.rows || a.cols != b.cols {
			return nil
		}
		out := &node{op: opMatrix, rows: a.rows, cols: a.cols}
		for i := range a.kids {
			out.kids = append(out.kids, &node{op: n.op, kids: []*node{a.kids[i], b.kids[i]}})
		}
		return out
	case opMul:
		a, b := matEval(n.kids[0], depth+1), matEval(n.kids[1], depth+1)
		switch {
		case a != nil && b != nil:
			if a.cols != b.rows || a.rows*b.cols*a.cols > maxItems*4 {
				return nil
			}
			out := &node{op: opMatrix, rows: a.rows, cols: b.cols}
			for i := 0; i < a.rows; i++ {
				for j := 0; j < b.cols; j++ {
					var sum *node
					for k := 0; k < a.cols; k++ {
						t := &node{op: opMul, kids: []*node{a.kids[i*a.cols+k], b.kids[k*b.cols+j]}}
						if sum == nil {
							sum = t
						} else {
							sum = &node{op: opAdd, kids: []*node{sum, t}}
						}
					}
					out.kids = append(out.kids, sum)
				}
			}
			return out
		case a != nil && !hasMatrix(n.kids[1]):
			return scaleMatrix(a, n.kids[1])
		case b != nil && !hasMatrix(n.kids[0]):
			return scaleMatrix(b, n.kids[0])
		}
	}
	return nil
}

func scaleMatrix(m, s *node) *node {
	out := &node{op: opMatrix, rows: m.rows, cols: m.cols}
	for _, k := range m.kids {
		out.kids = append(out.kids, &node{op: opMul, kids: []*node{s, k}})
	}
	return out
}

func hasMatrix(n *node) bool {
	if n == nil {
		return false
	}
	if n.op == opMatrix {
		return true
	}
	for _, k := range n.kids {
		if hasMatrix(k) {
			return true
		}
	}
	return false
}
