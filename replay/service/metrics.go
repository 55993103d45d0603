package service

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the replay role's Prometheus series (prefix exgrpo_replay_).
type Metrics struct {
	Folded              prometheus.Counter
	Added               prometheus.Counter
	FoldSeconds         prometheus.Histogram
	PoolQuestions       prometheus.Gauge
	PoolTrajectories    prometheus.Gauge
	Retired             prometheus.Gauge
	LastStep            prometheus.Gauge
	Fetched             prometheus.Counter // trajectories read from ROLLOUTS by sequence
	Bucket              *prometheus.GaugeVec
	SampleRequests      prometheus.Counter
	SampleExpired       prometheus.Counter
	MissingTrajectories prometheus.Counter
	Dead                prometheus.Counter
	SnapshotBytes       prometheus.Gauge
	Skipped             prometheus.Counter // CONTROL messages left out of the ledger (see replay.Lineage)
	Rewinds             prometheus.Counter
}

// NewMetrics creates the series and registers them on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Folded:           prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_reports_folded_total", Help: "Step reports folded into the pool."}),
		Added:            prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_trajectories_added_total", Help: "Trajectories stored in the pool (after dedup)."}),
		FoldSeconds:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "exgrpo_replay_fold_seconds", Help: "Time to fold one report, publish its experience and snapshot.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		PoolQuestions:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "exgrpo_replay_pool_questions", Help: "Non-retired questions with stored experience."}),
		PoolTrajectories: prometheus.NewGauge(prometheus.GaugeOpts{Name: "exgrpo_replay_pool_trajectories", Help: "Stored trajectories."}),
		Retired:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "exgrpo_replay_retired_questions", Help: "Retired questions (ALGORITHM.md E4)."}),
		LastStep:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "exgrpo_replay_last_step", Help: "Last folded step."}),
		Fetched:          prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_trajectories_fetched_total", Help: "Trajectories read from ROLLOUTS by sequence (the ones a report names for the pool)."}),
		Bucket:           prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "exgrpo_replay_bucket_questions", Help: "Questions per bucket k (ALGORITHM.md E3)."}, []string{"k"}),
		SampleRequests:   prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_sample_requests_total", Help: "Sample requests received."}),
		SampleExpired:    prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_sample_expired_total", Help: "Sample requests dropped while waiting for their step."}),
		MissingTrajectories: prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_missing_trajectories_total",
			Help: "Trajectories a report names for the pool that ROLLOUTS no longer held (byte limit) or did not serve within ReportWait."}),
		Dead:          prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_dead_total", Help: "Messages sent to DEAD."}),
		SnapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "exgrpo_replay_snapshot_bytes", Help: "Size of the last snapshot."}),
		Skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_control_skipped_total",
			Help: "Step reports and lineage records left out of the ledger (repeated, or of a superseded learner epoch)."}),
		Rewinds: prometheus.NewCounter(prometheus.CounterOpts{Name: "exgrpo_replay_rewinds_total",
			Help: "Returns of the pool to a learner checkpoint after a learner restart."}),
	}
	if reg != nil {
		reg.MustRegister(m.Folded, m.Added, m.FoldSeconds, m.PoolQuestions, m.PoolTrajectories, m.Retired,
			m.LastStep, m.Fetched, m.Bucket, m.SampleRequests, m.SampleExpired, m.MissingTrajectories, m.Dead, m.SnapshotBytes,
			m.Skipped, m.Rewinds)
	}
	return m
}
