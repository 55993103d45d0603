// Package inspect is the read-only view of a run's JetStream streams behind
// `exgrpo inspect`: the experience pool as of any step, one question's
// history, the groups of a step, and each stream's size and each consumer's
// lag, as aligned tables, JSON, or a small web page served by the binary.
//
// The replay state is a deterministic fold of the learner's step reports on
// CONTROL and the trajectories they name, stored once on ROLLOUTS (by the
// sequence the report gives; SCORED holds each trajectory's verdict)
// (ALGORITHM.md E1-E5; ARCHITECTURE.md, the data path), so inspect rebuilds
// it by folding the same messages with the same translation as the replay
// service (replay/service.Assemble) into a fresh replay.Pool. Nothing has to be
// switched on before a run for this to work.
//
// Read-only: inspect reads with ephemeral ordered consumers (named
// "exgrpo-inspect_*", removed after each read), single-message gets and
// stream/consumer info. It never publishes, never acknowledges, never
// creates a durable consumer and never declares the topology, so it works
// with the "inspect" credentials of package auth and leaves every other
// reader's position alone. On a run directory it starts an embedded server
// on the run's store (refused with a clear message while the run is still
// going: inspect that one live with --nats).
package inspect
