package inspect

import (
	"context"
	"os"
	"reflect"
	"testing"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/replay"
	rsvc "github.com/exgrpo/exgrpo/replay/service"
	"go.uber.org/zap"
)

// On the directory of a finished `exgrpo run` ($EXGRPO_INSPECT_RUNDIR), the
// pool inspect folds from the streams equals the replay service's last
// snapshot, bucket for bucket and question for question. The run takes
// minutes, so this runs only when pointed at one:
//
//	exgrpo run --run-dir /tmp/r --steps 30 --start 0
//	EXGRPO_INSPECT_RUNDIR=/tmp/r go test -run TestRunDirectoryMatchesReplaySnapshot ./inspect
func TestRunDirectoryMatchesReplaySnapshot(t *testing.T) {
	dir := os.Getenv("EXGRPO_INSPECT_RUNDIR")
	if dir == "" {
		t.Skip("set EXGRPO_INSPECT_RUNDIR to the directory of a finished exgrpo run")
	}
	ctx := context.Background()
	s, err := OpenRunDir(ctx, dir, "", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := replay.DefaultConfig()
	cfg.K, cfg.Mu = l.K, float64(l.K)/2
	snap, err := rsvc.ReadSnapshot(ctx, &bus.Bus{Names: s.Names, JS: s.JS}, cfg)
	if err != nil || snap == nil {
		t.Fatalf("replay snapshot: %v (present %v)", err, snap != nil)
	}
	got, want := l.Pool().Stats(), snap.Stats()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("inspect's fold %+v, the replay service's pool %+v", got, want)
	}
	for _, q := range snap.RetiredIDs() {
		if !l.Pool().Retired(q) {
			t.Errorf("%s retired in the service's pool only", q)
		}
	}
	seen := map[string]bool{}
	for _, r := range l.Reports {
		for _, g := range r.Report.Groups {
			if seen[g.QuestionID] {
				continue
			}
			seen[g.QuestionID] = true
			a, aok := l.Pool().Question(g.QuestionID)
			b, bok := snap.Question(g.QuestionID)
			if a != b || aok != bok {
				t.Errorf("question %s: inspect %+v, service %+v", g.QuestionID, a, b)
			}
			mine, theirs := l.Pool().Candidates(g.QuestionID), snap.Candidates(g.QuestionID)
			if len(mine) < len(theirs) {
				t.Errorf("question %s: %d stored, the service has %d", g.QuestionID, len(mine), len(theirs))
				continue
			}
			mine = mine[len(mine)-len(theirs):] // the service lists its most recent MaxCandidates
			for i := range theirs {
				if mine[i].ID != theirs[i].ID {
					t.Errorf("question %s candidate %d: %s vs %s", g.QuestionID, i, mine[i].ID, theirs[i].ID)
				}
			}
		}
	}
	t.Logf("pool after step %d: %v, %d retired, %d trajectories; %d messages re-read by sequence", got.Step, got.Buckets, got.Retired, got.Trajectories, s.Refetched)
}
