package inspect

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"go.uber.org/zap"
)

// TestVersionsView: a built-in single-object version, then a full and a
// delta Object Store version, each shown with its transport, kind and
// sizes.
func TestVersionsView(t *testing.T) {
	srv := bustest.Server(t)
	b := bustest.Open(t, srv, bus.DefaultConfig("vv"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.PublishWeights(ctx, 0, []byte("built-in checkpoint bytes")); err != nil {
		t.Fatal(err)
	}
	p, err := transfer.NewPublisher(b, transfer.DefaultConfig(transfer.TransportObjects, t.TempDir()), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	file := make([]byte, 1<<16)
	for v := int64(1); v <= 2; v++ {
		dir, _ := p.Stage(v)
		file[int(v)*100] ^= 1
		if err := os.WriteFile(filepath.Join(dir, weights.CheckpointFile), file, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(ctx, v, dir, weights.FormatBuiltin); err != nil {
			t.Fatal(err)
		}
	}
	s, err := NewSource(bustest.Conn(t, srv, "inspect"), "vv")
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Latest != 2 || len(v.Versions) != 3 {
		t.Fatalf("view %+v, want latest 2 and three versions", v)
	}
	for i, want := range []struct{ transport, kind string }{{"object", "-"}, {"objects", "full"}, {"objects", "delta"}} {
		if r := v.Versions[i]; r.Version != int64(i) || r.Transport != want.transport || r.Kind != want.kind {
			t.Errorf("row %d %+v, want v%d %s %s", i, r, i, want.transport, want.kind)
		}
	}
	if d := v.Versions[2]; d.Bytes != 1<<16 || d.Stored <= 0 || d.Stored*20 > d.Bytes || d.Base != 1 || d.Full != 1 {
		t.Errorf("delta row %+v: want 64 KiB stored in under 1/20, base 1, full 1", d)
	}
	var out bytes.Buffer
	if err := WriteTable(&out, v); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "policy version 2, 3 versions stored") || !strings.Contains(out.String(), "delta") {
		t.Errorf("table:\n%s", out.String())
	}
	if _, err := ParseArgs([]string{"versions", "--run", "vv"}, &out); err != nil {
		t.Errorf("ParseArgs versions: %v", err)
	}
}
