package verifier

import (
	"errors"
	"math/big"
	"strings"
)

// The expression parser reads the normalised LaTeX-ish answer into a small
// tree. It is a recursive-descent parser with a depth limit and a step
// budget, so nesting and length cannot make it run long or overflow the
// stack. It is deliberately forgiving: implicit multiplication, \frac12,
// sqrt(3), \sin^2 x, bare and braced lists, intervals with mixed brackets.

// op is the kind of a node.
type op uint8

const (
	opNum    op = iota // num (exact), dp = decimal places of the literal (-1: not decimal)
	opVar              // name
	opConst            // name: "pi", "e", "inf", "ellipsis"
	opAdd              // kids[0] + kids[1]
	opSub              // kids[0] - kids[1]
	opMul              // kids[0] * kids[1]
	opDiv              // kids[0] / kids[1]
	opPow              // kids[0] ^ kids[1]
	opNeg              // -kids[0]
	opPM               // kids[0] ± kids[1] (kids[0] nil: ±kids[1])
	opFunc             // name(kids...): sqrt, root (kids[1] = degree), sin, ..., log (kids[1] = base), abs, fact, binom
	opSeq              // open, close; kids = items: tuple, interval, bare list (open 0), braced set ('{')
	opRatio            // kids[0] : kids[1] : ...
	opUnion            // kids[0] ∪ kids[1] ∪ ...
	opRel              // kids = parts, rels = operators between them
	opMatrix           // rows x cols cells, kids row-major
	opText             // name = text
)

type node struct {
	op          op
	num         *big.Rat
	dp          int
	name        string
	kids        []*node
	open, close byte
	rels        []string
	rows, cols  int
	orig        *node // the relation a graded value was taken from (see canon)
}

var (
	errSyntax = errors.New("syntax")
	errBudget = errors.New("budget")
	errDepth  = errors.New("depth")
)

const maxDepth = 1000

// token kinds
type tkind uint8

const (
	tEOF tkind = iota
	tNum
	tIdent // a letter run (split into variables unless a known function)
	tCmd   // \name
	tPunct // one or two characters
)

type token struct {
	k   tkind
	s   string
	pos int
}

func tokenize(s string, bud *budget) ([]token, error) {
	var ts []token
	for i := 0; i < len(s); {
		if !bud.spend(1) {
			return nil, errBudget
		}
		c := s[i]
		switch {
		case c == ' ':
			i++
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			j := i
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			if j < len(s) && s[j] == '.' && j+1 < len(s) && isDigit(s[j+1]) {
				j++
				for j < len(s) && isDigit(s[j]) {
					j++
				}
			} else if j < len(s) && s[j] == '.' && (j+1 == len(s) || !isDigit(s[j+1])) && j > i {
				// "5." is 5
				ts = append(ts, token{tNum, s[i:j], i})
				i = j + 1
				continue
			}
			ts = append(ts, token{tNum, s[i:j], i})
			i = j
		case isLetter(c):
			j := i
			for j < len(s) && isLetter(s[j]) {
				j++
			}
			ts = append(ts, token{tIdent, s[i:j], i})
			i = j
		case c == '\\':
			j := i + 1
			for j < len(s) && isLetter(s[j]) {
				j++
			}
			if j == i+1 {
				if j < len(s) {
					j++
				}
			}
			ts = append(ts, token{tCmd, s[i:j], i})
			i = j
		default:
			if i+1 < len(s) {
				two := s[i : i+2]
				switch two {
				case "<=", ">=", "!=", "==", "=<", "=>":
					if two == "=<" {
						two = "<="
					} else if two == "=>" {
						two = ">="
					}
					ts = append(ts, token{tPunct, two, i})
					i += 2
					continue
				case "**":
					ts = append(ts, token{tPunct, "^", i})
					i += 2
					continue
				}
			}
			if c >= 0x80 {
				// skip a non-ASCII rune: it carries no mathematics we read
				j := i + 1
				for j < len(s) && s[j]&0xC0 == 0x80 {
					j++
				}
				i = j
				continue
			}
			ts = append(ts, token{tPunct, string(c), i})
			i++
		}
	}
	ts = append(ts, token{tEOF, "", len(s)})
	return ts, nil
}

