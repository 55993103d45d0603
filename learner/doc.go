// Package learner holds the mathematics of one ExGRPO training step, as a pure
// core: no network, no clock, no goroutines of its own, explicit random seeds.
//
// A step goes through these pieces, each citing the requirement of
// docs/ALGORITHM.md it implements:
//
//   - FreshSampler draws the step's fresh questions epoch by epoch and stops
//     drawing retired questions from the next epoch on (E4).
//   - SelectTrajectory picks, for each replayed question, the stored
//     trajectory with the lowest mean token entropy under the current policy
//     (E7).
//   - FilterStale drops fresh rollouts older than the staleness bound S, and
//     NewGroup joins the replayed trajectory with the K-1 fresh rollouts and
//     computes Dr.GRPO advantages (E8, E9).
//   - Objective turns per-token log-probs and entropies into the mixed-policy
//     loss and its derivatives with respect to them (E10-E13); Update feeds
//     those derivatives to the policy's backward pass and AdamW, one
//     mini-batch at a time (E14).
//   - NextMixed is the delayed-start switch (E5), and Learner.Step ties the
//     step together and returns the StepSummary from which the service builds
//     the step report that the replay pool folds.
//
// The JetStream role that drives these pieces lives elsewhere; this package
// only computes.
package learner
