package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exgrpo/exgrpo/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Config is the run's topology. Every role opens the bus with the same
// values (they are server-side declarations; the first role creates them,
// later ones find them and leave them as they are: see ensure.go).
type Config struct {
	Run      string // run id, [A-Za-z0-9_-]{1,64}
	Replicas int    // stream replicas: 1 local, 3 in the compose cluster; default 1
	Memory   bool   // memory storage instead of file (benchmarks); default false
	// Duplicates is the message-id dedup window of the data streams; it must
	// outlast a task's redelivery (AckWait * MaxDeliver). Default 10m.
	Duplicates time.Duration
	// Shared consumers: TASKS -> actors (a work queue), ROLLOUTS -> verifiers
	// (a limits stream; the learner and the replay service read it too).
	TaskAckWait       time.Duration // default 15s; actors heartbeat with InProgress while sampling (every 5s), so only a dead actor lets it expire
	TaskMaxDeliver    int           // default 5; then the task goes to DEAD
	RolloutAckWait    time.Duration // default 15s: how long a dead verifier holds a rollout
	RolloutMaxDeliver int           // default 5
	MaxAckPending     int           // per shared consumer; default 4096
	// Byte limits of the limits streams (oldest discarded when full).
	//
	// RolloutsMaxBytes bounds ROLLOUTS, the one store of the trajectories:
	// the verifiers grade them there, the learner trains on them, and the
	// replay service fetches the successful ones of a step after its report.
	// It must comfortably exceed what is in flight: the rollouts of the
	// S + 2 steps between sampling and the replay's fold (B * K trajectories
	// of ~13 bytes per response token each: a 1,024-token one is 13.6 KB).
	// The default, 4 GiB, holds ~300,000 such trajectories; at B 128, K 8 and
	// 16,384 tokens (~213 KB each) a step is ~220 MB, so S + 2 = 4 steps fill
	// a fifth of it. What it discards is reported (learner: retried;
	// replay: folded without, counted and logged).
	RolloutsMaxBytes   int64
	ScoredMaxBytes     int64 // verdicts; default 1 GiB
	ExperienceMaxBytes int64 // default 4 GiB
	ControlMaxBytes    int64 // default 1 GiB
	DeadMaxBytes       int64 // default 256 MiB
	// WorkQueueMaxBytes bounds TASKS, the work queue (new publishes are
	// refused, and retried by the publisher, when full); default 2 GiB.
	// Memory storage reserves it up front, so lower it with Memory.
	WorkQueueMaxBytes int64
	// KeepWeights is how many policy versions the Object Store keeps; default 3.
	KeepWeights int
	// OpTimeout bounds each management call (create stream, info, ...);
	// default 10s.
	OpTimeout time.Duration
}

// DefaultConfig is the topology of a local single-node run.
func DefaultConfig(run string) Config {
	return Config{
		Run: run, Replicas: 1, Duplicates: 10 * time.Minute,
		TaskAckWait: 15 * time.Second, TaskMaxDeliver: 5,
		RolloutAckWait: 15 * time.Second, RolloutMaxDeliver: 5,
		MaxAckPending:     4096,
		WorkQueueMaxBytes: 2 << 30, RolloutsMaxBytes: 4 << 30, ScoredMaxBytes: 1 << 30, ExperienceMaxBytes: 4 << 30, ControlMaxBytes: 1 << 30, DeadMaxBytes: 256 << 20,
		KeepWeights: 3, OpTimeout: 10 * time.Second,
	}
}

// Validate reports contradictions with a hint.
func (c Config) Validate() error {
	if _, err := NewNames(c.Run); err != nil {
		return err
	}
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("%w: Replicas %d must be 1..5 (1 local, 3 in a cluster)", ErrConfig, c.Replicas)
	case c.TaskAckWait <= 0 || c.RolloutAckWait <= 0:
		return fmt.Errorf("%w: ack waits must be positive (start from DefaultConfig)", ErrConfig)
	case c.TaskMaxDeliver < 1 || c.RolloutMaxDeliver < 1:
		return fmt.Errorf("%w: MaxDeliver must be >= 1", ErrConfig)
	case c.Duplicates <= 0:
		return fmt.Errorf("%w: Duplicates window must be positive", ErrConfig)
	case c.KeepWeights < 1:
		return fmt.Errorf("%w: KeepWeights %d must be >= 1", ErrConfig, c.KeepWeights)
	case c.MaxAckPending < 1:
		return fmt.Errorf("%w: MaxAckPending must be >= 1", ErrConfig)
	case c.OpTimeout <= 0:
		return fmt.Errorf("%w: OpTimeout must be positive", ErrConfig)
	}
	return nil
}

