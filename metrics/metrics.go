// Package metrics is the small Prometheus layer of the roles: one registry
// per role (so one process running every role, as `exgrpo run` does, still
// keeps their series apart by the constant labels role and run), the common
// series every consumer role reports, and the HTTP endpoint /metrics.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Registry is one role's metrics. Series are named exgrpo_<name> and carry
// the constant labels role and run. Safe for concurrent use.
type Registry struct {
	reg   *prometheus.Registry
	role  string
	run   string
	wrapd prometheus.Registerer
}

// New makes a role's registry. withProcess adds the Go runtime and process
// collectors (once per process: pass true for one role only).
func New(role, run string, withProcess bool) *Registry {
	reg := prometheus.NewRegistry()
	if withProcess {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return &Registry{reg: reg, role: role, run: run,
		wrapd: prometheus.WrapRegistererWith(prometheus.Labels{"role": role, "run": run}, reg)}
}

// Gatherer exposes the registry (to merge several roles behind one handler).
func (r *Registry) Gatherer() prometheus.Gatherer { return r.reg }

// Registerer is where role-specific collectors go (role and run labels added).
func (r *Registry) Registerer() prometheus.Registerer { return r.wrapd }

// Counter registers a counter exgrpo_<name>.
func (r *Registry) Counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "exgrpo", Name: name, Help: help})
	r.wrapd.MustRegister(c)
	return c
}

// CounterVec registers a counter with labels.
func (r *Registry) CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "exgrpo", Name: name, Help: help}, labels)
	r.wrapd.MustRegister(c)
	return c
}

// Gauge registers a gauge exgrpo_<name>.
func (r *Registry) Gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "exgrpo", Name: name, Help: help})
	r.wrapd.MustRegister(g)
	return g
}

// Histogram registers a histogram with the given buckets (nil: seconds
// from 1ms to ~30s).
func (r *Registry) Histogram(name, help string, buckets []float64) prometheus.Histogram {
	if buckets == nil {
		buckets = prometheus.ExponentialBuckets(0.001, 2.5, 12)
	}
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "exgrpo", Name: name, Help: help, Buckets: buckets})
	r.wrapd.MustRegister(h)
	return h
}

// Consumer is the common series of a role that consumes a stream: what it
// processed, what it sent to DEAD, redeliveries seen, work in flight and the
// consumer's backlog (updated by a poller from bus.Bus.ConsumerLag).
type Consumer struct {
	Processed   prometheus.Counter   // exgrpo_messages_processed_total
	Published   prometheus.Counter   // exgrpo_messages_published_total
	Dead        prometheus.Counter   // exgrpo_messages_dead_total
	Redelivered prometheus.Counter   // exgrpo_redeliveries_total: messages received with NumDelivered > 1
	Errors      prometheus.Counter   // exgrpo_errors_total: transient failures (message left for redelivery)
	InFlight    prometheus.Gauge     // exgrpo_in_flight
	Pending     prometheus.Gauge     // exgrpo_queue_pending: stream messages not yet delivered to the consumer
	AckPending  prometheus.Gauge     // exgrpo_queue_ack_pending
	Latency     prometheus.Histogram // exgrpo_item_seconds: time to process one message
}

// NewConsumer registers the common consumer series.
func (r *Registry) NewConsumer() *Consumer {
	return &Consumer{
		Processed:   r.Counter("messages_processed_total", "Messages processed and acked."),
		Published:   r.Counter("messages_published_total", "Messages published onward (acked by JetStream)."),
		Dead:        r.Counter("messages_dead_total", "Messages sent to the DEAD stream."),
		Redelivered: r.Counter("redeliveries_total", "Messages received more than once."),
		Errors:      r.Counter("errors_total", "Transient failures; the message is redelivered."),
		InFlight:    r.Gauge("in_flight", "Messages being processed now."),
		Pending:     r.Gauge("queue_pending", "Stream messages not yet delivered to this role's consumer."),
		AckPending:  r.Gauge("queue_ack_pending", "Messages delivered to this role's consumer and not yet acked."),
		Latency:     r.Histogram("item_seconds", "Seconds to process one message.", nil),
	}
}

// Handler serves the given registries' series (text exposition) at any path.
func Handler(regs ...*Registry) http.Handler {
	gs := make(prometheus.Gatherers, 0, len(regs))
	for _, r := range regs {
		gs = append(gs, r.reg)
	}
	return promhttp.HandlerFor(gs, promhttp.HandlerOpts{})
}

// Serve serves /metrics for regs on addr (":9090"; "" does nothing and
// waits for ctx) until ctx ends, then shuts the server down.
func Serve(ctx context.Context, addr string, log *zap.Logger, regs ...*Registry) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, log, regs...)
}

// ServeListener is Serve on an open listener (tests use 127.0.0.1:0).
func ServeListener(ctx context.Context, ln net.Listener, log *zap.Logger, regs ...*Registry) error {
	if log == nil {
		log = zap.NewNop()
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(regs...))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("metrics endpoint", zap.String("addr", ln.Addr().String()))
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve: %w", err)
	}
	return nil
}