type parser struct {
	ts    []token
	i     int
	bud   *budget
	depth int
	src   string
}

// parseAnswer parses a normalised answer.
func parseAnswer(s string, bud *budget) (*node, error) {
	ts, err := tokenize(s, bud)
	if err != nil {
		return nil, err
	}
	p := &parser{ts: ts, bud: bud, src: s}
	n, err := p.list(0, "")
	if err != nil {
		return nil, err
	}
	if p.peek().k != tEOF {
		return nil, errSyntax
	}
	return n, nil
}

func (p *parser) peek() token { return p.ts[p.i] }
func (p *parser) next() token {
	t := p.ts[p.i]
	if p.i < len(p.ts)-1 {
		p.i++
	}
	return t
}
func (p *parser) isP(s string) bool { t := p.peek(); return t.k == tPunct && t.s == s }
func (p *parser) isC(s string) bool { t := p.peek(); return t.k == tCmd && t.s == s }

func (p *parser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return errDepth
	}
	if !p.bud.spend(1) {
		return errBudget
	}
	return nil
}
func (p *parser) leave() { p.depth-- }

// list := rel ((','|';') rel)*, stopping at a closer. open is the opening
// bracket that started this list (0 at top level).
func (p *parser) list(open byte, closeCmd string) (*node, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	var items []*node
	var semis []int // item counts at each ';'
	commas := false
	for {
		if p.atListEnd(closeCmd) {
			break
		}
		if p.isP(",") || p.isP(";") {
			// an empty item ("1, , 2" after "and" became a comma)
			p.next()
			continue
		}
		it, err := p.rel()
		if err != nil {
			return nil, err
		}
		items = append(items, it)
		if p.isP(",") || p.isP(";") {
			if p.isP(";") {
				semis = append(semis, len(items))
			} else {
				commas = true
			}
			p.next()
			continue
		}
		break
	}
	if len(items) == 1 && open == 0 {
		return items[0], nil
	}
	if open == 0 && commas && len(semis) > 0 {
		// "p=5,q=2; p=7,q=2": ';' separates answers, ',' their components
		var groups []*node
		start := 0
		for _, end := range append(semis, len(items)) {
			if end <= start {
				continue
			}
			g := items[start:end]
			if len(g) == 1 {
				groups = append(groups, g[0])
			} else {
				groups = append(groups, &node{op: opSeq, open: '(', close: ')', kids: g})
			}
			start = end
		}
		return &node{op: opSeq, kids: groups}, nil
	}
	return &node{op: opSeq, kids: items}, nil
}

func (p *parser) atListEnd(closeCmd string) bool {
	t := p.peek()
	if t.k == tEOF {
		return true
	}
	if t.k == tPunct && (t.s == ")" || t.s == "]" || t.s == "}") {
		return true
	}
	return closeCmd != "" && t.k == tCmd && t.s == closeCmd
}

var relCmds = map[string]string{
	`\le`: "<=", `\leq`: "<=", `\leqslant`: "<=", `\ge`: ">=", `\geq`: ">=", `\geqslant`: ">=",
	`\ne`: "!=", `\neq`: "!=", `\lt`: "<", `\gt`: ">", `\approx`: "~", `\in`: "in", `\equiv`: "=",
	`\to`: "->", `\rightarrow`: "->", `\Rightarrow`: "->", `\implies`: "->", `\sim`: "~", `\simeq`: "~",
	`\cong`: "~", `\longrightarrow`: "->", `\mapsto`: "->",
}

func (p *parser) relOp() (string, bool) {
	t := p.peek()
	switch t.k {
	case tPunct:
		switch t.s {
		case "=", "==":
			return "=", true
		case "<", ">", "<=", ">=", "!=":
			return t.s, true
		}
	case tCmd:
		if r, ok := relCmds[t.s]; ok {
			return r, true
		}
	}
	return "", false
}

// rel reads one list item: the loosest of chainLevels.
func (p *parser) rel() (*node, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	return p.chain(0)
}

