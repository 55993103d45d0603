package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"model.safetensors", true}, {"tokenizer/vocab.json", true}, {"", false}, {"/etc/passwd", false},
		{"../x", false}, {"a/../../x", false}, {"a//b", false}, {".", false}, {ManifestFile, false}, {"a\\b", false},
	} {
		if got := ValidName(tc.name); got != tc.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	for n, c := range files {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStageCommitOpen: a staged version is invisible until committed;
// once committed it opens at both check levels; a file changed or removed
// afterwards is caught.
func TestStageCommitOpen(t *testing.T) {
	root := t.TempDir()
	st, err := Stage(root, 3)
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, st, map[string]string{"model-00001-of-00002.safetensors": "aaaa", "model-00002-of-00002.safetensors": "bb",
		"model.safetensors.index.json": "{}", "config.json": "{}", "tokenizer/tokenizer.json": "{}"})
	if _, err := OpenVersion(filepath.Join(root, "v3"), CheckSizes); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("before commit: err %v, want ErrIncomplete", err)
	}
	if _, err := OpenVersion(st, CheckSizes); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("staging dir without manifest: err %v, want ErrIncomplete", err)
	}
	dir, m, err := Commit(root, st, 3, FormatHF, map[string]string{"step": "3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != 5 || m.Bytes() != 4+2+2+2+2 || m.Files[0].Name != "config.json" {
		t.Fatalf("manifest %+v", m)
	}
	for _, c := range []Check{CheckSizes, CheckDigests} {
		got, err := OpenVersion(dir, c)
		if err != nil || got.Version != 3 || len(got.Files) != 5 {
			t.Fatalf("OpenVersion(check %d): %+v, %v", c, got, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte("{x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenVersion(dir, CheckDigests); !errors.Is(err, ErrDigest) {
		t.Errorf("changed file: err %v, want ErrDigest", err)
	}
	os.Remove(filepath.Join(dir, "tokenizer/tokenizer.json"))
	if _, err := OpenVersion(dir, CheckSizes); !errors.Is(err, ErrIncomplete) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err %v, want ErrIncomplete wrapping ErrNotExist", err)
	}
	// Publishing v3 again replaces it.
	st2, _ := Stage(root, 3)
	writeFiles(t, st2, map[string]string{CheckpointFile: "new"})
	if _, _, err := Commit(root, st2, 3, FormatBuiltin, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := OpenVersion(dir, CheckDigests); err != nil || m.Format != FormatBuiltin {
		t.Errorf("replaced v3: %+v %v", m, err)
	}
}

func TestManifestValidate(t *testing.T) {
	good := Manifest{Schema: 1, Version: 1, Format: FormatBuiltin, Files: []File{{Name: CheckpointFile, Size: 1, SHA256: strings.Repeat("a", 64)}}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(m *Manifest){
		"schema":         func(m *Manifest) { m.Schema = 2 },
		"format":         func(m *Manifest) { m.Format = "onnx" },
		"no files":       func(m *Manifest) { m.Files = nil },
		"bad name":       func(m *Manifest) { m.Files[0].Name = "../x" },
		"bad digest":     func(m *Manifest) { m.Files[0].SHA256 = "zz" },
		"builtin 2 file": func(m *Manifest) { m.Files = append(m.Files, File{Name: "z", SHA256: strings.Repeat("b", 64)}) },
		"unsorted": func(m *Manifest) {
			m.Format = FormatHF
			m.Files = []File{{Name: "b", SHA256: strings.Repeat("a", 64)}, {Name: "a", SHA256: strings.Repeat("a", 64)}}
		},
	} {
		m := good
		m.Files = append([]File(nil), good.Files...)
		mut(&m)
		if err := m.Validate(); !errors.Is(err, ErrManifest) {
			t.Errorf("%s: err %v, want ErrManifest", name, err)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	b, _ := Manifest{Schema: 1, Version: 1, Format: FormatBuiltin, Files: []File{{Name: CheckpointFile, Size: 1, SHA256: strings.Repeat("a", 64)}}}.Encode()
	f.Add(b)
	f.Add([]byte(`{"schema":1,"files":[{"name":"../../x"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err == nil {
			for _, fl := range m.Files {
				if !ValidName(fl.Name) {
					t.Fatalf("accepted unsafe name %q", fl.Name)
				}
			}
		}
	})
}

func TestParseSafetensors(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, []NamedTensor{{Name: "a", Dtype: "BF16", Shape: []int64{2, 3}, Data: make([]byte, 12)},
		{Name: "b", Dtype: "F32", Shape: []int64{}, Data: make([]byte, 4)}}, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	st, err := ParseSafetensors(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tensors) != 2 || st.Tensors[0].Name != "a" || st.Tensors[1].End != int64(buf.Len()) || st.Metadata["format"] != "pt" || st.DataStart%8 != 0 {
		t.Fatalf("parsed %+v", st)
	}
	st2, err := ReadSafetensors(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil || len(st2.Tensors) != 2 {
		t.Fatalf("ReadSafetensors: %+v %v", st2, err)
	}
	hdr := func(js string, data int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
		return append(append(b, js...), make([]byte, data)...)
	}
	for name, b := range map[string][]byte{
		"short":          {1, 2},
		"huge header":    binary.LittleEndian.AppendUint64(nil, 1<<40),
		"not json":       hdr("nope", 0),
		"unknown dtype":  hdr(`{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}`, 1),
		"past the end":   hdr(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}`, 2),
		"shape mismatch": hdr(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4),
		"overlap":        hdr(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}`, 4),
		"negative dim":   hdr(`{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}`, 0),
	} {
		if _, err := ParseSafetensors(b); !errors.Is(err, ErrSafetensors) {
			t.Errorf("%s: err %v, want ErrSafetensors", name, err)
		}
	}
}

func FuzzParseSafetensors(f *testing.F) {
	var buf bytes.Buffer
	_ = WriteSafetensors(&buf, []NamedTensor{{Name: "a", Dtype: "BF16", Shape: []int64{2}, Data: make([]byte, 4)}}, nil)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseSafetensors(b)
		if err != nil {
			return
		}
		for _, tn := range st.Tensors {
			if tn.Begin < st.DataStart || tn.End > int64(len(b)) || tn.Begin > tn.End {
				t.Fatalf("tensor %+v outside the file of %d bytes", tn, len(b))
			}
		}
	})
}
