// Package task holds what the policy learns on and how it is judged: the
// built-in verifiable problems (integer arithmetic with worked solutions, in
// graded difficulty levels, with train / held-out partitions and
// out-of-distribution families), datasets in the JSONL shape of common
// public math sets, the one place where prompts are encoded and responses
// decoded for every role, the supervised warm-up that turns a random network
// into a weak base model, and the evaluation (pass@1, pass@K, per-question
// accuracy buckets).
//
// Everything here is pure: no NATS, no goroutines of its own, no clock;
// randomness comes from explicit seeds or *rand.Rand arguments.
package task