// chainLevels are the n-ary operator levels between list and sum, loosest
// first:
//
//	rel   := ratio (relop ratio)*
//	ratio := union (':' union)*
//	union := sum ('\cup' sum)*
var chainLevels = [...]op{opRel, opRatio, opUnion}

// chainOp reports the operator of level o at the cursor. (A switch rather
// than a function per level keeps the parser off the heap.)
func (p *parser) chainOp(o op) (string, bool) {
	switch o {
	case opRel:
		return p.relOp()
	case opRatio:
		return ":", p.isP(":")
	}
	return `\cup`, p.isC(`\cup`)
}

// chain reads level i of chainLevels: one operand of the next level (sum
// after the last), or several joined by the level's operator into one node;
// only a relation keeps its operators (rels).
func (p *parser) chain(i int) (*node, error) {
	if i == len(chainLevels) {
		return p.sum()
	}
	o := chainLevels[i]
	first, err := p.chain(i + 1)
	if err != nil {
		return nil, err
	}
	r, ok := p.chainOp(o)
	if !ok {
		return first, nil
	}
	n := &node{op: o, kids: []*node{first}}
	for ok {
		p.next()
		k, err := p.chain(i + 1)
		if err != nil {
			return nil, err
		}
		if o == opRel {
			n.rels = append(n.rels, r)
		}
		n.kids = append(n.kids, k)
		r, ok = p.chainOp(o)
	}
	return n, nil
}

func (p *parser) isPM() bool { return p.isC(`\pm`) || p.isC(`\mp`) || p.isP("±") }

// sum := [+|-|±] term ((+|-|±) term)*
func (p *parser) sum() (*node, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	var left *node
	switch {
	case p.isP("-"):
		p.next()
		t, err := p.term()
		if err != nil {
			return nil, err
		}
		left = &node{op: opNeg, kids: []*node{t}}
	case p.isP("+"):
		p.next()
		t, err := p.term()
		if err != nil {
			return nil, err
		}
		left = t
	case p.isPM():
		p.next()
		t, err := p.term()
		if err != nil {
			return nil, err
		}
		left = &node{op: opPM, kids: []*node{nil, t}}
	default:
		t, err := p.term()
		if err != nil {
			return nil, err
		}
		left = t
	}
	for {
		var o op
		switch {
		case p.isP("+"):
			o = opAdd
		case p.isP("-"):
			o = opSub
		case p.isPM():
			o = opPM
		default:
			return left, nil
		}
		p.next()
		r, err := p.term()
		if err != nil {
			return nil, err
		}
		left = &node{op: o, kids: []*node{left, r}}
	}
}

// term := unary ((*|/|\cdot|\times|\div) unary | implicit unary)*
func (p *parser) term() (*node, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	left, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		var o op
		switch {
		case p.isP("*") || p.isC(`\cdot`) || p.isC(`\times`) || p.isC(`\ast`):
			o = opMul
			p.next()
		case p.isP("/") || p.isC(`\div`) || p.isC(`\over`):
			o = opDiv
			p.next()
		case p.startsPrimary():
			o = opMul
		default:
			return left, nil
		}
		mixed := o == opMul && left.op == opNum && left.dp < 0 && p.isC(`\frac`)
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		if mixed && r.op == opDiv && r.kids[0].op == opNum && r.kids[1].op == opNum {
			// a mixed number: 2\frac{1}{2} is 5/2
			o = opAdd
		}
		left = &node{op: o, kids: []*node{left, r}}
	}
}

func (p *parser) unary() (*node, error) {
	if p.isP("-") {
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.leave()
		p.next()
		u, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &node{op: opNeg, kids: []*node{u}}, nil
	}
	if p.isP("+") {
		p.next()
		return p.unary()
	}
	return p.power()
}

