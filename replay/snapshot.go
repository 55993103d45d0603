package replay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
)

// Snapshot format, version 1 (all integers varints, zig-zag when signed):
//
//	"EXRP" | u8 version | body | u32 LE CRC-32C of everything before it
//	body: K | hasStep u8 | step | nQuestions | question... | for k = 1..K-1: n | question index...
//	question: id | k u8 | retired u8 | prompt | nTraj | traj... | nEvents | event...
//	traj: id | version | step | sharedPrompt u8 [| prompt] | nTok | token... | log-prob (f32 LE)...
//	event: step | correct u8 | size u8 | from u8 | to u8 | flags u8 | added
//	string: len | bytes;  prompt: len | token...
//
// Questions are written in order of first appearance and buckets in their
// array order, so a restored pool samples exactly like the original and the
// bytes are a function of the folded reports only.
const (
	snapshotMagic   = "EXRP"
	snapshotVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot returns the pool's state in a compact, versioned binary form.
// Pools built by the same reports give identical bytes.
func (p *Pool) Snapshot() []byte {
	return p.AppendSnapshot(make([]byte, 0, 64+6*p.tokens+64*int64(len(p.qs))))
}

// AppendSnapshot appends the snapshot to dst.
func (p *Pool) AppendSnapshot(dst []byte) []byte {
	start := len(dst)
	b := append(dst, snapshotMagic...)
	b = append(b, snapshotVersion)
	b = binary.AppendUvarint(b, uint64(p.cfg.K))
	b = append(b, boolByte(p.hasStep))
	b = binary.AppendVarint(b, p.step)
	b = binary.AppendUvarint(b, uint64(len(p.qs)))
	for i := range p.qs {
		q := &p.qs[i]
		b = appendString(b, q.id)
		b = append(b, q.k, boolByte(q.retired))
		b = appendTokens(b, q.prompt)
		b = binary.AppendUvarint(b, uint64(len(q.trajs)))
		for j := range q.trajs {
			t := &q.trajs[j]
			b = appendString(b, t.id)
			b = binary.AppendVarint(b, t.version)
			b = binary.AppendVarint(b, t.step)
			shared := slices.Equal(t.prompt, q.prompt)
			b = append(b, boolByte(shared))
			if !shared {
				b = appendTokens(b, t.prompt)
			}
			b = appendTokens(b, t.tokens)
			for _, lp := range t.logps {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(lp))
			}
		}
		b = binary.AppendUvarint(b, uint64(len(q.hist)))
		for _, e := range q.hist {
			b = binary.AppendVarint(b, e.step)
			b = append(b, e.correct, e.size, e.from, e.to, e.flags)
			b = binary.AppendUvarint(b, uint64(e.added))
		}
	}
	for k := 1; k < p.cfg.K; k++ {
		b = binary.AppendUvarint(b, uint64(len(p.buckets[k])))
		for _, m := range p.buckets[k] {
			b = binary.AppendUvarint(b, uint64(m.qi))
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTokens(b []byte, ts []int32) []byte {
	b = binary.AppendUvarint(b, uint64(len(ts)))
	for _, t := range ts {
		b = binary.AppendVarint(b, int64(t))
	}
	return b
}

// Restore rebuilds a pool from a Snapshot. cfg.K must match the snapshot's;
// the sampling fields (Mu, Sigma, Selection, MaxCandidates) may differ. Any
// damage gives ErrCorruptSnapshot (or ErrSnapshotVersion), never a panic, and
// the returned pool satisfies every invariant Apply maintains.
func Restore(cfg Config, data []byte) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(data) < len(snapshotMagic)+1+4 || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: missing header", ErrCorruptSnapshot)
	}
	if v := data[len(snapshotMagic)]; v != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrSnapshotVersion, v, snapshotVersion)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptSnapshot)
	}
	p, err := restoreBody(cfg, body[len(snapshotMagic)+1:])
	if errors.Is(err, ErrInvalidConfig) {
		return nil, fmt.Errorf("replay: restore: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptSnapshot, err)
	}
	return p, nil
}

