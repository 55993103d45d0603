package replay

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
)

func foldAll(t testing.TB, cfg Config, rs []Report) *Pool {
	t.Helper()
	p := mustNew(t, cfg)
	for _, r := range rs {
		mustApply(t, p, r)
	}
	return p
}

// The state is a deterministic fold (ALGORITHM.md E2-E5): the same reports
// give byte-identical snapshots, and those differ from a different sequence.
func TestFoldIsDeterministic(t *testing.T) {
	cfg := DefaultConfig()
	a := foldAll(t, cfg, randomReports(1, 8, 40, 60, 5))
	b := foldAll(t, cfg, randomReports(1, 8, 40, 60, 5))
	if !bytes.Equal(a.Snapshot(), b.Snapshot()) {
		t.Fatal("same reports, different snapshots")
	}
	c := foldAll(t, cfg, randomReports(2, 8, 40, 60, 5))
	if bytes.Equal(a.Snapshot(), c.Snapshot()) {
		t.Fatal("different reports, same snapshot")
	}
	if s := a.Stats(); s.Questions == 0 || s.Retired == 0 || s.Trajectories == 0 {
		t.Fatalf("generator too tame to test anything: %+v", s)
	}
}

// Property: for random report sequences and every split point, restoring a
// snapshot taken after the first part and folding the rest gives the same
// bytes, stats, history, candidates and samples as the uninterrupted fold.
func TestSnapshotRestoreThenFoldEqualsUninterrupted(t *testing.T) {
	for seed := range uint64(12) {
		K := []int{2, 4, 8}[seed%3]
		cfg := DefaultConfig()
		cfg.K, cfg.Mu = K, float64(K)/2
		rs := randomReports(100+seed, K, 30, 40, int(seed%4))
		whole := foldAll(t, cfg, rs)
		want := whole.Snapshot()
		for cut := 0; cut <= len(rs); cut += 1 + int(seed%5) {
			part := foldAll(t, cfg, rs[:cut])
			p, err := Restore(cfg, part.Snapshot())
			if err != nil {
				t.Fatalf("seed %d cut %d: restore: %v", seed, cut, err)
			}
			if !bytes.Equal(p.Snapshot(), part.Snapshot()) {
				t.Fatalf("seed %d cut %d: restore did not round-trip", seed, cut)
			}
			for _, r := range rs[cut:] {
				mustApply(t, p, r)
			}
			if got := p.Snapshot(); !bytes.Equal(got, want) {
				t.Fatalf("seed %d cut %d: restored+folded snapshot (%d bytes) differs from uninterrupted (%d bytes)", seed, cut, len(got), len(want))
			}
			if fmt.Sprint(p.Stats()) != fmt.Sprint(whole.Stats()) {
				t.Fatalf("seed %d cut %d: stats %+v, want %+v", seed, cut, p.Stats(), whole.Stats())
			}
			for q := range 30 {
				id := fmt.Sprintf("q%03d", q)
				if !slices.Equal(p.History(id), whole.History(id)) {
					t.Fatalf("seed %d cut %d: history of %s differs", seed, cut, id)
				}
				if fmt.Sprint(p.Candidates(id)) != fmt.Sprint(whole.Candidates(id)) {
					t.Fatalf("seed %d cut %d: candidates of %s differ", seed, cut, id)
				}
			}
			if a, b := p.Sample(7, rngFor(seed)), whole.Sample(7, rngFor(seed)); !slices.Equal(a, b) {
				t.Fatalf("seed %d cut %d: samples %v vs %v", seed, cut, a, b)
			}
			// A redelivered report is refused without changing anything.
			if len(rs) > 0 {
				if err := p.Apply(rs[len(rs)-1]); !errors.Is(err, ErrStaleReport) {
					t.Fatalf("redelivery: %v, want ErrStaleReport", err)
				}
			}
		}
	}
}

func TestRestoreRejectsDamage(t *testing.T) {
	cfg := DefaultConfig()
	good := foldAll(t, cfg, randomReports(5, 8, 20, 20, 2)).Snapshot()
	flip := bytes.Clone(good)
	flip[len(flip)/2] ^= 0x10
	version := bytes.Clone(good)
	version[4] = 99
	tests := []struct {
		name string
		data []byte
		cfg  Config
		want error
	}{
		{"empty", nil, cfg, ErrCorruptSnapshot},
		{"magic", append([]byte("XXXX"), good[4:]...), cfg, ErrCorruptSnapshot},
		{"truncated", good[:len(good)-9], cfg, ErrCorruptSnapshot},
		{"bit flip", flip, cfg, ErrCorruptSnapshot},
		{"version", version, cfg, ErrSnapshotVersion},
		{"other K", good, Config{K: 4, Mu: 2, Sigma: 1, MaxCandidates: 32}, ErrInvalidConfig},
		{"bad config", good, Config{}, ErrInvalidConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Restore(tc.cfg, tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("Restore = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Restore(cfg, good); err != nil {
		t.Fatalf("good snapshot: %v", err)
	}
	// The sampling settings may change across a restore.
	other := cfg
	other.Selection, other.Sigma, other.MaxCandidates = SelectUniform, 2, 4
	if _, err := Restore(other, good); err != nil {
		t.Fatalf("restore with other sampling settings: %v", err)
	}
}

// FuzzRestore: Restore never panics, and what it accepts re-encodes to a
// snapshot that restores to the same bytes. The body decoder is also fuzzed
// without the checksum, which random mutations would otherwise rarely pass.
func FuzzRestore(f *testing.F) {
	cfg := DefaultConfig()
	empty := mustNew(f, cfg)
	f.Add(empty.Snapshot())
	for seed := range uint64(3) {
		f.Add(foldAll(f, cfg, randomReports(seed, 8, 10, 8, 1)).Snapshot())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(p *Pool) {
			s := p.Snapshot()
			q, err := Restore(cfg, s)
			if err != nil {
				t.Fatalf("re-encoded snapshot rejected: %v", err)
			}
			if !bytes.Equal(q.Snapshot(), s) {
				t.Fatal("re-encoded snapshot does not round-trip")
			}
			p.Sample(5, rngFor(1))
			for _, id := range p.RetiredIDs() {
				if !p.Retired(id) {
					t.Fatalf("%s listed retired but Retired() is false", id)
				}
			}
		}
		if p, err := Restore(cfg, data); err == nil {
			check(p)
		}
		if len(data) > 5 {
			if p, err := restoreBody(cfg, data[5:]); err == nil {
				check(p)
			}
		}
	})
}