// startsPrimary reports whether the next token can begin an implicitly
// multiplied factor.
func (p *parser) startsPrimary() bool {
	t := p.peek()
	switch t.k {
	case tNum, tIdent:
		return true
	case tPunct:
		return t.s == "("
	case tCmd:
		switch t.s {
		case `\frac`, `\sqrt`, `\pi`, `\binom`, `\infty`:
			return true
		}
		if _, ok := funcCmds[t.s]; ok {
			return true
		}
		if _, ok := relCmds[t.s]; ok {
			return false
		}
		switch t.s {
		case `\cdot`, `\times`, `\div`, `\pm`, `\mp`, `\cup`, `\cap`, `\end`, `\\`, `\{`, `\}`, `\ldots`, `\cdots`, `\dots`, `\over`, `\ast`, `\setminus`:
			return false
		}
		return len(t.s) > 2 // other commands: symbols such as \alpha
	}
	return false
}

// power := postfix ('^' exponent)?
func (p *parser) power() (*node, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	base, err := p.postfix()
	if err != nil {
		return nil, err
	}
	if p.isP("^") {
		p.next()
		e, err := p.exponent()
		if err != nil {
			return nil, err
		}
		base = &node{op: opPow, kids: []*node{base, e}}
		// a factorial or prime after the exponent
		for p.isP("!") {
			p.next()
			base = &node{op: opFunc, name: "fact", kids: []*node{base}}
		}
	}
	return base, nil
}

// exponent reads the argument of ^: a braced group, or one signed atom.
func (p *parser) exponent() (*node, error) {
	if p.isP("{") {
		return p.group()
	}
	if p.isP("-") {
		p.next()
		e, err := p.exponent()
		if err != nil {
			return nil, err
		}
		return &node{op: opNeg, kids: []*node{e}}, nil
	}
	t := p.peek()
	if t.k == tNum && len(t.s) > 1 && !strings.Contains(t.s, ".") {
		// x^23 is x^{2}3 in LaTeX, but answers mean x^{23}; read it whole.
		p.next()
		return numNode(t.s)
	}
	if t.k == tIdent && len(t.s) > 1 {
		// x^ab: only the first letter is the exponent
		p.splitIdent()
	}
	return p.postfix()
}

// splitIdent splits the identifier token at p.i into its first letter and
// the rest, so that a one-letter argument can be taken.
func (p *parser) splitIdent() {
	t := p.ts[p.i]
	first := token{tIdent, t.s[:1], t.pos}
	rest := token{tIdent, t.s[1:], t.pos + 1}
	p.ts = append(p.ts[:p.i], append([]token{first, rest}, p.ts[p.i+1:]...)...)
}

func (p *parser) postfix() (*node, error) {
	n, err := p.primary()
	if err != nil {
		return nil, err
	}
	for {
		switch {
		case p.isP("!"):
			p.next()
			n = &node{op: opFunc, name: "fact", kids: []*node{n}}
		case p.isP("'"):
			p.next()
			if n.op == opVar {
				n = &node{op: opVar, name: n.name + "'"}
			}
		default:
			return n, nil
		}
	}
}

func numNode(s string) (*node, error) {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, errSyntax
	}
	dp := -1
	if i := strings.IndexByte(s, '.'); i >= 0 {
		dp = len(s) - i - 1
	}
	return &node{op: opNum, num: r, dp: dp}, nil
}

// funcCmds maps LaTeX function commands to evaluator names.
var funcCmds = map[string]string{
	`\sin`: "sin", `\cos`: "cos", `\tan`: "tan", `\sec`: "sec", `\csc`: "csc", `\cot`: "cot",
	`\arcsin`: "asin", `\arccos`: "acos", `\arctan`: "atan", `\sinh`: "sinh", `\cosh`: "cosh",
	`\tanh`: "tanh", `\ln`: "ln", `\log`: "log", `\exp`: "exp", `\lg`: "log10",
}

// funcWords are function names written without a backslash.
var funcWords = map[string]string{
	"sin": "sin", "cos": "cos", "tan": "tan", "sec": "sec", "csc": "csc", "cot": "cot",
	"arcsin": "asin", "arccos": "acos", "arctan": "atan", "ln": "ln", "log": "log", "exp": "exp",
	"sqrt": "sqrt", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "abs": "abs",
}

