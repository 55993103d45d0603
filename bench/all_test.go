package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestSummaryLines(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []string
	}{
		{"set-up line dropped", "setup\nresult 1\n", []string{"result 1"}},
		{"indented details dropped", "setup\n  rep 1: x\n\tdetail\nresult\n\n", []string{"result"}},
		{"only a set-up line", "setup\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SummaryLines(tc.out); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("SummaryLines(%q) = %q, want %q", tc.out, got, tc.want)
			}
		})
	}
}

func TestAllRunsEveryTargetAndCountsFailures(t *testing.T) {
	var gotArgs [][]string
	target := func(name string, fail bool) Target {
		return Target{Name: name, Run: func(_ context.Context, w io.Writer, args []string) error {
			gotArgs = append(gotArgs, args)
			fmt.Fprintf(w, "%s set-up\n  detail\n%s result\n", name, name)
			if fail {
				return errors.New("broken | pipe")
			}
			return nil
		}}
	}
	var out bytes.Buffer
	err := All(context.Background(), &out, AllConfig{Targets: []Target{target("a", false), target("b", true), target("c", false)}, Quick: true})
	if err == nil || !strings.Contains(err.Error(), "1 of 3 targets failed") {
		t.Fatalf("All: err %v, want 1 of 3 failed", err)
	}
	for _, want := range []string{"| a | ok |", "| b | FAILED: broken / pipe |", "| c | ok |", "a result |", "=== exgrpo bench b --quick"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if len(gotArgs) != 3 || !reflect.DeepEqual(gotArgs[0], []string{"--quick"}) {
		t.Errorf("targets ran with %q, want three runs with --quick", gotArgs)
	}
}
