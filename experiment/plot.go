package experiment

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// series groups a setting's runs by arm, arms in the plan's order.
func series(p Plan, runs []RunResult) map[string][][]RunResult {
	out := map[string][][]RunResult{}
	for _, s := range p.Settings {
		for _, a := range s.Arms {
			var rs []RunResult
			for _, r := range runs {
				if r.Setting == s.Name && r.Arm == a.Name {
					rs = append(rs, r)
				}
			}
			if len(rs) > 0 {
				sort.Slice(rs, func(i, j int) bool { return rs[i].Seed < rs[j].Seed })
				out[s.Name] = append(out[s.Name], rs)
			}
		}
	}
	return out
}

// errPoints is a line's points with their error bars.
type errPoints struct {
	plotter.XYs
	plotter.YErrors
}

// stepMean is the mean over runs of f(step) at each step index present in
// every run, smoothed over a trailing window, against the mean rollouts.
func stepMean(rs []RunResult, window int, f func(Step) (float64, bool)) plotter.XYs {
	n := math.MaxInt
	for _, r := range rs {
		n = min(n, len(r.Steps))
	}
	var out plotter.XYs
	for i := 0; i < n; i++ {
		var x, y float64
		cnt := 0
		for _, r := range rs {
			for j := max(0, i-window+1); j <= i; j++ {
				if v, ok := f(r.Steps[j]); ok {
					y += v
					cnt++
				}
			}
			x += float64(r.Steps[i].Rollouts)
		}
		if cnt > 0 {
			out = append(out, plotter.XY{X: x / float64(len(rs)), Y: y / float64(cnt)})
		}
	}
	return out
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

// Plot writes the experiment's PNGs into dir and returns their paths: per
// setting the held-out learning curves (mean over seeds, bars min to max),
// the training reward, the token entropy of fresh and replayed
// trajectories, and per arm with replay the pool's bucket occupancy.
func Plot(dir string, p Plan, runs []RunResult) ([]string, error) {
	var files []string
	save := func(pl *plot.Plot, name string) error {
		path := filepath.Join(dir, name)
		if err := pl.Save(18*vg.Centimeter, 11*vg.Centimeter, path); err != nil {
			return fmt.Errorf("experiment: plot %s: %w", name, err)
		}
		files = append(files, path)
		return nil
	}
	for _, s := range p.Settings {
		arms := series(p, runs)[s.Name]
		if len(arms) == 0 {
			continue
		}
		var main, abl [][]RunResult
		ablation := map[string]bool{}
		for _, a := range Ablations() {
			ablation[a.Name] = true
		}
		for _, rs := range arms {
			if ablation[rs[0].Arm] {
				abl = append(abl, rs)
			} else {
				main = append(main, rs)
			}
		}
		curves, err := curvePlot(s.Name+": held-out pass@1 (mean over seeds, bars min-max)", main, true)
		if err != nil {
			return files, err
		}
		if len(abl) > 0 {
			ref := abl
			for _, rs := range main {
				if rs[0].Arm == ArmExGRPONoDelay.Name || rs[0].Arm == ArmOnPolicy.Name {
					ref = append([][]RunResult{rs}, ref...)
				}
			}
			ap, err := curvePlot(s.Name+": ablations of exgrpo-nodelay, held-out pass@1 (mean over seeds)", ref, false)
			if err != nil {
				return files, err
			}
			if err := save(ap, "curves-"+s.Name+"-ablations.png"); err != nil {
				return files, err
			}
		}
		reward := newPlot(s.Name+": training reward (batch Pass@1 of fresh rollouts, 5-step mean)", "fresh rollouts", "reward")
		entropy := newPlot(s.Name+": mean token entropy, fresh (solid) and replayed (dashed), 5-step mean", "fresh rollouts", "entropy (nats)")
		for i, rs := range arms {
			name := rs[0].Arm
			rw, err := plotter.NewLine(stepMean(rs, 5, func(st Step) (float64, bool) { return st.Reward, true }))
			if err != nil {
				return files, fmt.Errorf("experiment: plot: %w", err)
			}
			rw.Color, rw.Dashes = plotutil.Color(i), plotutil.Dashes(i/7)
			reward.Add(rw)
			reward.Legend.Add(name, rw)

			fe, err := plotter.NewLine(stepMean(rs, 5, func(st Step) (float64, bool) { return st.FreshEntropy, true }))
			if err != nil {
				return files, fmt.Errorf("experiment: plot: %w", err)
			}
			fe.Color, fe.Dashes = plotutil.Color(i), plotutil.Dashes(i/7)
			entropy.Add(fe)
			entropy.Legend.Add(name, fe)
			if rp := stepMean(rs, 5, func(st Step) (float64, bool) { return st.ReplayedEntropy, st.Replayed > 0 }); len(rp) > 0 {
				re, err := plotter.NewLine(rp)
				if err != nil {
					return files, fmt.Errorf("experiment: plot: %w", err)
				}
				re.Color = plotutil.Color(i)
				re.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				entropy.Add(re)
				entropy.Legend.Add(name+" (replayed)", re)
			}

			if hasPool(rs) {
				bp := newPlot(fmt.Sprintf("%s / %s: pool questions per bucket k (mean of %d seed(s))", s.Name, name, len(rs)), "step", "questions")
				for k := 1; k < p.K; k++ {
					xy := stepMean(rs, 1, func(st Step) (float64, bool) {
						if k < len(st.Buckets) {
							return float64(st.Buckets[k]), true
						}
						return 0, false
					})
					for j := range xy {
						xy[j].X = float64(j)
					}
					bl, err := plotter.NewLine(xy)
					if err != nil {
						return files, fmt.Errorf("experiment: plot: %w", err)
					}
					bl.Color = plotutil.Color(k - 1)
					bl.Width = vg.Points(1.5)
					bp.Add(bl)
					bp.Legend.Add(fmt.Sprintf("k=%d", k), bl)
				}
				bp.Legend.Left = true
				if err := save(bp, fmt.Sprintf("buckets-%s-%s.png", s.Name, name)); err != nil {
					return files, err
				}
			}
		}
		for _, x := range []struct {
			p    *plot.Plot
			name string
		}{{curves, "curves-" + s.Name + ".png"}, {reward, "reward-" + s.Name + ".png"}, {entropy, "entropy-" + s.Name + ".png"}} {
			if err := save(x.p, x.name); err != nil {
				return files, err
			}
		}
	}
	return files, nil
}

func hasPool(rs []RunResult) bool {
	for _, r := range rs {
		for _, st := range r.Steps {
			if st.Pool > 0 {
				return true
			}
		}
	}
	return false
}

// curvePlot draws held-out pass@1 against fresh rollouts, one line per arm
// (the mean over its seeds at each evaluation), with min-max bars when bars
// is set. Colours repeat after seven arms with a different dash pattern.
func curvePlot(title string, arms [][]RunResult, bars bool) (*plot.Plot, error) {
	p := newPlot(title, "fresh rollouts", "held-out pass@1")
	p.Legend.Top = false
	for i, rs := range arms {
		n := math.MaxInt
		for _, r := range rs {
			n = min(n, len(r.Evals))
		}
		var pts errPoints
		for j := 0; j < n; j++ {
			xs := make([]float64, len(rs))
			var x float64
			for k, r := range rs {
				xs[k] = r.Evals[j].Pass1
				x += float64(r.Evals[j].Rollouts)
			}
			c := NewCell(xs)
			pts.XYs = append(pts.XYs, plotter.XY{X: x / float64(len(rs)), Y: c.Mean})
			pts.YErrors = append(pts.YErrors, struct{ Low, High float64 }{c.Mean - c.Min, c.Max - c.Mean})
		}
		line, points, err := plotter.NewLinePoints(pts.XYs)
		if err != nil {
			return nil, fmt.Errorf("experiment: plot: %w", err)
		}
		line.Color, points.Color = plotutil.Color(i), plotutil.Color(i)
		line.Dashes = plotutil.Dashes(i / 7)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(fmt.Sprintf("%s (%d)", rs[0].Arm, len(rs)), line, points)
		if bars && len(rs) > 1 {
			b, err := plotter.NewYErrorBars(pts)
			if err != nil {
				return nil, fmt.Errorf("experiment: plot: %w", err)
			}
			b.Color = plotutil.Color(i)
			p.Add(b)
		}
	}
	return p, nil
}
