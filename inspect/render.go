package inspect

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes v as indented JSON (the --json output).
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// WriteTable writes a view as aligned text tables (the default output).
func WriteTable(w io.Writer, v any) error {
	switch x := v.(type) {
	case BucketsView:
		return x.table(w)
	case QuestionView:
		return x.table(w)
	case StepView:
		return x.table(w)
	case StreamsView:
		return x.table(w)
	case VersionsView:
		return x.table(w)
	}
	return fmt.Errorf("inspect: no table for %T", v)
}

func (v BucketsView) table(w io.Writer) error {
	step := "none"
	if v.Step >= 0 {
		step = fmt.Sprint(v.Step)
	}
	fmt.Fprintf(w, "run %s, pool after step %s (%d reports folded), K = %d, mixed mode %s\n", v.Run, step, v.Reports, v.K, onOff(v.Mixed))
	if v.Epochs > 1 {
		fmt.Fprintf(w, "learner restarted: %d epochs; %d reports of steps trained again are not in the ledger\n", v.Epochs, v.Superseded)
	}
	fmt.Fprintln(w)
	t := table(w)
	fmt.Fprintln(t, "bucket k\tquestions\t")
	for _, b := range v.Buckets {
		fmt.Fprintf(t, "%d\t%d\t%s\n", b.K, b.Questions, bar(b.Questions, v.Pool, 30))
	}
	t.Flush()
	fmt.Fprintln(w)
	t = table(w)
	fmt.Fprintf(t, "pool questions\t%d\n", v.Pool)
	fmt.Fprintf(t, "retired\t%d\n", v.Retired)
	fmt.Fprintf(t, "known questions\t%d\n", v.Known)
	fmt.Fprintf(t, "trajectories stored\t%d\n", v.Trajectories)
	fmt.Fprintf(t, "response tokens stored\t%d\n", v.Tokens)
	if v.Missing > 0 {
		fmt.Fprintf(t, "trajectories missing from ROLLOUTS\t%d\n", v.Missing)
	}
	return t.Flush()
}

func (v QuestionView) table(w io.Writer) error {
	state := "not in the pool (no mixed-mode step named it)"
	switch {
	case v.Retired:
		state = "retired (solved K of K)"
	case v.Bucket > 0:
		state = fmt.Sprintf("in bucket %d", v.Bucket)
	case v.InPool:
		state = "known, in no bucket (nothing stored)"
	}
	fmt.Fprintf(w, "question %s (run %s): %s, latest k %d, %d stored trajectories\n\n", v.ID, v.Run, state, v.LatestK, len(v.Stored))
	t := table(w)
	fmt.Fprintln(t, "step\tmode\tgroup\tk/K\tbucket\tstored\tevent")
	for _, s := range v.Steps {
		mode, group := "on-policy", "fresh"
		if s.Mixed {
			mode = "mixed"
		}
		if s.Replayed {
			group = "replayed"
		}
		ev := ""
		switch {
		case s.Retired:
			ev = "retired"
		case s.WasRetired:
			ev = "already retired"
		case s.From != s.To:
			ev = "moved"
		}
		bk := "-"
		if s.Mixed {
			bk = fmt.Sprintf("%s -> %s", bucketName(s.From), bucketName(s.To))
		}
		fmt.Fprintf(t, "%d\t%s\t%s\t%d/%d\t%s\t+%d\t%s\n", s.Step, mode, group, s.Correct, s.Size, bk, s.Added, ev)
	}
	t.Flush()
	if len(v.Stored) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t = table(w)
	hdr := "stored trajectory\tstep\tversion\ttokens\tmean logp"
	if v.Checkpoint != "" {
		hdr += "\tentropy now\tlogp now"
	}
	fmt.Fprintln(t, hdr+"\ttext")
	for _, s := range v.Stored {
		fmt.Fprintf(t, "%s\t%d\t%d\t%d\t%.3f", s.ID, s.Step, s.PolicyVersion, s.Tokens, s.MeanLogProb)
		if v.Checkpoint != "" && s.Entropy != nil && s.LogProb != nil {
			fmt.Fprintf(t, "\t%.3f\t%.3f", *s.Entropy, *s.LogProb)
		}
		fmt.Fprintf(t, "\t%s\n", oneLine(s.Text, 60))
	}
	if v.Checkpoint != "" {
		fmt.Fprintf(t, "(entropy and log-prob now: mean per token under %s)\n", v.Checkpoint)
	}
	return t.Flush()
}