// Bus is one role's handle on the run's topology. Safe for concurrent use.
type Bus struct {
	Names   Names
	Config  Config
	NC      *nats.Conn
	JS      jetstream.JetStream
	State   jetstream.KeyValue    // KV bucket "state"
	Weights jetstream.ObjectStore // Object Store bucket "weights"
	log     *zap.Logger
}

// Open ensures the topology exists (idempotently: create what is missing,
// keep what exists; see ensure.go) and returns the handle. It retries while JetStream is
// not yet available (a cluster electing its meta leader) until ctx ends.
// The connection stays owned by the caller.
func Open(ctx context.Context, nc *nats.Conn, cfg Config, log *zap.Logger) (*Bus, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	names, _ := NewNames(cfg.Run)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b := &Bus{Names: names, Config: cfg, NC: nc, JS: js, log: log}
	backoff := 200 * time.Millisecond
	for {
		err = b.ensureUnlessDenied(ctx)
		if err == nil {
			return b, nil
		}
		if errors.Is(err, ErrDenied) {
			return nil, err
		}
		if errors.Is(err, ErrConfig) || ctx.Err() != nil || !transient(err) {
			return nil, err
		}
		log.Debug("topology not ready, retrying", zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: open run %s: %w (last error: %v)", cfg.Run, ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

// ensureUnlessDenied is ensure, cut short when the server refuses one of
// its requests: a refused request gets no reply, so without this the wait
// would last until the request's timeout, and Open would retry for ever.
func (b *Bus) ensureUnlessDenied(ctx context.Context) error {
	if err, _ := Denied(b.NC); err != nil {
		return b.denied(err)
	}
	_, ch := Denied(b.NC)
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-ch:
			cancel()
		case <-dctx.Done():
		}
	}()
	err := b.ensure(dctx)
	if derr, _ := Denied(b.NC); derr != nil {
		return b.denied(derr)
	}
	return err
}

func (b *Bus) denied(err error) error {
	return fmt.Errorf("%w: connection %q on run %s: %v; the credentials given (--creds) are not this role's for this run",
		ErrDenied, b.NC.Opts.Name, b.Names.Run, err)
}

// transient reports errors worth retrying while a server or cluster comes
// up: no API answer at all (timeouts, no responders, reconnecting) or the
// cluster saying it is not ready. Refusals (insufficient resources, a
// conflicting declaration, bad config) are permanent.
func transient(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return true
	}
	switch api.ErrorCode {
	case 10008, // JetStream cluster not available (meta leader election)
		10005, // no suitable peers for placement (cluster still forming)
		jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
		return true
	}
	return false
}

func (b *Bus) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.Config.OpTimeout)
}

// StreamConfig is the declaration of one stream (exported for inspect and
// tests).
// streamDescriptions are what `nats stream ls` shows beside each stream.
var streamDescriptions = map[Kind]string{
	Tasks:      "exgrpo rollout tasks (work queue: learner -> actors)",
	Rollouts:   "exgrpo sampled trajectories, stored once (actors -> verifiers, learner, replay)",
	Scored:     "exgrpo verdicts: reward of each trajectory by id and ROLLOUTS sequence (verifiers -> learner, inspect)",
	Experience: "exgrpo replay pool: successful trajectories, one subject per question",
	Control:    "exgrpo ledger: step reports and learner lineage records",
	Dead:       "exgrpo messages that could not be processed, with the reason",
}

