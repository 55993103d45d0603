package experiment

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Results is what an experiment writes to results.json.
type Results struct {
	Plan    Plan        `json:"plan"`
	Command string      `json:"command"`
	Commit  string      `json:"commit"`
	Date    string      `json:"date"`
	Runs    []RunResult `json:"runs"`
	Rows    []Row       `json:"rows"`
	// Comparisons are the significance tests of the final pass@1 (Compare),
	// derived from Runs like Rows; not stored (NaN has no JSON form).
	Comparisons []Comparison `json:"-"`
}

// WriteJSON writes r to path (indented).
func (r Results) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return fmt.Errorf("experiment: results: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("experiment: results: %w", err)
	}
	return nil
}

// ReadResults reads a results.json written by WriteJSON.
func ReadResults(path string) (Results, error) {
	var r Results
	b, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("experiment: results: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("experiment: results %s: %w", path, err)
	}
	return r, nil
}

// pm formats a Cell as "mean ± sd" (just the mean for one seed) with the
// given scale (100 for points).
func pm(c Cell, scale float64, decimals int) string {
	if c.N == 0 {
		return "-"
	}
	if c.N == 1 {
		return fmt.Sprintf("%.*f", decimals, c.Mean*scale)
	}
	return fmt.Sprintf("%.*f ± %.*f", decimals, c.Mean*scale, decimals, c.SD*scale)
}

// WriteMarkdown writes the result tables: outcomes (held-out and OOD pass@1
// in points, rollouts to reach the on-policy final accuracy) and the
// diagnostics of experience management, then the significance of each
// arm's difference from its setting's references (cs, from Compare).
func WriteMarkdown(w io.Writer, p Plan, rows []Row, cs []Comparison) error {
	var b strings.Builder
	sets := append([]string(nil), p.OODSets...)
	sort.Strings(sets)
	fmt.Fprintf(&b, "Pass@1 in points (mean ± sample sd over seeds; %d held-out questions and %d per OOD set, %d samples each, T = 1). "+
		"Budget %d fresh rollouts per run (K = %d, B = %d). \"Reach\" = fresh rollouts until the held-out pass@1 first reached the setting's on-policy final mean "+
		"(measured every %d steps; n/N seeds got there).%s\n\n", p.HeldOut, p.OODQuestions, p.EvalSamples, p.Budget, p.K, p.B, p.EvalEvery, ownB(p))
	fmt.Fprintf(&b, "| setting | arm | seeds | ID base | ID final | ID gain | OOD base | OOD final |")
	for _, s := range sets {
		fmt.Fprintf(&b, " %s |", s)
	}
	fmt.Fprintf(&b, " reach (rollouts) |\n|---|---|---|---|---|---|---|---|")
	for range sets {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	for _, r := range rows {
		gain := Cell{N: r.FinalID.N, Mean: r.FinalID.Mean - r.BaseID.Mean, SD: r.FinalID.SD}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %+.1f | %s | %s |", r.Setting, r.Arm, r.Seeds, pm(r.BaseID, 100, 1), pm(r.FinalID, 100, 1),
			100*gain.Mean, pm(r.BaseOOD, 100, 1), pm(r.OOD, 100, 1))
		for _, s := range sets {
			fmt.Fprintf(&b, " %s |", pm(r.OODSets[s], 100, 1))
		}
		reach := "-"
		if r.Target > 0 {
			reach = fmt.Sprintf("%d/%d", r.Reached, r.Seeds)
			if r.Reached > 0 {
				reach = fmt.Sprintf("%.0f (%d/%d)", r.Reach.Mean, r.Reached, r.Seeds)
			}
		}
		fmt.Fprintf(&b, " %s |\n", reach)
	}
	fmt.Fprintf(&b, "\nExperience management, over all steps of all seeds. Signal = the group has 0 < k < %d correct, so a non-zero advantage (E9); "+
		"\"only\" = the replayed success was the group's only correct rollout (k = 1). Entropies are mean token entropies in nats over steps with replay: "+
		"the replayed trajectory under the policy that replays it (E7) against the same steps' fresh rollouts (all, and correct ones). "+
		"Pool occupancy is buckets 1..%d at the last step (mean over seeds).\n\n", p.K, p.K-1)
	b.WriteString("| setting | arm | steps | mixed from | fresh groups w/ signal | replayed groups | replayed w/ signal | replayed k=K | replayed only | H replayed | H fresh | H fresh correct | pool at end (k=1..K-1) | replayed from (k=1..K-1, %) | retired | s/step |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		var occ, from []string
		for k := 1; k < len(r.FinalBuckets); k++ {
			occ = append(occ, fmt.Sprintf("%.0f", r.FinalBuckets[k]))
			from = append(from, fmt.Sprintf("%.0f", 100*r.ReplayedFrom[k]))
		}
		mixed := "never"
		if r.MixedFrom.N > 0 {
			mixed = fmt.Sprintf("%.0f", r.MixedFrom.Mean)
		}
		h := func(x float64) string {
			if r.ReplayedGroups == 0 {
				return "-"
			}
			return fmt.Sprintf("%.3f", x)
		}
		fr := func(x float64) string {
			if r.ReplayedGroups == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f%%", 100*x)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %.0f%% | %d | %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %.2f |\n",
			r.Setting, r.Arm, r.Steps.Mean, mixed, 100*r.FreshSignal, r.ReplayedGroups, fr(r.ReplayedSignal), fr(r.ReplayedAllOK), fr(r.ReplayedOnly),
			h(r.ReplayedEntropy), h(r.FreshEntropy), h(r.FreshCorrectEntropy), strings.Join(occ, " "), strings.Join(from, " "), r.Retired.Mean, r.StepSeconds.Mean)
	}
	writeDiagnostics(&b, rows)
	writeComparisons(&b, cs)
	_, err := io.WriteString(w, b.String())
	return err
}

