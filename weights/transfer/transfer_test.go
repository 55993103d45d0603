package transfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/weights"
	"go.uber.org/zap"
)

// trainer simulates the learner's weights: fp32 master tensors moved by
// AdamW-like steps of ±lr, written as a bf16 HF-style version (two shards,
// an index, a config that never changes and a tokenizer file).
type trainer struct {
	master [][]float32
	rng    *rand.Rand
}

func newTrainer(seed uint64) *trainer {
	t := &trainer{rng: rand.New(rand.NewPCG(seed, 7))}
	for _, n := range []int{40000, 25001, 9} {
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(t.rng.NormFloat64() * 0.02)
		}
		t.master = append(t.master, w)
	}
	return t
}

func (t *trainer) step() {
	for _, w := range t.master {
		for i := range w {
			if t.rng.IntN(2) == 0 {
				w[i] -= 1e-6
			} else {
				w[i] += 1e-6
			}
		}
	}
}

func bf16bits(f float32) uint16 {
	b := math.Float32bits(f)
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// files returns the version's files by name.
func (t *trainer) files(tb testing.TB) map[string][]byte {
	out := map[string][]byte{"config.json": []byte(`{"model_type":"qwen2"}`), "tokenizer.json": []byte(`{"v":1}`),
		"model.safetensors.index.json": []byte(`{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}}`)}
	enc := func(w []float32) []byte {
		b := make([]byte, 2*len(w))
		for i, f := range w {
			binary.LittleEndian.PutUint16(b[2*i:], bf16bits(f))
		}
		return b
	}
	for i, group := range [][]int{{0}, {1, 2}} {
		var ts []weights.NamedTensor
		for _, j := range group {
			ts = append(ts, weights.NamedTensor{Name: string(rune('a' + j)), Dtype: "BF16", Shape: []int64{int64(len(t.master[j]))}, Data: enc(t.master[j])})
		}
		var buf bytes.Buffer
		if err := weights.WriteSafetensors(&buf, ts, map[string]string{"format": "pt"}); err != nil {
			tb.Fatal(err)
		}
		out[[]string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[i]] = buf.Bytes()
	}
	return out
}

func publishFiles(t *testing.T, p *Publisher, v int64, files map[string][]byte) {
	t.Helper()
	dir, err := p.Stage(v)
	if err != nil {
		t.Fatal(err)
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Publish(context.Background(), v, dir, weights.FormatHF); err != nil {
		t.Fatalf("publish v%d: %v", v, err)
	}
}

func checkLocal(t *testing.T, l *Local, want map[string][]byte) {
	t.Helper()
	if len(l.Manifest.Files) != len(want) {
		t.Fatalf("v%d has %d files, want %d", l.Version, len(l.Manifest.Files), len(want))
	}
	for n, b := range want {
		got, err := os.ReadFile(l.Path(n))
		if err != nil {
			t.Fatalf("v%d: %v", l.Version, err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("v%d: %s differs from what the learner published", l.Version, n)
		}
	}
}

func setup(t *testing.T) (*bus.Bus, func(name string) *bus.Bus) {
	srv := bustest.Server(t)
	open := func(name string) *bus.Bus {
		cfg := bus.DefaultConfig("wt")
		return bustest.Open(t, srv, cfg)
	}
	return open("learner"), open
}

func fetcher(t *testing.T, b *bus.Bus, actor string) *Fetcher {
	cfg := DefaultFetcherConfig(actor)
	cfg.Dir = t.TempDir()
	f, err := NewFetcher(b, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestObjectsDeltaChain: full versions every FullEvery, deltas between;
// an actor following every version rebuilds each bit for bit from its
// previous copy; the deltas are a small fraction of the full versions;
// unchanged files are stored as "same".
func TestObjectsDeltaChain(t *testing.T) {
	lb, open := setup(t)
	cfg := DefaultConfig(TransportObjects, t.TempDir())
	cfg.FullEvery, cfg.Keep = 4, 2
	p, err := NewPublisher(lb, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	f := fetcher(t, open("actor"), "a1")
	tr := newTrainer(1)
	ctx := context.Background()
	for v := int64(0); v < 7; v++ {
		if v > 0 {
			tr.step()
		}
		want := tr.files(t)
		publishFiles(t, p, v, want)
		a, err := Lookup(ctx, lb, v)
		if err != nil {
			t.Fatal(err)
		}
		isFull := v%4 == 0
		if (a.Base < 0) != isFull || a.Full != v/4*4 {
			t.Fatalf("v%d: base %d full %d, want full=%v from v%d", v, a.Base, a.Full, isFull, v/4*4)
		}
		for _, o := range a.Objects {
			want := KindDelta
			switch {
			case isFull:
				want = KindFull
			case !strings.HasSuffix(o.File, ".safetensors"):
				want = KindSame
			}
			if o.Kind != want {
				t.Errorf("v%d %s stored as %s, want %s", v, o.File, o.Kind, want)
			}
		}
		if !isFull && a.Stored()*10 > a.Manifest.Bytes() {
			t.Errorf("v%d: delta version stores %d bytes of %d", v, a.Stored(), a.Manifest.Bytes())
		}
		l, err := f.Materialise(ctx, v)
		if err != nil {
			t.Fatalf("materialise v%d: %v", v, err)
		}
		checkLocal(t, l, want)
		if wantVia := "1 deltas from local v" + string(rune('0'+v-1)); !isFull && l.Via != wantVia {
			t.Errorf("v%d came %q, want %q", v, l.Via, wantVia)
		}
		l.Release()
	}
	// Pruned: v0 and v1..v3 (chain of v3, outside Keep 2 of v6: v5, v6 and their chain from v4).
	anns, _, err := List(ctx, lb)
	if err != nil {
		t.Fatal(err)
	}
	var vs []int64
	for _, a := range anns {
		vs = append(vs, a.Version)
	}
	if len(vs) != 3 || vs[0] != 4 || vs[2] != 6 {
		t.Errorf("versions kept %v, want [4 5 6]", vs)
	}
	if _, err := lb.Weights.GetInfo(ctx, objectName(2, "model-00001-of-00002.safetensors", KindDelta)); err == nil {
		t.Errorf("object of pruned v2 still there")
	}
}

// TestObjectsMissedFiveVersionsCatchUp: an actor that held v1 and missed
// v2..v6 rebuilds v6 from its copy and five deltas; a new actor with
// nothing rebuilds it from the full v0 and six deltas.
func TestObjectsMissedFiveVersionsCatchUp(t *testing.T) {
	lb, open := setup(t)
	cfg := DefaultConfig(TransportObjects, t.TempDir())
	cfg.Keep = 10
	p, _ := NewPublisher(lb, cfg, zap.NewNop())
	ab := open("actor")
	f := fetcher(t, ab, "a1")
	tr := newTrainer(2)
	ctx := context.Background()
	publishFiles(t, p, 0, tr.files(t))
	tr.step()
	publishFiles(t, p, 1, tr.files(t))
	l, err := f.Materialise(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	for v := int64(2); v <= 6; v++ {
		tr.step()
		publishFiles(t, p, v, tr.files(t))
	}
	want := tr.files(t)
	l, err = f.Materialise(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	checkLocal(t, l, want)
	if l.Via != "5 deltas from local v1" {
		t.Errorf("v6 came %q, want 5 deltas from local v1", l.Via)
	}
	fresh := fetcher(t, ab, "a2")
	l2, err := fresh.Materialise(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	checkLocal(t, l2, want)
	if l2.Via != "full v0 + 6 deltas" {
		t.Errorf("fresh actor's v6 came %q, want full v0 + 6 deltas", l2.Via)
	}
}

// TestObjectsCorruptDeltaFetchesFull: (1) an actor whose local copy was
// damaged gets a reconstruction that fails its digest and rebuilds the
// version from the full one instead; (2) a delta object that is itself
// wrong fails the digest both ways and is reported as such, and the actor
// recovers at the next full version.
func TestObjectsCorruptDeltaFetchesFull(t *testing.T) {
	lb, open := setup(t)
	cfg := DefaultConfig(TransportObjects, t.TempDir())
	cfg.FullEvery, cfg.Keep = 4, 10
	p, _ := NewPublisher(lb, cfg, zap.NewNop())
	f := fetcher(t, open("actor"), "a1")
	tr := newTrainer(3)
	ctx := context.Background()
	publishFiles(t, p, 0, tr.files(t))
	tr.step()
	publishFiles(t, p, 1, tr.files(t))
	l, err := f.Materialise(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// (1) damage the local copy of v1 (same size, one bit).
	shard := l.Path("model-00001-of-00002.safetensors")
	b, _ := os.ReadFile(shard)
	b[len(b)-3] ^= 1
	if err := os.WriteFile(shard, b, 0o644); err != nil {
		t.Fatal(err)
	}
	tr.step()
	want := tr.files(t)
	publishFiles(t, p, 2, want)
	l, err = f.Materialise(ctx, 2)
	if err != nil {
		t.Fatalf("materialise v2 over a damaged v1: %v", err)
	}
	checkLocal(t, l, want)
	if l.Via != "full v0 + 2 deltas" {
		t.Errorf("v2 came %q, want full v0 + 2 deltas", l.Via)
	}

	// (2) v3's delta of shard 1 is replaced by a well-formed delta that
	// builds something else.
	tr.step()
	publishFiles(t, p, 3, tr.files(t))
	a3, _ := Lookup(ctx, lb, 3)
	other := newTrainer(99).files(t)["model-00001-of-00002.safetensors"]
	base := want["model-00001-of-00002.safetensors"]
	bad, err := weights.EncodeDelta(base, other, "", a3.Manifest.Files[1].SHA256, weights.DeltaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.put(ctx, objectName(3, "model-00001-of-00002.safetensors", KindDelta), bad, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Materialise(ctx, 3); !errors.Is(err, weights.ErrDigest) {
		t.Fatalf("materialise v3 with a bad delta: err %v, want ErrDigest", err)
	}
	tr.step()
	publishFiles(t, p, 4, tr.files(t)) // full (FullEvery 4)
	l, err = f.Materialise(ctx, 4)
	if err != nil || l.Via != "full" {
		t.Fatalf("v4 after the bad delta: %+v, %v", l, err)
	}
	checkLocal(t, l, tr.files(t))
}

// TestFSPublishLeasePrune: the learner writes DIR/v<N>, actors read it in
// place; a version a live lease names outlives Keep; a lapsed lease (older
// than LeaseTTL) or a released one does not.
func TestFSPublishLeasePrune(t *testing.T) {
	lb, open := setup(t)
	root := t.TempDir()
	cfg := DefaultConfig(TransportFS, root)
	cfg.Keep, cfg.LeaseTTL = 2, time.Minute
	p, _ := NewPublisher(lb, cfg, zap.NewNop())
	clock := time.Now()
	p.now = func() time.Time { return clock }
	f := fetcher(t, open("actor"), "host-1")
	tr := newTrainer(4)
	ctx := context.Background()
	publishFiles(t, p, 1, tr.files(t))
	held, err := f.Materialise(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkLocal(t, held, tr.files(t))
	if held.Dir != filepath.Join(root, "v1") || held.Via != TransportFS {
		t.Fatalf("fs version at %s via %s", held.Dir, held.Via)
	}
	for v := int64(2); v <= 4; v++ {
		tr.step()
		publishFiles(t, p, v, tr.files(t))
	}
	exists := func(v int64) bool { _, err := os.Stat(filepath.Join(root, weights.VersionDir(v))); return err == nil }
	if !exists(1) || exists(2) || !exists(3) || !exists(4) {
		t.Fatalf("with a lease on v1 and Keep 2: v1..v4 exist %v %v %v %v, want true false true true", exists(1), exists(2), exists(3), exists(4))
	}
	// The lease lapses: the actor stopped renewing (a dead actor) for
	// longer than LeaseTTL.
	clock = clock.Add(2 * time.Minute)
	tr.step()
	publishFiles(t, p, 5, tr.files(t))
	if exists(1) {
		t.Errorf("v1 still there after its lease lapsed")
	}
	held.Release()
	_, leases, _ := List(ctx, lb)
	if len(leases) != 0 {
		t.Errorf("leases after release: %+v", leases)
	}
}

// TestFSIncompleteNeverLoaded: a directory without its manifest (a copy in
// progress, a learner that died mid-write) or with a file cut short is
// refused, whatever an announcement says.
func TestFSIncompleteNeverLoaded(t *testing.T) {
	lb, open := setup(t)
	root := t.TempDir()
	p, _ := NewPublisher(lb, DefaultConfig(TransportFS, root), zap.NewNop())
	f := fetcher(t, open("actor"), "a1")
	ctx := context.Background()
	tr := newTrainer(5)
	publishFiles(t, p, 1, tr.files(t))
	good, _ := Lookup(ctx, lb, 1)
	announce := func(v int64, dir string) {
		a := good
		a.Version, a.Path = v, dir
		a.Manifest.Version = v
		js, _ := json.Marshal(a)
		if _, err := lb.State.Put(ctx, AnnouncementKey(v), js); err != nil {
			t.Fatal(err)
		}
	}
	// v2: files present, no manifest.
	d2 := filepath.Join(root, "v2")
	if err := os.CopyFS(d2, os.DirFS(filepath.Join(root, "v1"))); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(d2, weights.ManifestFile))
	announce(2, d2)
	if _, err := f.Materialise(ctx, 2); !errors.Is(err, weights.ErrIncomplete) {
		t.Errorf("no manifest: err %v, want ErrIncomplete", err)
	}
	// v3: manifest present, a shard cut short.
	d3 := filepath.Join(root, "v3")
	if err := os.CopyFS(d3, os.DirFS(filepath.Join(root, "v1"))); err != nil {
		t.Fatal(err)
	}
	m, _ := weights.OpenVersion(d3, weights.CheckSizes)
	m.Version = 3
	if err := weights.WriteManifest(d3, m); err != nil {
		t.Fatal(err)
	}
	shard := filepath.Join(d3, "model-00002-of-00002.safetensors")
	b, _ := os.ReadFile(shard)
	os.WriteFile(shard, b[:len(b)/2], 0o644)
	announce(3, d3)
	for _, c := range []weights.Check{weights.CheckSizes, weights.CheckDigests} {
		f.cfg.Check = c
		if _, err := f.Materialise(ctx, 3); !errors.Is(err, weights.ErrIncomplete) && !errors.Is(err, weights.ErrDigest) {
			t.Errorf("short shard, check %d: err %v, want ErrIncomplete", c, err)
		}
	}
	_, leases, _ := List(ctx, lb)
	if len(leases) != 0 {
		t.Errorf("refused versions left leases: %+v", leases)
	}
}

// TestFSVersionDisappearsMidLoad: the directory vanishes between the
// announcement and the read: a clear ErrVersionGone naming the version and
// path, no lease left behind, and the next version loads.
func TestFSVersionDisappearsMidLoad(t *testing.T) {
	lb, open := setup(t)
	root := t.TempDir()
	p, _ := NewPublisher(lb, DefaultConfig(TransportFS, root), zap.NewNop())
	f := fetcher(t, open("actor"), "a1")
	ctx := context.Background()
	tr := newTrainer(6)
	publishFiles(t, p, 1, tr.files(t))
	f.beforeCheck = func(dir string) { os.RemoveAll(dir) }
	_, err := f.Materialise(ctx, 1)
	if !errors.Is(err, ErrVersionGone) || !strings.Contains(err.Error(), "v1 at "+filepath.Join(root, "v1")) {
		t.Fatalf("err %v, want ErrVersionGone naming v1 and its path", err)
	}
	_, leases, _ := List(ctx, lb)
	if len(leases) != 0 {
		t.Errorf("lease left behind: %+v", leases)
	}
	f.beforeCheck = nil
	tr.step()
	publishFiles(t, p, 2, tr.files(t))
	l, err := f.Materialise(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	checkLocal(t, l, tr.files(t))
	l.Release()
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]Config{
		"transport": DefaultConfig("nfs", "/x"), "dir": DefaultConfig(TransportFS, ""),
		"full every": {Transport: TransportObjects, Dir: "/x", FullEvery: 0, Keep: 1, LeaseTTL: time.Second},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", name, err)
		}
	}
	if err := DefaultConfig(TransportObjects, "/x").Validate(); err != nil {
		t.Error(err)
	}
}
