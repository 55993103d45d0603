package verifier

import (
	"math/big"
	"regexp"
	"strings"
)

// normalized is one answer string after normalisation, with the facts that
// normalisation removed but grading still needs.
type normalized struct {
	s       string // the normalised answer
	percent bool   // a percent sign or word was removed
}

// textWrappers are commands whose braced argument is plain text or a
// typeface change; their content is unwrapped (or dropped when it is a unit).
var textWrappers = []string{`\textnormal`, `\textbf`, `\textit`, `\textrm`, `\textsf`, `\texttt`,
	`\text`, `\mbox`, `\hbox`, `\mathrm`, `\mathbf`, `\mathit`, `\mathsf`, `\mathtt`, `\mathbb`,
	`\mathcal`, `\operatorname`, `\boldsymbol`, `\bm`, `\boxed`, `\fbox`}

// unitWords are dropped when they follow a number ("125 miles", "3 cm^2").
var unitWords = map[string]bool{
	"units": true, "unit": true, "cm": true, "mm": true, "km": true, "m": true, "meter": true,
	"meters": true, "metre": true, "metres": true, "inch": true, "inches": true, "in": false,
	"feet": true, "foot": true, "ft": true, "yard": true, "yards": true, "mile": true, "miles": true,
	"mph": true, "kg": true, "g": false, "gram": true, "grams": true, "pound": true, "pounds": true,
	"lb": true, "lbs": true, "ounce": true, "ounces": true, "oz": true, "dollar": true, "dollars": true,
	"cent": true, "cents": true, "yuan": true, "euro": true, "euros": true, "hour": true, "hours": true,
	"minute": true, "minutes": true, "min": true, "second": true, "seconds": true, "sec": false,
	"day": true, "days": true, "week": true, "weeks": true, "year": true, "years": true, "month": true,
	"months": true, "degree": true, "degrees": true, "deg": true, "radians": true, "sq": true,
	"square": true, "cubic": true, "liter": true, "liters": true, "litre": true, "litres": true,
	"ml": true, "people": true, "students": true, "points": true, "ways": true, "times": true,
	"km/h": true, "m/s": true, "cm^2": true, "m^2": true, "percent": true, "pages": true,
	"apples": true, "marbles": true, "coins": true, "books": true, "boxes": true, "balls": true,
	"handshakes": true, "games": true, "items": true, "numbers": true, "integers": true,
	"centimeters": true, "millimeters": true, "kilometers": true, "square centimeters": true,
}

var (
	reSpaceThousands = regexp.MustCompile(`(^|[^\d.,])(\d{1,3}(?: \d{3})+)($|[^\d])`)
	reCommaThousands = regexp.MustCompile(`(^|[^\d.,])(\d{1,3}(?:,\d{3})+)($|[^\d,])`)
	reDecimalComma   = regexp.MustCompile(`^-?(\d+),(\d+)$`)
	reFracDigits     = regexp.MustCompile(`\\frac\s*(\d)\s*(\d)`)
	reFracDigitBrace = regexp.MustCompile(`\\frac\s*(\d)\s*\{`)
	reFracBraceDigit = regexp.MustCompile(`\\frac\s*(\{[^{}]*\})\s*(\d)`)
	reFracLetters    = regexp.MustCompile(`\\frac\s*([a-zA-Z\d])\s*([a-zA-Z\d])`)
	reSqrtDigit      = regexp.MustCompile(`\\sqrt\s*(\d)`)
	reSqrtParen      = regexp.MustCompile(`\\sqrt\s*\(`)
	reRepeating      = regexp.MustCompile(`(\d*)\.(\d*)\\overline\{(\d{1,30})\}`)
	reWordOr         = regexp.MustCompile(`([\d)\]}])\s*(?:or|and)\s*([A-Z(\[\d\\-])`)
)