// ownB names the settings that train with their own B.
func ownB(p Plan) string {
	var out []string
	for _, s := range p.Settings {
		if s.B > 0 && s.B != p.B {
			out = append(out, fmt.Sprintf("%s B = %d", s.Name, s.B))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return " Settings with their own questions per step: " + strings.Join(out, ", ") + "."
}

// writeDiagnostics writes the table of the figures issue 16 asks of every
// experiment: how replays spread over questions, the replayed share of
// tokens and of the gradient, the PPO clipped fraction, and pass@1 on the
// retired training questions.
func writeDiagnostics(b *strings.Builder, rows []Row) {
	b.WriteString("\nReplay spread and weight. Replayed questions = distinct questions replayed per run; max = replays of the most replayed one; " +
		"top-10 = share of all replays that went to the run's 10 most replayed questions; replays per question = mean number of questions replayed " +
		"1, 2-3, 4-7, 8-15, ... times. Token / gradient share = replayed share of the step's response tokens / of its policy-gradient weight " +
		"(sum of |dL/dlogp| over replayed tokens over the sum over all tokens, E10-E12), mean over steps with replay. Clipped = fraction of fresh tokens " +
		"on the PPO clipped branch (E10, before the delayed start and on-policy), first mini-batch / all, mean over steps. " +
		"Retired pass@1 = the final policy on the training questions it retired (E4); solved pass@1 = on those that had an all-correct group at least once " +
		"(every arm has them), in points (mean over the seeds that have any).\n\n")
	b.WriteString("| setting | arm | replayed questions | max | top-10 | replays per question (1, 2-3, 4-7, ...) | token share | gradient share | clipped first mb | clipped all | retired pass@1 (n) | solved pass@1 (n) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		var hist []string
		for _, x := range r.ReplayHist {
			hist = append(hist, fmt.Sprintf("%.0f", x))
		}
		pct := func(x float64) string {
			if r.ReplayedGroups == 0 {
				return "-"
			}
			return fmt.Sprintf("%.1f%%", 100*x)
		}
		h := strings.Join(hist, " ")
		if h == "" {
			h = "-"
		}
		retired := "-"
		if r.RetiredPass1.N > 0 {
			retired = fmt.Sprintf("%s (%d/%d seeds)", pm(r.RetiredPass1, 100, 1), r.RetiredPass1.N, r.Seeds)
		}
		solved := "-"
		if r.SolvedPass1.N > 0 {
			solved = fmt.Sprintf("%s (%d/%d seeds)", pm(r.SolvedPass1, 100, 1), r.SolvedPass1.N, r.Seeds)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s | %.2f%% | %.2f%% | %s | %s |\n", r.Setting, r.Arm,
			pm(r.ReplayQuestions, 1, 0), pm(r.ReplayMax, 1, 0), pm(r.ReplayTop10, 100, 0), h,
			pct(r.ReplayedTokenShare), pct(r.ReplayedGradShare), 100*r.FirstClipped, 100*r.Clipped, retired, solved)
	}
}

// WriteAll writes results.json, table.md and the plots into dir.
func WriteAll(dir string, r Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("experiment: %w", err)
	}
	r.Rows = Aggregate(r.Plan, r.Runs)
	r.Comparisons = Compare(r.Plan, r.Runs)
	if err := r.WriteJSON(filepath.Join(dir, "results.json")); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "table.md"))
	if err != nil {
		return fmt.Errorf("experiment: %w", err)
	}
	fmt.Fprintf(f, "# Experiment %s\n\ncommit %s, %s\n\n`%s`\n\n", r.Plan.Name, r.Commit, r.Date, r.Command)
	if err := WriteMarkdown(f, r.Plan, r.Rows, r.Comparisons); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("experiment: %w", err)
	}
	_, err = Plot(dir, r.Plan, r.Runs)
	return err
}

