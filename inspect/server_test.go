package inspect

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/wire"
)

func getJSON[T any](t *testing.T, url string, wantCode int) T {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantCode {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, b, wantCode)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return v
}

// The page's API: the same views as the command line, errors as JSON with
// their status, only GET, and a live run's new steps picked up on the next
// request (the ledger reads only what was added).
func TestServeAPI(t *testing.T) {
	f := newFixture(t)
	src := f.source(t)
	_, l := f.ledger(t)
	ts := httptest.NewServer(NewHandler(src, ServeConfig{Refresh: time.Nanosecond}, nil))
	defer ts.Close()

	page, err := http.Get(ts.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if page.StatusCode != 200 || !strings.Contains(string(body), `id="slider"`) || !strings.Contains(string(body), `src="app.js"`) {
		t.Fatalf("index: %d %.200s", page.StatusCode, body)
	}
	for _, asset := range []string{"/app.js", "/style.css"} {
		r, err := http.Get(ts.URL + asset)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("%s: %v %v", asset, err, r)
		}
		r.Body.Close()
	}

	tl := getJSON[TimelineView](t, ts.URL+"/api/timeline", 200)
	if tl.K != fxK || tl.LastStep != fxSteps-1 || !reflect.DeepEqual(tl.Points, l.Points) {
		t.Fatalf("timeline K %d last %d, %d points; want the ledger's", tl.K, tl.LastStep, len(tl.Points))
	}
	if got := getJSON[BucketsView](t, ts.URL+"/api/buckets?at=5", 200); !reflect.DeepEqual(got, l.Buckets(fxRun, 5)) {
		t.Errorf("buckets?at=5 %+v", got)
	}
	if got, want := getJSON[StepView](t, ts.URL+"/api/step/4", 200), must(l.Step(fxRun, 4)); !reflect.DeepEqual(got, want) {
		t.Errorf("step/4 differs")
	}
	tid := f.reports[3].Groups[1].TrajectoryIDs[2]
	if got := getJSON[TrajectoryView](t, ts.URL+"/api/trajectory?id="+tid, 200); got.ID != tid || got.Text != f.scored[tid].Traj.Text ||
		got.Reward != f.scored[tid].Reward || got.Tokens != len(f.scored[tid].Traj.Tokens) {
		t.Errorf("trajectory %s: %+v", tid, got)
	}
	for path, code := range map[string]int{"/api/step/999": 404, "/api/step/x": 400, "/api/question?id=nope": 404,
		"/api/trajectory?id=nope": 404, "/api/buckets?at=x": 400} {
		if e := getJSON[map[string]string](t, ts.URL+path, code); e["error"] == "" {
			t.Errorf("%s: no error message", path)
		}
	}
	if r, err := http.Post(ts.URL+"/api/timeline", "application/json", strings.NewReader("{}")); err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST answered %v %v, want 405", r.StatusCode, err)
	}

	// One more step arrives: a mixed step where every fresh rollout failed.
	next := wire.StepReport{RunID: fxRun, Step: fxSteps, Mixed: true, Pass1: 0, UnixMs: 1}
	for _, g := range f.reports[fxSteps-1].Groups {
		if g.Replayed {
			continue
		}
		gr := wire.GroupReport{QuestionID: g.QuestionID, Size: fxK}
		for i := range fxK {
			gr.TrajectoryIDs = append(gr.TrajectoryIDs, fmt.Sprintf("%d/%s/%d", fxSteps, g.QuestionID, i))
			gr.Rewards, gr.Advantages, gr.Reasons = append(gr.Rewards, 0), append(gr.Advantages, 0), append(gr.Reasons, "wrong_value")
		}
		next.Groups = append(next.Groups, gr)
	}
	data, err := wire.Encode(&next)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.b.JS.Publish(context.Background(), f.b.Names.Subject(bus.Control), data); err != nil {
		t.Fatal(err)
	}
	tl = getJSON[TimelineView](t, ts.URL+"/api/timeline", 200)
	if len(tl.Points) != fxSteps+1 || tl.LastStep != fxSteps {
		t.Fatalf("after a new report: %d points, last step %d", len(tl.Points), tl.LastStep)
	}
	last, prev := tl.Points[fxSteps], tl.Points[fxSteps-1]
	// E2: k = 0 stores nothing and moves nothing.
	if !reflect.DeepEqual(last.Buckets, prev.Buckets) || last.Trajectories != prev.Trajectories || last.Retired != prev.Retired {
		t.Errorf("an all-wrong step changed the pool: %+v after %+v", last, prev)
	}
	if got := getJSON[StepView](t, ts.URL+fmt.Sprintf("/api/step/%d", fxSteps), 200); len(got.Groups) != len(next.Groups) {
		t.Errorf("new step's groups %d, want %d", len(got.Groups), len(next.Groups))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
