// Package experiment is the learning experiment of the project: on-policy
// Dr.GRPO against ExGRPO on the built-in task, the paper's ablations, a weak
// base model and a hard, fixed question set, several seeds each at an equal
// budget of fresh rollouts; held-out (in-distribution) and out-of-distribution
// pass@1 at the end, learning, bucket-occupancy and entropy curves, and the
// diagnostics that explain a result (replayed groups with a learning signal,
// entropy of replayed against fresh trajectories).
//
// Each run drives the pure cores directly in one goroutine, synchronously:
// task (questions, base model, evaluation), policy (sampling), verifier
// (rewards), replay (the pool: E1-E6) and learner (E7-E14). This is the
// learner role's step loop with staleness S = 0, the paper's setting, without
// the message bus, so that dozens of runs fit the machine and every ablation
// switch of learner.Config and replay.Config is reachable. `exgrpo run` runs
// the same algorithm through the distributed system.
//
// The package owns no goroutines and reads no clock for its results (wall
// times are recorded for information only); every random draw comes from a
// seeded generator, so a run is reproducible given its seed and GOMAXPROCS.
package experiment