// Merge combines the results of experiments run separately (for instance
// settings run in parallel processes) into one: runs concatenated (a run
// present twice, same setting, arm and seed, is kept once, the first),
// settings and arms united in order of appearance, seeds united. The plans
// must agree on everything that makes runs comparable (budget, K, B, LR,
// lengths, evaluation sizes).
func Merge(rs ...Results) (Results, error) {
	if len(rs) == 0 {
		return Results{}, fmt.Errorf("%w: nothing to merge", ErrConfig)
	}
	out := rs[0]
	out.Runs = nil
	out.Plan.Settings = nil
	out.Plan.Seeds = nil
	same := func(a, b Plan) bool {
		return a.Budget == b.Budget && a.K == b.K && a.B == b.B && a.LR == b.LR && a.MaxNew == b.MaxNew &&
			a.HeldOut == b.HeldOut && a.OODQuestions == b.OODQuestions && a.EvalSamples == b.EvalSamples
	}
	seen := map[string]bool{}
	seeds := map[uint64]bool{}
	var cmds, commits []string
	for _, r := range rs {
		if !same(r.Plan, rs[0].Plan) {
			return out, fmt.Errorf("%w: plan %s differs from %s in budget, K, B, LR, lengths or evaluation sizes", ErrConfig, r.Plan.Name, rs[0].Plan.Name)
		}
		cmds = append(cmds, r.Command)
		commits = append(commits, r.Commit)
		for _, s := range r.Plan.Settings {
			i := -1
			for j := range out.Plan.Settings {
				if out.Plan.Settings[j].Name == s.Name {
					i = j
				}
			}
			if i < 0 {
				s.Arms = append([]Arm(nil), s.Arms...)
				out.Plan.Settings = append(out.Plan.Settings, s)
				continue
			}
			for _, a := range s.Arms {
				dup := false
				for _, b := range out.Plan.Settings[i].Arms {
					dup = dup || b.Name == a.Name
				}
				if !dup {
					out.Plan.Settings[i].Arms = append(out.Plan.Settings[i].Arms, a)
				}
			}
		}
		for _, s := range r.Plan.Seeds {
			if !seeds[s] {
				seeds[s] = true
				out.Plan.Seeds = append(out.Plan.Seeds, s)
			}
		}
		for _, run := range r.Runs {
			k := fmt.Sprintf("%s/%s/%d", run.Setting, run.Arm, run.Seed)
			if !seen[k] {
				seen[k] = true
				out.Runs = append(out.Runs, run)
			}
		}
	}
	out.Command = strings.Join(cmds, "; ")
	out.Commit = strings.Join(commits, ", ")
	return out, nil
}