func (v StepView) table(w io.Writer) error {
	fmt.Fprintf(w, "step %d (run %s): policy v%d -> v%d, pass@1 %.3f, entropy %.3f, loss %.4g, grad norm %.3g, mode %s",
		v.Step, v.Run, v.PolicyVersion, v.NewVersion, v.Pass1, v.Entropy, v.Loss, v.GradNorm, map[bool]string{true: "mixed", false: "on-policy"}[v.Mixed])
	if v.Skipped {
		fmt.Fprint(w, ", update skipped")
	}
	if v.StaleDropped > 0 {
		fmt.Fprintf(w, ", %d stale rollouts dropped", v.StaleDropped)
	}
	fmt.Fprintf(w, ", %.0f ms, %s\n", v.StepMillis, time.UnixMilli(v.UnixMs).UTC().Format(time.RFC3339))
	if v.NotFolded != "" {
		fmt.Fprintf(w, "not folded into the pool: %s\n", v.NotFolded)
	}
	fmt.Fprintln(w)
	t := table(w)
	fmt.Fprintln(t, "question\tgroup\tk/K\trewards\tadvantages\treasons")
	for _, g := range v.Groups {
		group := "fresh"
		if g.Replayed {
			group = "replayed"
		}
		var rs, as, why []string
		count := map[string]int{}
		for _, r := range g.Rollouts {
			rs = append(rs, fmt.Sprintf("%g", r.Reward))
			as = append(as, fmt.Sprintf("%+.2f", r.Advantage))
			if count[r.Reason] == 0 {
				why = append(why, r.Reason)
			}
			count[r.Reason]++
		}
		for i, r := range why {
			why[i] = fmt.Sprintf("%s x%d", r, count[r])
		}
		fmt.Fprintf(t, "%s\t%s\t%d/%d\t%s\t%s\t%s\n", g.QuestionID, group, g.Correct, g.Size, strings.Join(rs, " "),
			strings.Join(as, " "), strings.Join(why, ", "))
	}
	t.Flush()
	for _, g := range v.Groups {
		if len(g.Candidates) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nreplayed %s: candidates by mean token entropy under policy v%d (lowest is replayed, E7)\n", g.QuestionID, v.PolicyVersion)
		t := table(w)
		fmt.Fprintln(t, "candidate\tentropy\tchosen")
		for _, c := range g.Candidates {
			fmt.Fprintf(t, "%s\t%.4f\t%s\n", c.ID, c.Entropy, map[bool]string{true: "*", false: ""}[c.Chosen])
		}
		t.Flush()
	}
	return nil
}

func (v StreamsView) table(w io.Writer) error {
	now := time.UnixMilli(v.UnixMs)
	fmt.Fprintf(w, "run %s, streams at %s\n\n", v.Run, now.UTC().Format(time.RFC3339))
	t := table(w)
	fmt.Fprintln(t, "stream\tname\tmessages\tbytes\tseq\tnewest\toldest\t")
	for _, s := range v.Streams {
		if !s.Exists {
			fmt.Fprintf(t, "%s\t%s\t-\t-\t-\t-\t-\t(not created)\n", s.Kind, s.Name)
			continue
		}
		fmt.Fprintf(t, "%s\t%s\t%d\t%s\t%d..%d\t%s\t%s\t\n", s.Kind, s.Name, s.Messages, bytesIEC(s.Bytes), s.FirstSeq, s.LastSeq,
			age(now, s.LastUnixMs), age(now, s.FirstUnixMs))
	}
	t.Flush()
	fmt.Fprintln(w)
	t = table(w)
	fmt.Fprintln(t, "stream\tconsumer\tpending\tack pending\tredelivered\twaiting\tdelivered\tack floor")
	n := 0
	for _, s := range v.Streams {
		for _, c := range s.Consumers {
			n++
			fmt.Fprintf(t, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", s.Kind, c.Name, c.Pending, c.AckPending, c.Redelivered, c.Waiting, c.Delivered, c.AckFloor)
		}
	}
	if n == 0 {
		fmt.Fprintln(t, "(no consumers)")
	}
	t.Flush()
	fmt.Fprintln(w)
	if len(v.Dead) == 0 {
		fmt.Fprintln(w, "DEAD: no entries")
		return nil
	}
	fmt.Fprintf(w, "DEAD, %d most recent:\n", len(v.Dead))
	t = table(w)
	fmt.Fprintln(t, "seq\tage\tfrom\tsubject\torig seq\trole\tdeliveries\treason")
	for _, d := range v.Dead {
		fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", d.Seq, age(now, d.UnixMs), d.Stream, d.Subject, d.Sequence, d.Role, d.Deliveries, oneLine(d.Reason, 80))
	}
	return t.Flush()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func bucketName(k int) string {
	if k == 0 {
		return "none"
	}
	return fmt.Sprint(k)
}

// bar draws n of total as up to width '#'.
func bar(n, total, width int) string {
	if total <= 0 || n <= 0 {
		return ""
	}
	return strings.Repeat("#", max(1, n*width/total))
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func bytesIEC(b uint64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// age is how long before now a time was, "-" for none.
func age(now time.Time, unixMs int64) string {
	if unixMs == 0 {
		return "-"
	}
	d := now.Sub(time.UnixMilli(unixMs))
	switch {
	case d < 0:
		return "0s ago"
	case d < time.Minute:
		return fmt.Sprintf("%.0fs ago", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%.0fm ago", d.Minutes())
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1fh ago", d.Hours())
	}
	return fmt.Sprintf("%.0fd ago", d.Hours()/24)
}