func (b *Bus) StreamConfig(k Kind) jetstream.StreamConfig {
	c := b.Config
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	base := b.Names.Subject(k)
	sc := jetstream.StreamConfig{
		Name:        b.Names.Stream(k),
		Description: streamDescriptions[k],
		Subjects:    []string{base, base + ".>"},
		Storage:     storage,
		Replicas:    c.Replicas,
		Duplicates:  c.Duplicates,
		MaxMsgSize:  MaxPayload,
		Discard:     jetstream.DiscardOld,
		MaxBytes:    -1,
		MaxMsgs:     -1,
	}
	switch k {
	case Tasks:
		sc.Retention = jetstream.WorkQueuePolicy
		// A work queue pushes back instead of losing work: a full queue
		// refuses new publishes, which the publisher retries.
		sc.Discard = jetstream.DiscardNew
		sc.MaxBytes = c.WorkQueueMaxBytes
		if sc.MaxBytes == 0 {
			sc.MaxBytes = 2 << 30
		}
	case Rollouts:
		// The one store of the trajectories: several readers (the
		// verifiers' shared consumer, the learner, the replay service's
		// gets by sequence), so limits retention, sized far above what is
		// in flight (see RolloutsMaxBytes); direct gets so that any replica
		// serves a get by sequence.
		sc.Retention = jetstream.LimitsPolicy
		sc.MaxBytes = c.RolloutsMaxBytes
		if sc.MaxBytes == 0 {
			sc.MaxBytes = 4 << 30
		}
		sc.AllowDirect = true
	case Scored:
		sc.Retention = jetstream.LimitsPolicy
		sc.MaxBytes = c.ScoredMaxBytes
	case Experience:
		sc.Retention = jetstream.LimitsPolicy
		sc.Subjects = []string{base + ".>"}
		sc.MaxBytes = c.ExperienceMaxBytes
		sc.AllowDirect = true
		sc.AllowRollup = false
	case Control:
		sc.Retention = jetstream.LimitsPolicy
		sc.MaxBytes = c.ControlMaxBytes
	case Dead:
		sc.Retention = jetstream.LimitsPolicy
		sc.Subjects = []string{base + ".>"}
		sc.MaxBytes = c.DeadMaxBytes
	}
	return sc
}