// decoder reads the snapshot body; the first error sticks and later reads return zeros.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint at %d bytes from the end", len(d.b))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint at %d bytes from the end", len(d.b))
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length whose elements take at least minBytes each, so that a
// damaged length cannot make Restore allocate more than the input justifies.
func (d *decoder) count(minBytes int) int {
	v := d.uvarint()
	if d.err == nil && v > uint64(len(d.b)/minBytes) {
		d.fail("length %d exceeds the %d bytes left", v, len(d.b))
		return 0
	}
	return int(v)
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool() bool {
	v := d.byte()
	if v > 1 {
		d.fail("bad flag byte %d", v)
	}
	return v == 1
}

func (d *decoder) string() string {
	n := d.count(1)
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) tokens() []int32 {
	n := d.count(1)
	if d.err != nil || n == 0 {
		return nil
	}
	ts := make([]int32, n)
	for i := range ts {
		v := d.varint()
		if v < math.MinInt32 || v > math.MaxInt32 {
			d.fail("token %d out of int32 range", v)
		}
		ts[i] = int32(v)
	}
	return ts
}

func (d *decoder) float32s(n int) []float32 {
	if d.err != nil {
		return nil
	}
	if len(d.b) < 4*n {
		d.fail("truncated log-probs")
		return nil
	}
	fs := make([]float32, n)
	for i := range fs {
		fs[i] = math.Float32frombits(binary.LittleEndian.Uint32(d.b[4*i:]))
	}
	d.b = d.b[4*n:]
	return fs
}

// restoreBody decodes the body (after magic and version, before the checksum)
// and checks the invariants Apply maintains.
func restoreBody(cfg Config, body []byte) (*Pool, error) {
	d := &decoder{b: body}
	if k := d.uvarint(); d.err == nil && k != uint64(cfg.K) {
		return nil, fmt.Errorf("snapshot has K = %d, config has K = %d (%w)", k, cfg.K, ErrInvalidConfig)
	}
	p, _ := New(cfg)
	p.hasStep = d.bool()
	p.step = d.varint()
	nq := d.count(7)
	if d.err == nil && !p.hasStep && (nq > 0 || p.step != 0) {
		d.fail("questions or step without any folded report")
	}
	p.qs = make([]question, 0, nq)
	for i := 0; i < nq && d.err == nil; i++ {
		q := question{id: d.string(), k: d.byte(), retired: d.bool(), pos: -1}
		q.prompt = d.tokens()
		if _, dup := p.index[q.id]; dup && d.err == nil {
			d.fail("question %q twice", q.id)
		}
		if int(q.k) >= cfg.K || (q.retired && q.k != 0) || q.id == "" {
			d.fail("question %q: bucket %d, retired %v", q.id, q.k, q.retired)
		}
		p.index[q.id] = int32(i)
		nt := d.count(7)
		if nt > 0 {
			q.trajs = make([]stored, 0, nt)
		}
		for j := 0; j < nt && d.err == nil; j++ {
			t := stored{id: d.string(), version: d.varint(), step: d.varint()}
			if d.bool() {
				t.prompt = q.prompt
			} else {
				t.prompt = d.tokens()
			}
			t.tokens = d.tokens()
			t.logps = d.float32s(len(t.tokens))
			if d.err == nil && len(t.tokens) == 0 {
				d.fail("question %q: empty trajectory", q.id)
			}
			t.hash = hashTokens(t.tokens)
			for _, o := range q.trajs {
				if o.hash == t.hash && slices.Equal(o.tokens, t.tokens) {
					d.fail("question %q: duplicate trajectory %q", q.id, t.id)
				}
			}
			q.trajs = append(q.trajs, t)
			p.nTraj++
			p.tokens += int64(len(t.tokens))
		}
		if d.err == nil && ((q.retired && nt > 0) || (nt > 0 && q.k == 0)) {
			d.fail("question %q: %d trajectories with bucket %d, retired %v", q.id, nt, q.k, q.retired)
		}
		ne := d.count(7)
		if ne > 0 {
			q.hist = make([]event, 0, ne)
		}
		for j := 0; j < ne && d.err == nil; j++ {
			e := event{step: d.varint(), correct: d.byte(), size: d.byte(), from: d.byte(), to: d.byte(), flags: d.byte()}
			added := d.uvarint()
			e.added = uint32(added)
			switch {
			case d.err != nil:
			case added > math.MaxUint32 || e.correct > e.size || int(e.from) >= cfg.K || int(e.to) >= cfg.K || e.flags&^flagKnownFlags != 0:
				d.fail("question %q: bad history event at step %d", q.id, e.step)
			case e.step > p.step || (j > 0 && e.step <= q.hist[j-1].step):
				d.fail("question %q: history step %d out of order", q.id, e.step)
			}
			q.hist = append(q.hist, e)
		}
		if q.retired {
			p.retired++
		}
		p.qs = append(p.qs, q)
	}
	for k := 1; k < cfg.K && d.err == nil; k++ {
		n := d.count(1)
		if n > 0 {
			p.buckets[k] = make([]member, 0, n)
		}
		for j := 0; j < n && d.err == nil; j++ {
			qi := d.uvarint()
			if d.err != nil {
				break
			}
			if qi >= uint64(len(p.qs)) {
				d.fail("bucket %d: question index %d of %d", k, qi, len(p.qs))
				break
			}
			q := &p.qs[qi]
			if q.pos >= 0 || int(q.k) != k || len(q.trajs) == 0 {
				d.fail("bucket %d: question %q does not belong there", k, q.id)
				break
			}
			q.pos = int32(j)
			p.buckets[k] = append(p.buckets[k], member{id: q.id, qi: int32(qi)})
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	for i := range p.qs {
		// Out of its bucket with trajectories kept only where its latest
		// event put it there (Config.RetireAfter > 1, Config.ReplayLimit).
		if q := &p.qs[i]; d.err == nil && q.pos < 0 && len(q.trajs) > 0 && (len(q.hist) == 0 || q.hist[len(q.hist)-1].to != 0) {
			d.fail("question %q has trajectories but no bucket", q.id)
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	return p, nil
}
