package task

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func verlRows() []VerlRow {
	return []VerlRow{
		{DataSource: "aime24", Ability: "math", Prompt: []ChatMessage{{"system", "think first"}, {"user", "What is 2+3?"}},
			RewardModel: VerlRewardModel{"rule", "5"}, ExtraInfo: VerlExtraInfo{"test", 0}},
		{DataSource: "aime24", Ability: "math", Prompt: []ChatMessage{{"user", "What is 7*6?"}},
			RewardModel: VerlRewardModel{"rule", "42"}, ExtraInfo: VerlExtraInfo{"test", 1}},
		{DataSource: "math500", Ability: "math", Prompt: []ChatMessage{{"system", "s"}, {"user", "Solve $x+1=3$."}},
			RewardModel: VerlRewardModel{"rule", "2"}, ExtraInfo: VerlExtraInfo{"test", 0}},
	}
}

var verlWant = []Problem{
	{ID: "aime24-0", Prompt: "What is 2+3?", Answer: "5", Kind: KindMath, Family: "math", System: "think first", Source: "aime24"},
	{ID: "aime24-1", Prompt: "What is 7*6?", Answer: "42", Kind: KindMath, Family: "math", Source: "aime24"},
	{ID: "math500-0", Prompt: "Solve $x+1=3$.", Answer: "2", Kind: KindMath, Family: "math", System: "s", Source: "math500"},
}

// TestVerlParquet writes a parquet file in verl's schema and reads it back
// as problems (prompt from the user message, system prompt kept, answer
// from reward_model.ground_truth, id from data_source and index).
func TestVerlParquet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "train.parquet")
	var buf bytes.Buffer
	if err := WriteParquet(&buf, verlRows()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err := LoadFile(path, DatasetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Name != "train" || !reflect.DeepEqual(ds.Problems, verlWant) {
		t.Fatalf("read %q %+v\nwant %+v", ds.Name, ds.Problems, verlWant)
	}
	paper, err := LoadFile(path, DatasetOptions{System: PaperSystemPrompt, ThinkGate: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paper.Problems {
		if p.System != PaperSystemPrompt || p.Kind != "math-think" {
			t.Fatalf("options not applied: %+v", p)
		}
	}
	if ds.Problems[0].Kind != KindMath {
		t.Fatal("Apply modified its input")
	}
	// Duplicate ids and a file that is not verl's layout are errors.
	dup := append(verlRows(), verlRows()[0])
	buf.Reset()
	if err := WriteParquet(&buf, dup); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadParquet(bytes.NewReader(buf.Bytes()), int64(buf.Len())); !errors.Is(err, ErrParquet) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("duplicate ids: %v", err)
	}
	if _, err := ReadParquet(bytes.NewReader([]byte("PAR1 not a parquet file")), 23); !errors.Is(err, ErrParquet) {
		t.Fatalf("garbage: %v", err)
	}
	// 17 bytes whose footer length claims 2 GiB: refused before the
	// library allocates it (found by FuzzReadParquet).
	bomb := []byte("PAR1\x15\x06\x15Z\x15Z\x15\xfa\x8aPAR1")
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	if _, err := ReadParquet(bytes.NewReader(bomb), int64(len(bomb))); !errors.Is(err, ErrParquet) {
		t.Fatalf("footer bomb: %v", err)
	}
	runtime.ReadMemStats(&m1)
	if n := m1.TotalAlloc - m0.TotalAlloc; n > 64<<20 {
		t.Fatalf("reading a 17-byte file allocated %d bytes", n)
	}
}

// TestVerlJSONL: verl-style JSONL lines and the plain {problem, answer}
// shapes load from the same file.
func TestVerlJSONL(t *testing.T) {
	lines := `{"data_source":"aime24","prompt":[{"role":"system","content":"think first"},{"role":"user","content":"What is 2+3?"}],"ability":"math","reward_model":{"style":"rule","ground_truth":"5"},"extra_info":{"split":"test","index":0}}
{"id":"p1","problem":"What is 1+1?","answer":"2"}
{"prompt":[{"role":"user","content":"Q?"}],"reward_model":{"ground_truth":"7"}}
`
	path := filepath.Join(t.TempDir(), "mixed.jsonl")
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err := LoadFile(path, DatasetOptions{ThinkGate: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []Problem{
		{ID: "aime24-0", Prompt: "What is 2+3?", Answer: "5", Kind: "math-think", Family: "math", System: "think first", Source: "aime24"},
		{ID: "p1", Prompt: "What is 1+1?", Answer: "2", Kind: "math-think"},
		{ID: "3", Prompt: "Q?", Answer: "7", Kind: "math-think"},
	}
	if !reflect.DeepEqual(ds.Problems, want) {
		t.Fatalf("got  %+v\nwant %+v", ds.Problems, want)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	_ = os.WriteFile(bad, []byte(`{"prompt":[{"role":"user","content":"Q?"}],"reward_model":{"ground_truth":""}}`+"\n"), 0o644)
	if _, err := LoadFile(bad, DatasetOptions{}); !errors.Is(err, ErrJSONL) {
		t.Fatalf("empty ground truth: %v, want ErrJSONL", err)
	}
}

// FuzzReadParquet: any bytes give a dataset or ErrParquet, never a panic.
func FuzzReadParquet(f *testing.F) {
	var buf bytes.Buffer
	if err := WriteParquet(&buf, verlRows()); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:buf.Len()/2])
	f.Add([]byte("PAR1PAR1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := ReadParquet(bytes.NewReader(data), int64(len(data))); err != nil && !errors.Is(err, ErrParquet) {
			t.Fatalf("error %v is not ErrParquet", err)
		}
	})
}