func (p *parser) primary() (*node, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	t := p.peek()
	switch t.k {
	case tEOF:
		return nil, errSyntax
	case tNum:
		p.next()
		n, err := numNode(t.s)
		if err != nil {
			return nil, err
		}
		if p.isP("_") {
			// a number in base b: 204_5; kept as an opaque atom
			p.next()
			sub, err := p.subscriptText()
			if err != nil {
				return nil, err
			}
			return &node{op: opVar, name: t.s + "_" + sub}, nil
		}
		return n, nil
	case tIdent:
		return p.ident()
	case tCmd:
		return p.command()
	case tPunct:
		switch t.s {
		case "(":
			p.next()
			return p.bracketed('(')
		case "[":
			p.next()
			return p.bracketed('[')
		case "{":
			return p.braceGroupOrSet()
		case "|":
			p.next()
			inner, err := p.sum()
			if err != nil {
				return nil, err
			}
			if !p.isP("|") {
				return nil, errSyntax
			}
			p.next()
			return &node{op: opFunc, name: "abs", kids: []*node{inner}}, nil
		}
	}
	return nil, errSyntax
}

// bracketed reads after an opening ( or [ up to a closing ) or ]: a group
// when it holds one item with matching brackets, else a sequence that
// remembers both brackets (tuples and intervals).
func (p *parser) bracketed(open byte) (*node, error) {
	l, err := p.list(open, "")
	if err != nil {
		return nil, err
	}
	t := p.peek()
	if t.k != tPunct || (t.s != ")" && t.s != "]") {
		return nil, errSyntax
	}
	p.next()
	closeB := t.s[0]
	if len(l.kids) == 1 && ((open == '(' && closeB == ')') || (open == '[' && closeB == ']')) {
		return l.kids[0], nil
	}
	if len(l.kids) == 0 {
		return nil, errSyntax
	}
	l.open, l.close = open, closeB
	return l, nil
}

// braceGroupOrSet reads {...}: a group, or a set when it holds a list.
func (p *parser) braceGroupOrSet() (*node, error) {
	p.next()
	return p.braceBody()
}

// group reads a braced argument {...} as one expression.
func (p *parser) group() (*node, error) {
	if !p.isP("{") {
		return nil, errSyntax
	}
	p.next()
	if p.isP("}") {
		p.next()
		return &node{op: opText, name: ""}, nil
	}
	return p.braceBody()
}

// braceBody reads the rest of {...} after the opening brace: the one item
// it holds, or a set of several (none: the empty set).
func (p *parser) braceBody() (*node, error) {
	l, err := p.list('{', "")
	if err != nil {
		return nil, err
	}
	if !p.isP("}") {
		return nil, errSyntax
	}
	p.next()
	if len(l.kids) == 1 {
		return l.kids[0], nil
	}
	l.open, l.close = '{', '}'
	return l, nil
}

// arg reads a command argument: a braced group or a single token.
func (p *parser) arg() (*node, error) {
	if p.isP("{") {
		return p.group()
	}
	t := p.peek()
	if t.k == tNum && len(t.s) > 1 && !strings.Contains(t.s, ".") {
		// \frac 12 style: one digit
		p.ts[p.i].s = t.s[1:]
		p.ts[p.i].pos++
		return numNode(t.s[:1])
	}
	if t.k == tIdent && len(t.s) > 1 {
		p.splitIdent()
	}
	// one primary, without implicit multiplication: \frac ab is a/b
	return p.primary()
}

// subscriptText reads the text of a subscript: {...} raw or one token.
func (p *parser) subscriptText() (string, error) {
	if p.isP("{") {
		start := p.peek().pos
		depth := 0
		for {
			t := p.next()
			if !p.bud.spend(1) {
				return "", errBudget
			}
			switch {
			case t.k == tEOF:
				return "", errSyntax
			case t.k == tPunct && t.s == "{":
				depth++
			case t.k == tPunct && t.s == "}":
				depth--
				if depth == 0 {
					return strings.ReplaceAll(p.src[start+1:t.pos], " ", ""), nil
				}
			}
		}
	}
	t := p.next()
	if t.k == tEOF {
		return "", errSyntax
	}
	if (t.k == tIdent || t.k == tNum) && len(t.s) > 1 {
		// x_12 is x_{12} in answers; x_ab is x_{a}b in LaTeX, keep one letter
		if t.k == tIdent {
			p.i--
			p.splitIdent()
			t = p.next()
		}
	}
	return t.s, nil
}