// normalize rewrites one extracted answer into the form the parser reads:
// one spelling per construct, no delimiters, no units, no typographic noise.
// It is linear in len(s) up to a constant number of passes.
func normalize(s string) normalized {
	var n normalized
	s = fixDoubleBackslash(s)
	// Thousands separators written as ",\!" or "{,}" (before \! is dropped).
	s = strings.ReplaceAll(s, `,\!`, "")
	s = strings.ReplaceAll(s, `{,}`, "")
	s = strings.ReplaceAll(s, `{, }`, "")
	s = unicodeReplacer.Replace(s)
	s = delimiterReplacer.Replace(s)
	s = removeSizing(s)
	s = fracReplacer.Replace(s)
	// Percent and degrees, before text unwrapping so "\text{ percent}" goes too.
	if strings.Contains(s, "%") {
		n.percent = true
		s = strings.ReplaceAll(s, `\%`, " ")
		s = strings.ReplaceAll(s, "%", " ")
	}
	s = degreeReplacer.Replace(s)
	s = currencyReplacer.Replace(s)
	s = unwrapText(s)
	s = dropUnits(s)
	s, pct := dropWords(s)
	n.percent = n.percent || pct
	if strings.Contains(s, "or") || strings.Contains(s, "and") {
		s = reWordOr.ReplaceAllString(s, "$1,$2")
	}
	s = strings.TrimSpace(s)
	s = strings.Trim(s, "*") // markdown bold: **73**
	s = strings.TrimRight(s, " .;:")
	s = strings.TrimSpace(strings.TrimRight(s, ","))
	s = strings.TrimLeft(s, ":")
	// Thousands separators and decimal commas.
	if strings.IndexByte(s, ',') >= 0 {
		if m := reDecimalComma.FindStringSubmatch(s); m != nil {
			intPart, frac := m[1], m[2]
			if intPart == "0" || (len(frac) >= 2 && (len(frac) != 3 || len(intPart) > 3)) {
				s = strings.Replace(s, ",", ".", 1)
			}
		}
		if depthZeroOnly(s) {
			s = reCommaThousands.ReplaceAllStringFunc(s, func(x string) string { return strings.ReplaceAll(x, ",", "") })
		}
	}
	if strings.IndexByte(s, ' ') >= 0 && depthZeroOnly(s) {
		s = reSpaceThousands.ReplaceAllStringFunc(s, func(x string) string {
			m := reSpaceThousands.FindStringSubmatch(x)
			return m[1] + strings.ReplaceAll(m[2], " ", "") + m[3]
		})
	}
	if strings.Contains(s, `\frac`) {
		s = reFracDigits.ReplaceAllString(s, `\frac{$1}{$2}`)
		s = reFracDigitBrace.ReplaceAllString(s, `\frac{$1}{`)
		s = reFracBraceDigit.ReplaceAllString(s, `\frac$1{$2}`)
		s = reFracLetters.ReplaceAllString(s, `\frac{$1}{$2}`)
	}
	if strings.Contains(s, `\overline`) {
		s = reRepeating.ReplaceAllStringFunc(s, repeatingToFrac)
	}
	if strings.Contains(s, `sqrt`) {
		s = reSqrtDigit.ReplaceAllString(s, `\sqrt{$1}`)
		s = reSqrtParen.ReplaceAllString(s, `sqrt(`)
	}
	n.s = strings.TrimSpace(s)
	return n
}

// depthZeroOnly reports whether s has no brackets at all, the only place
// where "1,000" is read as one thousand rather than a pair.
func depthZeroOnly(s string) bool {
	return !strings.ContainsAny(s, "()[]{}")
}

