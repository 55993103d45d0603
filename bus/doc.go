// Package bus is the JetStream layer every exgrpo role stands on: an embedded
// nats-server, connecting, the run's topology, idempotent publishing,
// dead-lettering and the weights broadcast. Roles (actor, verifier worker,
// replay, learner, inspect) import bus; the pure cores never do.
//
// Topology (ARCHITECTURE.md, the data path). Every name carries the run id,
// so runs can share a cluster:
//
//	stream (Names.Stream)      retention        subjects (Names.Subject...)
//	EXGRPO_<RUN>_TASKS         work queue       exgrpo.<run>.tasks[.>]
//	EXGRPO_<RUN>_ROLLOUTS      work queue       exgrpo.<run>.rollouts[.>]
//	EXGRPO_<RUN>_SCORED        limits, bounded  exgrpo.<run>.scored[.>]
//	EXGRPO_<RUN>_EXPERIENCE    limits, direct   exgrpo.<run>.exp.<question token>
//	EXGRPO_<RUN>_CONTROL       limits           exgrpo.<run>.control[.>]
//	EXGRPO_<RUN>_DEAD          limits, bounded  exgrpo.<run>.dead.<stream kind>
//	KV EXGRPO_<RUN>_STATE      key "policy.version" (decimal), free for others
//	Object Store EXGRPO_<RUN>_WEIGHTS  objects "v<version>", last KeepWeights kept
//
// <RUN> is the run id upper-cased (run ids are [A-Za-z0-9_-], so "a" and "A"
// share streams; use lower-case ids). Consumers: one shared durable pull
// consumer per work queue ("actors" on TASKS, "verifiers" on ROLLOUTS, see
// Bus.Shared) and one durable per reader on the limits streams (Bus.Reader).
//
// Typical use by a role:
//
//	nc, err := bus.Connect(ctx, bus.ConnConfig{URL: url, Name: "actor"}, log)
//	b, err := bus.Open(ctx, nc, bus.DefaultConfig(run), log) // creates topology idempotently
//	cons, err := b.Shared(ctx, bus.Tasks)
//	pub := b.NewPublisher(bus.DefaultPublisherConfig())       // bounded, every ack checked
//	defer pub.Close()
//	batch := pub.Batch()
//	batch.Add(ctx, b.Names.Subject(bus.Rollouts), traj.ID, data)
//	err = batch.Wait(ctx)                                     // all acked (deduplicated by id)
//	... msg.Ack()
//
// Undecodable input goes to DEAD with Bus.DeadLetter (publish a wire.DeadLetter,
// then Term the message); Bus.WatchMaxDeliveries copies poison messages that
// exhausted MaxDeliver. Weights: Bus.PublishWeights / Bus.FetchWeights /
// Bus.WatchVersion. Everything that waits takes a context.
package bus
