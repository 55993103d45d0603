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
//	EXGRPO_<RUN>_ROLLOUTS      limits, bounded, direct  exgrpo.<run>.rollouts[.>]
//	EXGRPO_<RUN>_SCORED        limits, bounded  exgrpo.<run>.scored[.>]  (verdicts)
//	EXGRPO_<RUN>_EXPERIENCE    limits, direct   exgrpo.<run>.exp.<question token>
//	EXGRPO_<RUN>_CONTROL       limits           exgrpo.<run>.control[.>]
//	EXGRPO_<RUN>_DEAD          limits, bounded  exgrpo.<run>.dead.<stream kind>
//	KV EXGRPO_<RUN>_STATE      key "policy.version" (decimal), free for others
//	Object Store EXGRPO_<RUN>_WEIGHTS  objects "v<version>", last KeepWeights kept
//
// <RUN> is the run id upper-cased (run ids are [A-Za-z0-9_-], so "a" and "A"
// share streams; use lower-case ids). Consumers: one shared durable pull
// consumer each for the actors on TASKS and the verifiers on ROLLOUTS
// ("actors", "verifiers", see Bus.Shared) and one durable per reader on the
// other limits streams (Bus.Reader).
//
// A trajectory crosses JetStream once: the actor stores it on ROLLOUTS, the
// one store of trajectories; a verifier publishes only verdicts
// (wire.Verdict: reward, reason, the trajectory's ROLLOUTS sequence), those
// of the rollouts it graded together in one wire.Verdicts message, on
// SCORED; the learner follows ROLLOUTS (Bus.Follow) and joins each
// trajectory with its verdict; the replay service reads from ROLLOUTS, by
// the sequences a step report names, only the trajectories its pool stores
// (Bus.GetRollouts). ROLLOUTS is therefore a limits stream sized far above
// what is in flight (Config.RolloutsMaxBytes), not a work queue.
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
