package service

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the learner role's Prometheus series (prefix exgrpo_learner_).
type Metrics struct {
	Steps             prometheus.Counter
	Step              prometheus.Gauge
	Version           prometheus.Gauge
	Reward            prometheus.Gauge
	HeldOut           prometheus.Gauge
	Entropy           prometheus.Gauge
	Loss              prometheus.Gauge
	GradNorm          prometheus.Gauge
	Replayed          prometheus.Gauge
	Mixed             prometheus.Gauge
	Rollouts          prometheus.Gauge
	Tokens            prometheus.Counter
	Stale             prometheus.Counter
	DroppedGroups     prometheus.Counter
	Ignored           prometheus.Counter
	Retried           prometheus.Counter
	ReplayUnavailable prometheus.Counter
	Dead              prometheus.Counter
	// RolloutsGone counts verdicts whose trajectory ROLLOUTS no longer held
	// (its byte limit discarded it first): each is asked for again.
	RolloutsGone  prometheus.Counter
	StepSeconds   prometheus.Histogram
	GatherSeconds prometheus.Histogram
	TrainSeconds  prometheus.Histogram
}

// NewMetrics creates the series and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "exgrpo_learner_" + name, Help: help})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_learner_" + name, Help: help})
	}
	h := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "exgrpo_learner_" + name, Help: help,
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)})
	}
	m := &Metrics{
		Steps:             c("steps_total", "Training steps completed."),
		Step:              g("step", "Last completed step."),
		Version:           g("policy_version", "Latest published policy version."),
		Reward:            g("reward", "Batch Pass@1 of the last step's fresh rollouts."),
		HeldOut:           g("heldout_pass1", "Held-out pass@1 at the last evaluation."),
		Entropy:           g("entropy", "Mean token entropy of the last step, nats."),
		Loss:              g("loss", "Loss of the last step."),
		GradNorm:          g("grad_norm", "Largest pre-clip gradient norm of the last step."),
		Replayed:          g("replayed_questions", "Replayed questions in the last step."),
		Mixed:             g("mixed", "1 once mixed mode is on (ALGORITHM.md E5)."),
		Rollouts:          g("rollouts", "Fresh rollouts gathered by this process."),
		Tokens:            c("tokens_total", "Response tokens trained on."),
		Stale:             c("stale_dropped_total", "Fresh rollouts dropped for staleness."),
		DroppedGroups:     c("dropped_groups_total", "Groups left incomplete at the gather deadline."),
		Ignored:           c("ignored_rollouts_total", "Rollouts or verdicts of no current step (leftovers, or of another learner epoch)."),
		Retried:           c("retried_rollouts_total", "Rollouts asked for again after the fence refused one (it went to DEAD)."),
		ReplayUnavailable: c("replay_unavailable_total", "Steps that went on without the replay service."),
		Dead:              c("dead_total", "Messages sent to DEAD."),
		RolloutsGone:      c("rollouts_gone_total", "Verdicts whose trajectory ROLLOUTS no longer held (byte limit); asked for again."),
		StepSeconds:       h("step_seconds", "Wall time of a step, from its tasks to its report."),
		GatherSeconds:     h("gather_seconds", "Time waiting for a step's rollouts."),
		TrainSeconds:      h("train_seconds", "Time in the update."),
	}
	if reg != nil {
		reg.MustRegister(m.Steps, m.Step, m.Version, m.Reward, m.HeldOut, m.Entropy, m.Loss, m.GradNorm, m.Replayed,
			m.Mixed, m.Rollouts, m.Tokens, m.Stale, m.DroppedGroups, m.Ignored, m.Retried, m.ReplayUnavailable, m.Dead,
			m.RolloutsGone, m.StepSeconds, m.GatherSeconds, m.TrainSeconds)
	}
	return m
}