func (p *parser) ident() (*node, error) {
	t := p.next()
	if f, ok := funcWords[t.s]; ok && (p.isP("(") || f != "abs") {
		return p.funcApply(f)
	}
	switch t.s {
	case "pi":
		return &node{op: opConst, name: "pi"}, nil
	case "inf", "infty", "infinity":
		return &node{op: opConst, name: "inf"}, nil
	}
	// a letter run is a product of one-letter variables; the last letter
	// takes any subscript
	var n *node
	for i := 0; i < len(t.s); i++ {
		v := &node{op: opVar, name: t.s[i : i+1]}
		if i == len(t.s)-1 && p.isP("_") {
			p.next()
			sub, err := p.subscriptText()
			if err != nil {
				return nil, err
			}
			v.name += "_" + sub
		}
		if v.name == "e" {
			v = &node{op: opConst, name: "e"}
		}
		if n == nil {
			n = v
		} else {
			n = &node{op: opMul, kids: []*node{n, v}}
		}
	}
	return n, nil
}

// funcApply reads the argument of a named function: an optional power
// (\sin^2 x), then a parenthesised group or one factor.
func (p *parser) funcApply(name string) (*node, error) {
	var pow *node
	var base *node
	if name == "log" && p.isP("_") {
		p.next()
		b, err := p.arg()
		if err != nil {
			return nil, err
		}
		base = b
	}
	if p.isP("^") {
		p.next()
		e, err := p.exponent()
		if err != nil {
			return nil, err
		}
		pow = e
	}
	var a *node
	var err error
	if p.isP("(") {
		p.next()
		a, err = p.bracketed('(')
	} else if p.isP("{") {
		a, err = p.group()
	} else {
		a, err = p.power()
	}
	if err != nil {
		return nil, err
	}
	f := &node{op: opFunc, name: name, kids: []*node{a}}
	if base != nil {
		f.kids = append(f.kids, base)
	}
	if pow != nil {
		if pow.op == opNeg && pow.kids[0].op == opNum && pow.kids[0].num.Cmp(big.NewRat(1, 1)) == 0 {
			// \sin^{-1} x is arcsin
			switch name {
			case "sin", "cos", "tan":
				f.name = "a" + name
				return f, nil
			}
		}
		return &node{op: opPow, kids: []*node{f, pow}}, nil
	}
	return f, nil
}

