package task

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Datasets in verl's layout (GPU.md "Data and evaluation"), as parquet or
// as JSONL lines of the same shape: data_source, prompt (chat messages,
// the system prompt first), ability, reward_model {style, ground_truth},
// extra_info {split, index}. The paper trained on such a parquet.

// ErrParquet reports an unreadable parquet dataset.
var ErrParquet = errors.New("task: bad parquet dataset")

// ChatMessage is one message of a verl prompt.
type ChatMessage struct {
	Role    string `parquet:"role" json:"role"`
	Content string `parquet:"content" json:"content"`
}

// VerlRewardModel is verl's reward_model column.
type VerlRewardModel struct {
	Style       string `parquet:"style" json:"style"`
	GroundTruth string `parquet:"ground_truth" json:"ground_truth"`
}

// VerlExtraInfo is verl's extra_info column (other fields are ignored).
type VerlExtraInfo struct {
	Split string `parquet:"split" json:"split"`
	Index int64  `parquet:"index" json:"index"`
}

// VerlRow is one row of a verl-style dataset. The prompt is a parquet LIST
// of structs, as pyarrow writes a column of lists of dicts.
type VerlRow struct {
	DataSource  string          `parquet:"data_source" json:"data_source"`
	Prompt      []ChatMessage   `parquet:"prompt,list" json:"prompt"`
	Ability     string          `parquet:"ability" json:"ability"`
	RewardModel VerlRewardModel `parquet:"reward_model" json:"reward_model"`
	ExtraInfo   VerlExtraInfo   `parquet:"extra_info" json:"extra_info"`
}

// PaperSystemPrompt is the system prompt of the paper's training and
// evaluation (the one of its OpenR1-Math-46k parquet): think in
// <think>...</think>, then answer in \boxed{}.
const PaperSystemPrompt = "Your task is to follow a systematic, thorough reasoning process before providing the final solution. " +
	"This involves analyzing, summarizing, exploring, reassessing, and refining your thought process through multiple iterations. " +
	"Structure your response into two sections: Thought and Solution. In the Thought section, present your reasoning using the format: " +
	"\"<think>\\n {thoughts} </think>\\n\". Each thought should include detailed analysis, brainstorming, verification, and refinement of ideas. " +
	"After \"</think>\\n,\" in the Solution section, provide the final, logical, and accurate answer, clearly derived from the exploration in the Thought section. " +
	"If applicable, include the answer in \\boxed{} for closed-form results like multiple choices or mathematical solutions."

// problemOf turns a verl row into a Problem: the last user message is the
// prompt, a system message the system prompt, ground_truth the answer, the
// id "<data_source>-<index>" (or "<row>" without a source), the kind math.
func (r VerlRow) problemOf(row int) (Problem, error) {
	p := Problem{Source: r.DataSource, Family: r.Ability, Answer: strings.TrimSpace(r.RewardModel.GroundTruth), Kind: KindMath}
	for _, m := range r.Prompt {
		switch m.Role {
		case "system":
			p.System = m.Content
		case "user":
			p.Prompt = strings.TrimSpace(m.Content)
		}
	}
	if p.Prompt == "" {
		return p, fmt.Errorf("row %d: no user message in prompt", row)
	}
	if p.Answer == "" {
		return p, fmt.Errorf("row %d: empty reward_model.ground_truth", row)
	}
	switch {
	case r.DataSource != "":
		p.ID = r.DataSource + "-" + strconv.FormatInt(r.ExtraInfo.Index, 10)
	default:
		p.ID = strconv.Itoa(row)
	}
	return p, nil
}

// decodeVerlLine reads one JSONL line in verl's shape.
func decodeVerlLine(b []byte) (Problem, error) {
	var r VerlRow
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return Problem{}, fmt.Errorf("verl-style line: %v", err)
	}
	p, err := r.problemOf(0)
	if err != nil {
		return p, err
	}
	if r.DataSource == "" {
		p.ID = "" // ReadJSONL numbers it by line
	}
	return p, nil
}

