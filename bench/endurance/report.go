package endurance

import (
	"fmt"
	"image/color"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Text is the report as the lines BENCHMARKS.md quotes.
func (r *Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "endurance: %v with %d actors and %d verifiers as processes; %d faults\n", r.Duration, r.Actors, r.Verifiers, len(r.Faults))
	kinds := map[string]int{}
	for _, f := range r.Faults {
		kinds[strings.TrimRight(strings.SplitN(f.Role, "-", 2)[0], "0123456789")]++
	}
	fmt.Fprintf(&b, "faults by kind: %v\n", kinds)
	fmt.Fprintf(&b, "steps %d (learner epochs %d, rewinds %d), median step %v, fresh rollouts in the ledger %d\n",
		r.Steps, r.Epochs, r.Rewinds, r.MedianStep.Round(time.Millisecond), r.Rollouts)
	fmt.Fprintf(&b, "ledger: lost %d, named twice %d, steps missing %d, steps twice %d, ids with two contents %d; pool equal to the fold: %v\n",
		len(r.Audit.Missing), len(r.Audit.NamedTwice), len(r.Audit.StepGaps), len(r.Audit.StepRepeats), len(r.Audit.Conflicts), r.PoolEqual)
	fmt.Fprintf(&b, "%-10s %-14s %12s %14s %14s\n", "at", "killed", "recovery", "steps/min pre", "steps/min post")
	for _, f := range r.Faults {
		rec := "none"
		if f.Recovery >= 0 {
			rec = f.Recovery.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "%-10v %-14s %12s %14.1f %14.1f\n", f.At.Round(time.Second), f.Role, rec, f.RateBefore, f.RateAfter)
	}
	fmt.Fprintf(&b, "memory (long-lived incarnations, growth after warm-up):")
	for _, m := range r.Memory {
		if m.LongLife {
			fmt.Fprintf(&b, " %s %+.1f%%", m.Name, 100*m.Growth)
		}
	}
	fmt.Fprintln(&b)
	for _, s := range r.Streams {
		fmt.Fprintf(&b, "stream %-28s %10d bytes %8d msgs (limit %d)\n", s.Stream, s.Bytes, s.Msgs, s.MaxBytes)
	}
	if f := r.Failures(); len(f) > 0 {
		fmt.Fprintf(&b, "BROKEN: %s\n", strings.Join(f, "; "))
	} else {
		fmt.Fprintln(&b, "every promise kept")
	}
	return b.String()
}

// PlotMemory draws every incarnation's resident memory over the run into
// dir/endurance_memory.png and returns the path.
func (r *Report) PlotMemory(dir string) (string, error) {
	p := plot.New()
	p.Title.Text = "resident memory per role process (kill -9 restarts start new lines)"
	p.X.Label.Text = "minutes"
	p.Y.Label.Text = "MiB"
	p.Legend.Top = true
	// One colour per kind of role (every actor alike), the same for each
	// incarnation (a kill -9 and restart starts a new line of that colour);
	// one legend entry per kind.
	colours := map[string]int{}
	for _, m := range r.Memory {
		if len(m.Samples) < 2 {
			continue
		}
		role, _, _ := strings.Cut(m.Name, "#")
		if kind, _, ok := strings.Cut(role, "-"); ok {
			role = kind + "s"
		}
		xy := make(plotter.XYs, len(m.Samples))
		for j, s := range m.Samples {
			xy[j].X, xy[j].Y = s.At.Minutes(), float64(s.RSS)/(1<<20)
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return "", err
		}
		c, seen := colours[role]
		if !seen {
			c = len(colours)
			colours[role] = c
		}
		l.Color = palette(c)
		p.Add(l)
		if !seen {
			p.Legend.Add(role, l)
		}
	}
	path := filepath.Join(dir, "endurance_memory.png")
	if err := p.Save(10*vg.Inch, 6*vg.Inch, path); err != nil {
		return "", err
	}
	return path, nil
}

// palette gives line i a colour from a fixed cycle.
func palette(i int) color.Color {
	cs := []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
		{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}, {188, 189, 34, 255}, {23, 190, 207, 255}}
	return cs[i%len(cs)]
}