func (p *parser) command() (*node, error) {
	t := p.next()
	switch t.s {
	case `\frac`, `\binom`:
		a, err := p.arg()
		if err != nil {
			return nil, err
		}
		b, err := p.arg()
		if err != nil {
			return nil, err
		}
		if t.s == `\binom` {
			return &node{op: opFunc, name: "binom", kids: []*node{a, b}}, nil
		}
		return &node{op: opDiv, kids: []*node{a, b}}, nil
	case `\sqrt`:
		var deg *node
		if p.isP("[") {
			p.next()
			d, err := p.sum()
			if err != nil {
				return nil, err
			}
			if !p.isP("]") {
				return nil, errSyntax
			}
			p.next()
			deg = d
		}
		a, err := p.arg()
		if err != nil {
			return nil, err
		}
		if deg != nil {
			return &node{op: opFunc, name: "root", kids: []*node{a, deg}}, nil
		}
		return &node{op: opFunc, name: "sqrt", kids: []*node{a}}, nil
	case `\pi`:
		return &node{op: opConst, name: "pi"}, nil
	case `\infty`, `\infin`:
		return &node{op: opConst, name: "inf"}, nil
	case `\ldots`, `\cdots`, `\dots`, `\dotsc`, `\dotsb`:
		return &node{op: opConst, name: "ellipsis"}, nil
	case `\emptyset`, `\varnothing`:
		return &node{op: opSeq, open: '{', close: '}'}, nil
	case `\{`:
		l, err := p.list('{', `\}`)
		if err != nil {
			return nil, err
		}
		if !p.isC(`\}`) {
			return nil, errSyntax
		}
		p.next()
		l.open, l.close = '{', '}'
		return l, nil
	case `\lfloor`, `\lceil`:
		inner, err := p.sum()
		if err != nil {
			return nil, err
		}
		if !p.isC(`\rfloor`) && !p.isC(`\rceil`) {
			return nil, errSyntax
		}
		p.next()
		name := "floor"
		if t.s == `\lceil` {
			name = "ceil"
		}
		return &node{op: opFunc, name: name, kids: []*node{inner}}, nil
	case `\lvert`, `\vert`, `\mid`, `\|`:
		inner, err := p.sum()
		if err != nil {
			return nil, err
		}
		if !p.isC(`\rvert`) && !p.isC(`\vert`) && !p.isC(`\mid`) && !p.isC(`\|`) {
			return nil, errSyntax
		}
		p.next()
		return &node{op: opFunc, name: "abs", kids: []*node{inner}}, nil
	case `\langle`:
		l, err := p.list('(', `\rangle`)
		if err != nil {
			return nil, err
		}
		if !p.isC(`\rangle`) {
			return nil, errSyntax
		}
		p.next()
		l.open, l.close = '(', ')'
		return l, nil
	case `\begin`:
		return p.environment()
	case `\overline`, `\vec`, `\hat`, `\bar`, `\tilde`, `\widehat`, `\overrightarrow`, `\angle`, `\triangle`, `\dot`:
		// a named object (segment, vector, angle): an opaque atom
		if p.isP("{") {
			g, err := p.subscriptText()
			if err != nil {
				return nil, err
			}
			return &node{op: opVar, name: t.s + "{" + g + "}"}, nil
		}
		a, err := p.primary()
		if err != nil {
			return nil, err
		}
		if a.op == opVar {
			return &node{op: opVar, name: t.s + a.name}, nil
		}
		return a, nil
	}
	if f, ok := funcCmds[t.s]; ok {
		return p.funcApply(f)
	}
	if len(t.s) > 2 {
		// any other command is a symbol (\alpha, \theta, \Delta)
		v := &node{op: opVar, name: t.s}
		if p.isP("_") {
			p.next()
			sub, err := p.subscriptText()
			if err != nil {
				return nil, err
			}
			v.name += "_" + sub
		}
		return v, nil
	}
	return nil, errSyntax
}

// environment reads \begin{name} ... \end{name}; matrices become opMatrix.
func (p *parser) environment() (*node, error) {
	if !p.isP("{") {
		return nil, errSyntax
	}
	name, err := p.subscriptText()
	if err != nil {
		return nil, err
	}
	switch strings.TrimSuffix(name, "*") {
	case "matrix", "pmatrix", "bmatrix", "Bmatrix", "vmatrix", "Vmatrix", "smallmatrix", "array":
	default:
		return nil, errSyntax
	}
	if name == "array" && p.isP("{") {
		if _, err := p.subscriptText(); err != nil {
			return nil, err
		}
	}
	var rows [][]*node
	var row []*node
	for {
		if !p.bud.spend(1) {
			return nil, errBudget
		}
		if p.isC(`\end`) {
			p.next()
			if p.isP("{") {
				if _, err := p.subscriptText(); err != nil {
					return nil, err
				}
			}
			break
		}
		if p.peek().k == tEOF {
			return nil, errSyntax
		}
		if p.isC(`\\`) {
			p.next()
			rows = append(rows, row)
			row = nil
			continue
		}
		if p.isP("&") {
			p.next()
			if len(row) == 0 {
				return nil, errSyntax
			}
			continue
		}
		c, err := p.sum()
		if err != nil {
			return nil, err
		}
		row = append(row, c)
		if !p.isP("&") && !p.isC(`\\`) && !p.isC(`\end`) {
			return nil, errSyntax
		}
	}
	if len(row) > 0 {
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, errSyntax
	}
	cols := len(rows[0])
	m := &node{op: opMatrix, rows: len(rows), cols: cols}
	for _, r := range rows {
		if len(r) != cols {
			return nil, errSyntax
		}
		m.kids = append(m.kids, r...)
	}
	return m, nil
}

func ratInt(x int64) *big.Rat { return new(big.Rat).SetInt64(x) }