// ReadParquet reads a verl-style parquet dataset. Duplicate ids are an
// error (give distinct extra_info.index within a data_source).
func ReadParquet(r io.ReaderAt, size int64) (ds Dataset, err error) {
	defer func() {
		if v := recover(); v != nil { // a corrupt file must not take the process down
			ds, err = Dataset{}, fmt.Errorf("%w: %v", ErrParquet, v)
		}
	}()
	if err := checkParquetFrame(r, size); err != nil {
		return Dataset{}, err
	}
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return Dataset{}, fmt.Errorf("%w: %v", ErrParquet, err)
	}
	for _, col := range []string{"prompt", "reward_model"} {
		if _, ok := f.Schema().Lookup(col); !ok {
			if !hasColumnPrefix(f.Schema(), col) {
				return Dataset{}, fmt.Errorf("%w: no %q column (want verl's data_source, prompt, ability, reward_model, extra_info)", ErrParquet, col)
			}
		}
	}
	rd := parquet.NewGenericReader[VerlRow](f)
	defer rd.Close()
	seen := map[string]int{}
	buf := make([]VerlRow, 256)
	row := 0
	for {
		n, err := rd.Read(buf)
		for _, vr := range buf[:n] {
			p, perr := vr.problemOf(row)
			if perr != nil {
				return ds, fmt.Errorf("%w: %v", ErrParquet, perr)
			}
			if prev, dup := seen[p.ID]; dup {
				return ds, fmt.Errorf("%w: row %d: id %q already used by row %d", ErrParquet, row, p.ID, prev)
			}
			seen[p.ID] = row
			ds.Problems = append(ds.Problems, p)
			row++
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return ds, fmt.Errorf("%w: row %d: %v", ErrParquet, row, err)
		}
	}
	return ds, nil
}

// checkParquetFrame checks the magic at both ends and that the footer
// length fits the file before the library reads the footer: a 17-byte file
// claiming a 2 GiB footer made parquet.OpenFile allocate 2 GiB.
func checkParquetFrame(r io.ReaderAt, size int64) error {
	const magic = "PAR1"
	if size < 12 {
		return fmt.Errorf("%w: %d bytes is too short for a parquet file", ErrParquet, size)
	}
	var head [4]byte
	var tail [8]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return fmt.Errorf("%w: %v", ErrParquet, err)
	}
	if _, err := r.ReadAt(tail[:], size-8); err != nil {
		return fmt.Errorf("%w: %v", ErrParquet, err)
	}
	if string(head[:]) != magic || string(tail[4:]) != magic {
		return fmt.Errorf("%w: no PAR1 magic at both ends", ErrParquet)
	}
	footer := int64(binary.LittleEndian.Uint32(tail[:4]))
	if footer > size-12 {
		return fmt.Errorf("%w: footer of %d bytes in a %d-byte file", ErrParquet, footer, size)
	}
	return nil
}

func hasColumnPrefix(s *parquet.Schema, name string) bool {
	for _, path := range s.Columns() {
		if len(path) > 0 && path[0] == name {
			return true
		}
	}
	return false
}

// WriteParquet writes rows as a verl-style parquet file.
func WriteParquet(w io.Writer, rows []VerlRow) error {
	pw := parquet.NewGenericWriter[VerlRow](w)
	if _, err := pw.Write(rows); err != nil {
		return fmt.Errorf("task: write parquet: %w", err)
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("task: write parquet: %w", err)
	}
	return nil
}

// DatasetOptions adjust a loaded dataset.
type DatasetOptions struct {
	// System replaces every problem's system prompt when not empty
	// (PaperSystemPrompt for the paper's setting).
	System string
	// ThinkGate grades only the text after the last </think> and gives
	// format_gate to a response without one: kind math becomes math-think
	// and arith arith-think (verifier.Lookup).
	ThinkGate bool
}

// Apply returns d with the options applied (d is not modified).
func (d Dataset) Apply(o DatasetOptions) Dataset {
	out := Dataset{Name: d.Name, Problems: make([]Problem, len(d.Problems))}
	for i, p := range d.Problems {
		if o.System != "" {
			p.System = o.System
		}
		if o.ThinkGate {
			switch p.Kind {
			case KindMath, "":
				p.Kind = "math-think"
			case KindArith:
				p.Kind = "arith-think"
			}
		}
		out.Problems[i] = p
	}
	return out
}

// LoadFile reads a dataset file by its extension: .parquet (verl layout),
// else JSONL (plain {problem, answer} shapes or verl-style lines). The
// dataset is named after the file.
func LoadFile(path string, o DatasetOptions) (Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return Dataset{}, fmt.Errorf("task: %w", err)
	}
	defer f.Close()
	var ds Dataset
	if strings.EqualFold(filepath.Ext(path), ".parquet") {
		st, err := f.Stat()
		if err != nil {
			return ds, fmt.Errorf("task: %w", err)
		}
		ds, err = ReadParquet(f, st.Size())
		if err != nil {
			return ds, fmt.Errorf("%s: %w", path, err)
		}
	} else if ds, err = ReadJSONL(f); err != nil {
		return ds, fmt.Errorf("%s: %w", path, err)
	}
	ds.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return ds.Apply(o), nil
}
