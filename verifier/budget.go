package verifier

// budget bounds the work of one Check. Every token parsed, node evaluated
// and element compared spends steps; once the budget is spent every further
// spend fails and the verdict becomes "timeout". Bounding work this way
// (rather than with a clock and a goroutine) keeps the core deterministic:
// the same input always gets the same verdict on any machine.
type budget struct {
	left int
	out  bool
}

// spend takes n steps and reports whether the budget still holds.
func (b *budget) spend(n int) bool {
	if b.out {
		return false
	}
	b.left -= n
	if b.left < 0 {
		b.out = true
		return false
	}
	return true
}
