package service

import (
	"slices"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
)

// TestRetryTaskCarriesPromptIDs: the task that asks again for a refused
// rollout carries the prompt ids of the task it stands for (an engine actor
// never tokenizes and refuses a task without them).
func TestRetryTaskCarriesPromptIDs(t *testing.T) {
	e := newEnv(t)
	vocab := int32(task.BuiltinTokenizer().Size())
	e.forge = func(sc wire.Scored) []wire.Scored {
		if sc.Traj.Step == 1 && sc.Traj.Index == 1 && !strings.Contains(sc.Traj.TaskID, "~") {
			sc.Traj.Tokens = append(wire.Int32s{vocab + 3}, sc.Traj.Tokens[1:]...)
		}
		return []wire.Scored{sc}
	}
	e.runAll(t, testConfig(2))
	byID := map[string]wire.Task{}
	for _, tk := range e.tasks {
		byID[tk.TaskID] = tk
	}
	retries := 0
	for _, tk := range e.tasks {
		base, _, ok := strings.Cut(tk.TaskID, "~")
		if !ok {
			continue
		}
		retries++
		orig, found := byID[base]
		if !found {
			t.Fatalf("retry task %s: the task it stands for (%s) was not seen", tk.TaskID, base)
		}
		if len(tk.PromptTokens) == 0 || !slices.Equal(tk.PromptTokens, orig.PromptTokens) {
			t.Errorf("retry task %s prompt ids %v, want its task's %v", tk.TaskID, tk.PromptTokens, orig.PromptTokens)
		}
	}
	if retries == 0 {
		t.Fatal("no retry task seen: the test did not refuse a rollout")
	}
}