// fixDoubleBackslash turns "\\frac" (a command whose backslash was escaped
// twice on its way into the data) into "\frac", leaving the row separator
// "\\" of matrices alone.
func fixDoubleBackslash(s string) string {
	if !strings.Contains(s, `\\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && s[i+1] == '\\' {
			if i+2 < len(s) && isLetter(s[i+2]) {
				b.WriteByte('\\')
				i++ // drop one backslash; the command follows
				continue
			}
			b.WriteString(`\\`)
			i++
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

var unicodeReplacer = strings.NewReplacer(
	"−", "-", "–", "-", "×", `\times `, "·", `\cdot `, "÷", `\div `, "≤", `\le `, "≥", `\ge `,
	"≠", `\ne `, "π", `\pi `, "∞", `\infty `, "√", `\sqrt`, "²", "^2", "³", "^3", "°", "",
	"€", "", "£", "", "¥", "", "∪", `\cup `, "∈", `\in `, "±", `\pm `, "\u00a0", " ", "’", "'",
	"\n", " ", "\r", " ", "\t", " ", "\f", `\f`,
)

var delimiterReplacer = strings.NewReplacer(
	`\\`, `\\`, // a row separator stays whole
	`\$`, " ", "$", " ", `\(`, " ", `\)`, " ", `\[`, " ", `\]`, " ",
	`\displaystyle`, " ", `\!`, "", `\,`, " ", `\;`, " ", `\:`, " ", `\quad`, " ", `\qquad`, " ",
	`\ `, " ", "~", " ", `\limits`, "",
)

var fracReplacer = strings.NewReplacer(`\dfrac`, `\frac`, `\tfrac`, `\frac`, `\cfrac`, `\frac`,
	`\dbinom`, `\binom`, `\tbinom`, `\binom`)

var degreeReplacer = strings.NewReplacer(`^{\circ}`, "", `^\circ`, "", `{}^\circ`, "", `\circ`, "",
	`\degree`, "", `^{\prime}`, "'", `^\prime`, "'")

var currencyReplacer = strings.NewReplacer(`\euro`, "", `\pounds`, "", "USD", "", "Rs.", "")

// removeSizing drops \left, \right and the \big family (and the "." that
// stands for an invisible delimiter after them).
func removeSizing(s string) string {
	if !strings.Contains(s, `\left`) && !strings.Contains(s, `\right`) && !strings.Contains(s, `\big`) && !strings.Contains(s, `\Big`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] == '\\' {
			j := i + 1
			for j < len(s) && isLetter(s[j]) {
				j++
			}
			switch s[i+1 : j] {
			case "left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl", "biggr", "Biggl", "Biggr":
				if j < len(s) && s[j] == '.' {
					j++
				}
				i = j
				continue
			}
			b.WriteString(s[i:j])
			if j == i+1 && j < len(s) {
				b.WriteByte(s[j])
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// unwrapText replaces \text{...} and friends by their content. A content
// that is a connector ("and", "or") becomes a comma; a content made only of
// letters right after a number is a unit and is dropped.
func unwrapText(s string) string {
	if !strings.Contains(s, `\t`) && !strings.Contains(s, `\m`) && !strings.Contains(s, `\b`) &&
		!strings.Contains(s, `\o`) && !strings.Contains(s, `\h`) && !strings.Contains(s, `\f`) {
		return s
	}
	for iter := 0; iter < 64; iter++ {
		at, name := -1, ""
		for _, w := range textWrappers {
			if i := strings.Index(s, w); i >= 0 && (at < 0 || i < at) {
				// must not be a prefix of a longer command (\textbf vs \text)
				e := i + len(w)
				if e < len(s) && isLetter(s[e]) {
					continue
				}
				at, name = i, w
			}
		}
		if at < 0 {
			return s
		}
		k := at + len(name)
		for k < len(s) && s[k] == ' ' {
			k++
		}
		if k >= len(s) || s[k] != '{' {
			s = s[:at] + " " + s[at+len(name):]
			continue
		}
		end, closed := matchBrace(s, k)
		inner := s[k+1 : min(end, len(s))]
		rest := ""
		if closed {
			rest = s[end+1:]
		}
		t := strings.TrimSpace(inner)
		lt := strings.ToLower(t)
		before := strings.TrimRight(s[:at], " ")
		var repl string
		switch {
		case lt == "and" || lt == "or" || lt == "," || lt == "und" || lt == "et":
			repl = ", "
		case (name == `\text` || name == `\mbox` || name == `\textnormal` || name == `\textrm` || name == `\hbox` || name == `\textbf` || name == `\textit` ||
			(name == `\mathrm` && (len(t) >= 2 || unitWords[t]))) &&
			isUnitText(t) && before != "" && (isDigit(before[len(before)-1]) || strings.HasSuffix(before, "}") || strings.HasSuffix(before, ")")):
			repl = " "
			// a power of the unit ("\mbox{ cm}^2") goes with it
			r := strings.TrimLeft(rest, " ")
			if strings.HasPrefix(r, "^") && len(r) > 1 {
				if r[1] == '{' {
					if e, ok := matchBrace(r, 1); ok {
						rest = r[e+1:]
					}
				} else {
					rest = r[2:]
				}
			}
		case name == `\boxed` || name == `\fbox`:
			repl = " " + inner + " "
		default:
			repl = " " + inner + " "
			if name == `\text` || name == `\mathrm` || name == `\textbf` || name == `\mbox` || name == `\textnormal` || name == `\textrm` {
				if isWordText(t) {
					// keep a text answer recognisable as words
					repl = " " + t + " "
				}
			}
		}
		s = s[:at] + repl + rest
	}
	return s
}

// isUnitText reports whether t looks like a unit: letters, spaces and a
// few unit symbols, starting with a letter.
func isUnitText(t string) bool {
	if t == "" || !isLetter(t[0]) {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(isLetter(c) || c == ' ' || c == '/' || c == '^' || isDigit(c) || c == '.') {
			return false
		}
	}
	return true
}

func isWordText(t string) bool {
	if len(t) < 2 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if !(isLetter(t[i]) || t[i] == ' ') {
			return false
		}
	}
	return true
}

// dropWords removes unit words after numbers and percent words, and turns
// the connector words "and", "or" between items into commas. It reports
// whether a percent word was seen.
func dropWords(s string) (string, bool) {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 128 && isLetter(byte(r)) }) {
		return s, false
	}
	pct := false
	var out []string
	fields := strings.Fields(s)
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		lf := strings.ToLower(strings.TrimRight(f, ".,;"))
		trail := f[len(strings.TrimRight(f, ".,;")):]
		switch {
		case lf == "percent" || lf == "percentage" || lf == "pct":
			pct = true
			if trail != "" {
				out = append(out, trail)
			}
			continue
		case lf == "and" || lf == "or":
			out = append(out, ",")
			continue
		}
		if unitWords[lf] && len(out) > 0 {
			prev := out[len(out)-1]
			if prev != "" && (isDigit(prev[len(prev)-1]) || unitWords[strings.ToLower(prev)] || strings.HasSuffix(prev, "}")) {
				if trail != "" {
					out = append(out, trail)
				}
				continue
			}
		}
		out = append(out, f)
	}
	r := strings.Join(out, " ")
	for strings.Contains(r, ", ,") {
		r = strings.ReplaceAll(r, ", ,", ",")
	}
	r = strings.ReplaceAll(r, ",,", ",")
	return r, pct
}

// dropUnits removes a unit word right after a number ("35 cm", "3 cm^2",
// "12 miles"), in one pass.
func dropUnits(s string) string {
	var b []byte // allocated on the first removal
	last := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) || i+1 >= len(s) || isDigit(s[i+1]) || s[i+1] == '.' {
			continue
		}
		j := i + 1
		for j < len(s) && s[j] == ' ' {
			j++
		}
		k := j
		for k < len(s) && isLetter(s[k]) {
			k++
		}
		if k == j || (k < len(s) && (isDigit(s[k]) || s[k] == '_')) || !unitWords[asciiLower(s[j:k])] {
			continue
		}
		// a power of the unit goes with it
		if k+1 < len(s) && s[k] == '^' && (s[k+1] == '2' || s[k+1] == '3') {
			k += 2
		} else if k+3 < len(s) && s[k] == '^' && s[k+1] == '{' && (s[k+2] == '2' || s[k+2] == '3') && s[k+3] == '}' {
			k += 4
		}
		b = append(b, s[last:i+1]...)
		last = k
		i = k - 1
	}
	if b == nil {
		return s
	}
	return string(append(b, s[last:]...))
}

// repeatingToFrac turns a repeating decimal A.B\overline{C} into the exact
// fraction (ABC - AB) / (10^|B| (10^|C| - 1)).
func repeatingToFrac(m string) string {
	sub := reRepeating.FindStringSubmatch(m)
	a, b, c := sub[1], sub[2], sub[3]
	if len(a)+len(b) > 30 {
		return m
	}
	abc, _ := new(big.Int).SetString("0"+a+b+c, 10)
	ab, _ := new(big.Int).SetString("0"+a+b, 10)
	num := new(big.Int).Sub(abc, ab)
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(c))), nil)
	den.Sub(den, big.NewInt(1))
	den.Mul(den, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(b))), nil))
	return `\frac{` + num.String() + `}{` + den.String() + `}`
}