func (b *Bus) ensure(ctx context.Context) error {
	for _, k := range Kinds {
		octx, cancel := b.opCtx(ctx)
		st, err := ensureStream(octx, b.JS, b.StreamConfig(k))
		cancel()
		if err != nil {
			return fmt.Errorf("bus: stream %s: %w", b.Names.Stream(k), err)
		}
		if k == Rollouts && st.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy {
			// A stream's retention cannot change in place.
			return fmt.Errorf("%w: stream %s is a work queue, as versions that stored each trajectory twice declared it; "+
				"this version keeps the trajectories on ROLLOUTS (a limits stream read by the verifiers, the learner and the "+
				"replay service) and cannot run on it: use a new run id, or delete the run's streams", ErrConfig, b.Names.Stream(k))
		}
	}
	storage := jetstream.FileStorage
	if b.Config.Memory {
		storage = jetstream.MemoryStorage
	}
	octx, cancel := b.opCtx(ctx)
	kv, err := ensureKeyValue(octx, b.JS, jetstream.KeyValueConfig{
		Bucket: b.Names.StateBucket(), Description: "exgrpo run state", History: 1,
		Storage: storage, Replicas: b.Config.Replicas, MaxValueSize: wire.MaxMessageBytes,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("bus: kv %s: %w", b.Names.StateBucket(), err)
	}
	octx, cancel = b.opCtx(ctx)
	obs, err := ensureObjectStore(octx, b.JS, jetstream.ObjectStoreConfig{
		Bucket: b.Names.WeightsBucket(), Description: "exgrpo policy weights by version",
		Storage: storage, Replicas: b.Config.Replicas,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("bus: object store %s: %w", b.Names.WeightsBucket(), err)
	}
	b.State, b.Weights = kv, obs
	for _, k := range []Kind{Tasks, Rollouts} {
		if _, err := b.Shared(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// SharedConsumerConfig is the declaration of the shared pull consumer of
// Tasks (a work queue) or Rollouts (a limits stream: the consumer's acks,
// not the stream, say which rollouts are graded).
func (b *Bus) SharedConsumerConfig(k Kind) (jetstream.ConsumerConfig, error) {
	c := b.Config
	switch k {
	case Tasks:
		return jetstream.ConsumerConfig{Durable: ActorsConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: c.TaskAckWait, MaxDeliver: c.TaskMaxDeliver, MaxAckPending: c.MaxAckPending,
			Replicas: c.Replicas, MaxRequestBatch: 1024}, nil
	case Rollouts:
		return jetstream.ConsumerConfig{Durable: VerifiersConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: c.RolloutAckWait, MaxDeliver: c.RolloutMaxDeliver, MaxAckPending: c.MaxAckPending,
			Replicas: c.Replicas, MaxRequestBatch: 1024}, nil
	}
	return jetstream.ConsumerConfig{}, fmt.Errorf("%w: %s has no shared consumer", ErrConfig, k)
}

// Shared returns (creating idempotently) the shared durable pull consumer of
// Tasks ("actors") or Rollouts ("verifiers").
func (b *Bus) Shared(ctx context.Context, k Kind) (jetstream.Consumer, error) {
	cc, err := b.SharedConsumerConfig(k)
	if err != nil {
		return nil, err
	}
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	cons, err := ensureConsumer(octx, b.JS, b.Names.Stream(k), cc)
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on %s: %w", cc.Durable, b.Names.Stream(k), err)
	}
	return cons, nil
}

// ReaderOptions tune a per-reader durable consumer.
type ReaderOptions struct {
	AckWait       time.Duration // default 30s
	MaxDeliver    int           // default -1 (unlimited: a reader must see everything)
	MaxAckPending int           // default 4096
	// FilterSubjects restricts the reader (e.g. one question's experience);
	// default the whole stream.
	FilterSubjects []string
	// StartSeq starts a new reader at a stream sequence instead of the first
	// message; ignored when the durable already exists.
	StartSeq uint64
}

// Reader returns (creating idempotently) the durable pull consumer `name`
// (e.g. "learner", "replay", "inspect") on a limits stream (Scored, Control,
// Experience, Dead). Each reader sees every message once it is acked.
func (b *Bus) Reader(ctx context.Context, k Kind, name string, o ReaderOptions) (jetstream.Consumer, error) {
	if k == Tasks || k == Rollouts {
		return nil, fmt.Errorf("%w: %s is read through its shared consumer (Shared) or by sequence (GetRollouts)", ErrConfig, k)
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxDeliver == 0 {
		o.MaxDeliver = -1
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = 4096
	}
	cc := jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: o.AckWait, MaxDeliver: o.MaxDeliver, MaxAckPending: o.MaxAckPending,
		Replicas: b.Config.Replicas, DeliverPolicy: jetstream.DeliverAllPolicy, MaxRequestBatch: 1024}
	if len(o.FilterSubjects) == 1 {
		cc.FilterSubject = o.FilterSubjects[0]
	} else if len(o.FilterSubjects) > 1 {
		cc.FilterSubjects = o.FilterSubjects
	}
	if o.StartSeq > 0 {
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = o.StartSeq
	}
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	cons, err := b.JS.Consumer(octx, b.Names.Stream(k), name)
	if err == nil {
		return cons, nil // keep an existing reader's position and start policy
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("bus: reader %s on %s: %w", name, b.Names.Stream(k), err)
	}
	cons, err = b.JS.CreateOrUpdateConsumer(octx, b.Names.Stream(k), cc)
	if err != nil {
		return nil, fmt.Errorf("bus: reader %s on %s: %w", name, b.Names.Stream(k), err)
	}
	return cons, nil
}

// Stream returns the stream handle of kind k.
func (b *Bus) Stream(ctx context.Context, k Kind) (jetstream.Stream, error) {
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	s, err := b.JS.Stream(octx, b.Names.Stream(k))
	if err != nil {
		return nil, fmt.Errorf("bus: stream %s: %w", b.Names.Stream(k), err)
	}
	return s, nil
}

// PurgeExperience removes one question's stored experience (retirement,
// ALGORITHM.md E4).
func (b *Bus) PurgeExperience(ctx context.Context, question string) error {
	s, err := b.Stream(ctx, Experience)
	if err != nil {
		return err
	}
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := s.Purge(octx, jetstream.WithPurgeSubject(b.Names.ExperienceSubject(question))); err != nil {
		return fmt.Errorf("bus: purge experience of %s: %w", question, err)
	}
	return nil
}

// Lag is a consumer's backlog, for metrics and inspect.
type Lag struct {
	Pending     uint64 // messages not yet delivered
	AckPending  int    // delivered, not yet acked
	Redelivered int    // delivered more than once, not yet acked
	Waiting     int    // outstanding pull requests (idle workers)
}

// ConsumerLag reads a consumer's backlog.
func (b *Bus) ConsumerLag(ctx context.Context, k Kind, consumer string) (Lag, error) {
	octx, cancel := b.opCtx(ctx)
	defer cancel()
	c, err := b.JS.Consumer(octx, b.Names.Stream(k), consumer)
	if err != nil {
		return Lag{}, fmt.Errorf("bus: consumer %s on %s: %w", consumer, b.Names.Stream(k), err)
	}
	info, err := c.Info(octx)
	if err != nil {
		return Lag{}, fmt.Errorf("bus: consumer %s info: %w", consumer, err)
	}
	return Lag{Pending: info.NumPending, AckPending: info.NumAckPending, Redelivered: info.NumRedelivered, Waiting: info.NumWaiting}, nil
}
