package weights

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var updateFixtures = flag.Bool("update-fixtures", false, "rewrite testdata/delta/diff-huff.delta from today's encoder")

// TestDeltaFixtures pins the wire format of each codec id. testdata/delta
// holds two versions of a file (a bf16 tensor after an AdamW step, an fp32
// tensor with NaN, infinity and subnormal changes) and their deltas:
// diff-fse as the encoder of commit 772bed0 wrote it (the previous
// default), and diff-huff. Each must still apply bit-exact, and today's
// encoder must write the same bytes: a change to a format needs a new
// codec id, or old deltas would be misread.
func TestDeltaFixtures(t *testing.T) {
	dir := filepath.Join("testdata", "delta")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	base, target := read("base.safetensors"), read("target.safetensors")
	opt := DeltaOptions{ChunkBytes: 4096, Workers: 1}
	for _, tc := range []struct {
		comp Compressor
		file string
	}{{DiffFSE, "diff-fse-772bed0.delta"}, {DiffHuff, "diff-huff.delta"}} {
		t.Run(string(tc.comp), func(t *testing.T) {
			opt.Compressor = tc.comp
			now, err := EncodeDelta(base, target, "", "", opt)
			if err != nil {
				t.Fatal(err)
			}
			if *updateFixtures && tc.comp == DiffHuff {
				if err := os.WriteFile(filepath.Join(dir, tc.file), now, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			old := read(tc.file)
			buf := append([]byte(nil), base...)
			if err := ApplyDelta(buf, old, 1); err != nil {
				t.Fatalf("the fixture delta does not apply: %v", err)
			}
			if !bytes.Equal(buf, target) {
				t.Fatal("the fixture delta applies to something else")
			}
			if !bytes.Equal(now, old) {
				t.Errorf("today's %s encoder writes %d bytes that differ from the fixture's %d: the format changed under the same codec id", tc.comp, len(now), len(old))
			}
		})
	}
}
