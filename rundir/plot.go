package rundir

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// PlotCurve draws the learning curve of the steps written so far into
// learning_curve.png: the training batch Pass@1 per step (with a moving
// average, since single steps are noisy) and the held-out pass@1 at the steps
// where it was evaluated. It needs at least one step.
func (d *Dir) PlotCurve(title string) error {
	return PlotSteps(filepath.Join(d.Path, CurvePNG), title, d.steps, d.BaseHeldOut)
}

// PlotSteps draws steps into a PNG at path (see Dir.PlotCurve); base, when
// not NaN, is the base model's held-out pass@1, drawn at step 0.
func PlotSteps(path, title string, steps []Step, base float64) error {
	if len(steps) == 0 {
		return fmt.Errorf("rundir: plot: no steps")
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "pass@1"
	p.Y.Min, p.Y.Max = 0, 1
	p.Add(plotter.NewGrid())

	reward := make(plotter.XYs, 0, len(steps))
	avg := make(plotter.XYs, 0, len(steps))
	var held plotter.XYs
	if !math.IsNaN(base) {
		held = append(held, plotter.XY{X: 0, Y: base})
	}
	const window = 5
	sum := 0.0
	for i, s := range steps {
		reward = append(reward, plotter.XY{X: float64(s.Step), Y: s.Reward})
		sum += s.Reward
		if i >= window {
			sum -= steps[i-window].Reward
		}
		n := math.Min(float64(i+1), window)
		avg = append(avg, plotter.XY{X: float64(s.Step), Y: sum / n})
		if !math.IsNaN(s.HeldOut) {
			held = append(held, plotter.XY{X: float64(s.Step), Y: s.HeldOut})
		}
	}
	raw, err := plotter.NewLine(reward)
	if err != nil {
		return fmt.Errorf("rundir: plot: %w", err)
	}
	raw.Color = color.RGBA{R: 160, G: 190, B: 230, A: 255}
	p.Add(raw)
	p.Legend.Add("train reward (batch pass@1)", raw)
	smooth, err := plotter.NewLine(avg)
	if err != nil {
		return fmt.Errorf("rundir: plot: %w", err)
	}
	smooth.Color = color.RGBA{B: 200, A: 255}
	smooth.Width = vg.Points(2)
	p.Add(smooth)
	p.Legend.Add(fmt.Sprintf("train reward, %d-step mean", window), smooth)
	if len(held) > 0 {
		hl, hp, err := plotter.NewLinePoints(held)
		if err != nil {
			return fmt.Errorf("rundir: plot: %w", err)
		}
		hl.Color = color.RGBA{R: 220, G: 60, A: 255}
		hl.Width = vg.Points(2)
		hp.Color = hl.Color
		hp.Shape = draw.CircleGlyph{}
		p.Add(hl, hp)
		p.Legend.Add("held-out pass@1", hl)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("rundir: plot: %w", err)
	}
	return nil
}
