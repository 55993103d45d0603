package transfer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/weights"
	"go.uber.org/zap"
)

// writeFiles is a PublishFiles writer that puts files into the staged
// directory, as a trainer's SaveWeights does.
func writeFiles(files map[string][]byte) func(context.Context, string) error {
	return func(_ context.Context, dir string) error {
		for n, b := range files {
			if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestPublishFilesHF: an HF directory written by the trainer into the
// staged directory is published with either transport as a FormatHF
// version whose manifest names every file, and an actor materialises it
// bit for bit.
func TestPublishFilesHF(t *testing.T) {
	for _, transport := range []string{TransportFS, TransportObjects} {
		t.Run(transport, func(t *testing.T) {
			lb, open := setup(t)
			p, err := NewPublisher(lb, DefaultConfig(transport, t.TempDir()), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			files := newTrainer(1).files(t)
			if err := p.PublishFiles(context.Background(), 1, weights.FormatHF, writeFiles(files)); err != nil {
				t.Fatal(err)
			}
			a, err := Lookup(context.Background(), lb, 1)
			if err != nil {
				t.Fatal(err)
			}
			if a.Manifest.Format != weights.FormatHF || len(a.Manifest.Files) != len(files) {
				t.Fatalf("announced format %q with %d files, want %q and %d", a.Manifest.Format, len(a.Manifest.Files), weights.FormatHF, len(files))
			}
			l, err := fetcher(t, open("actor"), "a1").Materialise(context.Background(), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			checkLocal(t, l, files)
		})
	}
}

// TestPublishFilesRefusesWrongFormat: files that are not what their format
// says (a built-in version with a stray file, an HF directory without its
// config or missing a shard its index names), a writer that fails, and an
// unknown format are clear errors; nothing is announced and no staging
// directory is left behind.
func TestPublishFilesRefusesWrongFormat(t *testing.T) {
	lb, _ := setup(t)
	root := t.TempDir()
	p, err := NewPublisher(lb, DefaultConfig(TransportFS, root), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	hf := newTrainer(2).files(t)
	without := func(name string) map[string][]byte {
		out := map[string][]byte{}
		for n, b := range hf {
			if n != name {
				out[n] = b
			}
		}
		return out
	}
	cases := []struct {
		name, format string
		write        func(context.Context, string) error
		want         string
	}{
		{"builtin with a stray file", weights.FormatBuiltin, writeFiles(map[string][]byte{weights.CheckpointFile: []byte("x"), "extra.txt": []byte("y")}), "one file"},
		{"builtin without its checkpoint", weights.FormatBuiltin, writeFiles(map[string][]byte{"other.safetensors": []byte("x")}), "one file"},
		{"hf without config", weights.FormatHF, writeFiles(without("config.json")), "config.json"},
		{"hf missing a shard", weights.FormatHF, writeFiles(without("model-00002-of-00002.safetensors")), "model-00002-of-00002.safetensors"},
		{"hf without weights", weights.FormatHF, writeFiles(map[string][]byte{"config.json": []byte("{}")}), "needs model.safetensors"},
		{"writer fails", weights.FormatHF, func(context.Context, string) error { return errors.New("worker died") }, "worker died"},
		{"unknown format", "gguf", writeFiles(hf), "format"},
	}
	for i, c := range cases {
		err := p.PublishFiles(context.Background(), int64(i+1), c.format, c.write)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
		if _, err := Lookup(context.Background(), lb, int64(i+1)); !errors.Is(err, ErrNotAnnounced) {
			t.Errorf("%s: the version was announced (%v)", c.name, err)
		}
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("left in the publisher's directory: %d entries", len(ents))
	}
}
