package inspect

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"go.uber.org/zap"
)

// chromium finds a Chromium or Chrome binary ($EXGRPO_CHROMIUM first).
func chromium() string {
	if p := os.Getenv("EXGRPO_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// The web page, driven by a headless Chromium: it loads at the last step,
// the step slider moves the bucket histogram through time, a step's groups
// link to their question and trajectories, and every number shown is the
// independent fold's. The screenshot goes to the test's temp dir (and to
// $EXGRPO_INSPECT_SCREENSHOT when set, which is how docs/inspect.png is made).
func TestBrowserPage(t *testing.T) {
	bin := chromium()
	if bin == "" {
		t.Skip("no chromium binary found (apt-get install -y chromium, or set EXGRPO_CHROMIUM): skipping the browser test")
	}
	f := newFixture(t)
	src := f.source(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ready := make(chan string, 1)
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, src, ServeConfig{Addr: "127.0.0.1:0", Ready: func(u string) { ready <- u }}, zap.NewNop())
	}()
	var url string
	select {
	case url = <-ready:
	case err := <-served:
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.Headless,
		chromedp.DisableGPU, chromedp.Flag("disable-background-networking", true), chromedp.Flag("no-first-run", true),
		chromedp.WindowSize(1280, 1800), chromedp.UserDataDir(t.TempDir()))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	// counts reads the histogram's bar labels, k = 1..K-1.
	counts := func() []int {
		out, err := chromedp.Run(bctx, chromedp.Evaluate[[]int](`[...document.querySelectorAll('#hist text.count')].map(e => +e.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	text := func(sel string) string {
		s, err := chromedp.Run(bctx, chromedp.TextContent(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	checkStep := func(n int64) {
		t.Helper()
		want := f.expected[n]
		if got := text("#step-label"); got != fmt.Sprint(n) {
			t.Fatalf("step label %q, want %d", got, n)
		}
		if got := counts(); !reflect.DeepEqual(got, want.Buckets[1:]) {
			t.Errorf("step %d histogram %v, want %v (independent fold)", n, got, want.Buckets[1:])
		}
		for sel, v := range map[string]int{"#stat-pool": want.Questions, "#stat-retired": want.Retired, "#stat-traj": want.Trajectories} {
			if got := text(sel); got != fmt.Sprint(v) {
				t.Errorf("step %d %s = %q, want %d", n, sel, got, v)
			}
		}
		if _, err := chromedp.Run(bctx, chromedp.Poll[bool](fmt.Sprintf(`document.getElementById('step-title').textContent === 'Step %d'`, n),
			chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("step %d's groups never shown: %v", n, err)
		}
		ks, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#groups tbody tr[data-q] td.k')].map(e => e.textContent)`))
		if err != nil {
			t.Fatal(err)
		}
		var wantKs []string
		for _, g := range f.reports[n].Groups {
			wantKs = append(wantKs, fmt.Sprintf("%d/%d", g.Correct, g.Size))
		}
		if !reflect.DeepEqual(ks, wantKs) {
			t.Errorf("step %d groups k/K %v, want %v", n, ks, wantKs)
		}
	}

	if err := chromedp.Do(bctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`))); err != nil {
		t.Fatalf("load %s: %v", url, err)
	}
	checkStep(fxSteps - 1)

	// Move the slider back five steps with the keyboard, as a user would.
	const back = 5
	if err := chromedp.Do(bctx, chromedp.Focus(chromedp.CSS("#slider")),
		chromedp.SendKeys(chromedp.CSS("#slider"), strings.Repeat(kb.ArrowLeft, back))); err != nil {
		t.Fatal(err)
	}
	n := int64(fxSteps - 1 - back)
	checkStep(n)
	hash, err := chromedp.Run(bctx, chromedp.Evaluate[string](`location.hash`))
	if err != nil || hash != fmt.Sprintf("#step=%d", n) {
		t.Errorf("hash %q after the slider moved (%v), want #step=%d", hash, err, n)
	}

	// Open the step's first question.
	q := f.reports[n].Groups[0].QuestionID
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`#groups tbody tr[data-q] a.qlink`)),
		chromedp.WaitVisible(chromedp.CSS(`#question-card`))); err != nil {
		t.Fatal(err)
	}
	if got := text("#q-title"); got != "Question "+q {
		t.Fatalf("question title %q, want %q", got, "Question "+q)
	}
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll('#q-steps tbody tr')].map(r => [...r.cells].map(c => c.textContent))`))
	if err != nil {
		t.Fatal(err)
	}
	var want [][]string
	hist := map[int64][2]int{}
	for _, e := range f.pool.History(q) {
		hist[e.Step] = [2]int{e.From, e.To}
	}
	for _, r := range f.reports {
		for _, g := range r.Groups {
			if g.QuestionID == q {
				bk := "-"
				if r.Mixed {
					name := func(k int) string {
						if k == 0 {
							return "none"
						}
						return fmt.Sprint(k)
					}
					bk = name(hist[r.Step][0]) + " → " + name(hist[r.Step][1])
				}
				want = append(want, []string{fmt.Sprint(r.Step), fmt.Sprintf("%d/%d", g.Correct, g.Size), bk})
			}
		}
	}
	if len(rows) != len(want) {
		t.Fatalf("question %s: %d history rows on the page, want %d", q, len(rows), len(want))
	}
	for i, r := range rows {
		if got := []string{r[0], r[3], r[4]}; !reflect.DeepEqual(got, want[i]) {
			t.Errorf("question %s row %d = %v, want %v", q, i, got, want[i])
		}
	}
	stored, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#q-stored tbody tr').length`))
	if err != nil {
		t.Fatal(err)
	}
	if want := len(f.pool.Candidates(q)); stored != want {
		t.Errorf("question %s: %d stored trajectories shown, want %d", q, stored, want)
	}

	// A rollout chip links to its trajectory.
	tid := f.reports[n].Groups[0].TrajectoryIDs[0]
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`#groups tbody tr[data-q] a.chip`)),
		chromedp.WaitVisible(chromedp.CSS(`#traj-card`))); err != nil {
		t.Fatalf("trajectory %s: %v", tid, err)
	}
	if _, err := chromedp.Run(bctx, chromedp.Poll[bool](fmt.Sprintf(`document.getElementById('t-title').textContent === %q`, "Trajectory "+tid),
		chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("trajectory %s: %v", tid, err)
	}
	if got := text("#t-text"); got != f.scored[tid].Traj.Text {
		t.Errorf("trajectory text %q, want %q", got, f.scored[tid].Traj.Text)
	}
	if open, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`!document.getElementById('question-card').classList.contains('hidden')`)); err != nil || !open {
		t.Errorf("opening a trajectory closed the question (%v)", err)
	}

	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "inspect.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(png) < 10_000 {
		t.Errorf("screenshot of %d bytes: blank page?", len(png))
	}
	if out := os.Getenv("EXGRPO_INSPECT_SCREENSHOT"); out != "" {
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
