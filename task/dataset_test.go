package task

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestJSONLRoundTrip(t *testing.T) {
	for _, set := range BuiltinSets() {
		t.Run(set.Name, func(t *testing.T) {
			ds, err := Generate(set.Name, set.Spec, 50, 1)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if err := ds.WriteJSONL(&buf); err != nil {
				t.Fatal(err)
			}
			back, err := ReadJSONL(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back.Problems, ds.Problems) {
				t.Fatalf("round trip changed the problems:\n got %+v\nwant %+v", back.Problems[:1], ds.Problems[:1])
			}
		})
	}
}

func TestReadJSONLFieldNames(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Problem
	}{
		{
			name: "ours",
			line: `{"id":"c2-1","problem":"3+4","answer":"7","solution":"3+4=7,\\boxed{7}","kind":"arith","family":"chain","level":2}`,
			want: Problem{ID: "c2-1", Prompt: "3+4", Answer: "7", Solution: `3+4=7,\boxed{7}`, Kind: "arith", Family: "chain", Level: 2},
		},
		{
			name: "MATH-500",
			line: `{"problem":"What is $1+1$?","solution":"We add: $\\boxed{2}$.","answer":"2","subject":"Prealgebra","level":1,"unique_id":"test/prealgebra/1.json"}`,
			want: Problem{ID: "test/prealgebra/1.json", Prompt: "What is $1+1$?", Answer: "2", Solution: `We add: $\boxed{2}$.`, Kind: KindMath, Family: "Prealgebra", Level: 1},
		},
		{
			name: "MATH without answer field",
			line: `{"problem":"Simplify $\\frac{2}{4}$.","level":"Level 3","type":"Algebra","solution":"It is $\\boxed{\\frac{1}{2}}$."}`,
			want: Problem{ID: "1", Prompt: `Simplify $\frac{2}{4}$.`, Answer: `\frac{1}{2}`, Solution: `It is $\boxed{\frac{1}{2}}$.`, Kind: KindMath, Family: "Algebra", Level: 3},
		},
		{
			name: "GSM8K",
			line: `{"question":"Tom has 3 apples and buys 4. How many?","answer":"3+4=<<3+4=7>>7\n#### 7"}`,
			want: Problem{ID: "1", Prompt: "Tom has 3 apples and buys 4. How many?", Answer: "7", Solution: "3+4=<<3+4=7>>7", Kind: KindMath},
		},
		{
			name: "AIME numeric id and answer",
			line: `{"id":60,"problem":"Find n.","answer":204,"url":"x"}`,
			want: Problem{ID: "60", Prompt: "Find n.", Answer: "204", Kind: KindMath},
		},
		{
			name: "prompt and final_answer",
			line: `{"idx":"a","prompt":"2*3","final_answer":"6","verifier":"arith"}`,
			want: Problem{ID: "a", Prompt: "2*3", Answer: "6", Kind: "arith"},
		},
		{
			name: "null fields are absent",
			line: `{"id":null,"question":"1+1","answer":null,"gold":"2"}`,
			want: Problem{ID: "1", Prompt: "1+1", Answer: "2", Kind: KindMath},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds, err := ReadJSONL(strings.NewReader(tt.line + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			if len(ds.Problems) != 1 || !reflect.DeepEqual(ds.Problems[0], tt.want) {
				t.Fatalf("got %+v\nwant %+v", ds.Problems, tt.want)
			}
		})
	}
}

func TestReadJSONLErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{"not json", "{nope\n"},
		{"no prompt", `{"id":"1","answer":"2"}` + "\n"},
		{"no answer", `{"id":"1","problem":"1+1"}` + "\n"},
		{"bad type", `{"id":"1","problem":["a"],"answer":"2"}` + "\n"},
		{"duplicate id", `{"id":"1","problem":"1+1","answer":"2"}` + "\n" + `{"id":"1","problem":"1+2","answer":"3"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ReadJSONL(strings.NewReader(tt.in)); !errors.Is(err, ErrJSONL) {
				t.Fatalf("err = %v, want ErrJSONL", err)
			}
		})
	}
}

func TestReadJSONLSkipsBlankAndComments(t *testing.T) {
	in := "# a comment\n\n" + `{"problem":"1+1","answer":"2"}` + "\n  \n" + `{"problem":"1+2","answer":"3"}`
	ds, err := ReadJSONL(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Problems) != 2 || ds.Problems[0].ID != "3" || ds.Problems[1].ID != "5" {
		t.Fatalf("got %+v, want two problems with line-number ids 3 and 5", ds.Problems)
	}
}

func TestLastBoxed(t *testing.T) {
	tests := []struct{ in, want string }{
		{`\boxed{5}`, "5"},
		{`a \boxed{1} b \boxed{-12}`, "-12"},
		{`\boxed{\frac{1}{2}}`, `\frac{1}{2}`},
		{`\boxed{unclosed`, ""},
		{`none`, ""},
	}
	for _, tt := range tests {
		if got := LastBoxed(tt.in); got != tt.want {
			t.Errorf("LastBoxed(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzReadJSONL(f *testing.F) {
	f.Add(`{"id":"1","problem":"1+1","answer":"2"}`)
	f.Add(`{"question":"q","answer":"x #### 7"}`)
	f.Add(`{"problem":"p","solution":"\\boxed{\\boxed{}"}`)
	f.Add(`{"id":1e400,"problem":"p","answer":-0}`)
	f.Fuzz(func(t *testing.T, in string) {
		ds, err := ReadJSONL(strings.NewReader(in))
		if err != nil {
			return
		}
		// Whatever loads must survive our own round trip unchanged.
		var buf bytes.Buffer
		if err := ds.WriteJSONL(&buf); err != nil {
			t.Fatal(err)
		}
		back, err := ReadJSONL(&buf)
		if err != nil {
			t.Fatalf("re-read of our own output: %v", err)
		}
		if !reflect.DeepEqual(back.Problems, ds.Problems) {
			t.Fatalf("round trip changed %+v into %+v", ds.Problems, back.Problems)
		}
	})
}
