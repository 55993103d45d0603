// Package service is the learner role: it drives one ExGRPO training step
// after another over JetStream (ARCHITECTURE.md, "One training step").
//
// A step t:
//  1. asks the replay service for n_exp pool questions (request/reply, E6),
//  2. fetches their candidate trajectories from EXPERIENCE and keeps, per
//     question, the one with the lowest mean entropy under the current policy
//     (E7, learner.SelectTrajectory),
//  3. draws the fresh questions (learner.FreshSampler, retired ones skipped
//     from the next epoch on, E4) and publishes TASKS: K samples per fresh
//     question, K-1 per replayed one (E8), at the current policy version,
//  4. gathers the step's rollouts: the trajectories from ROLLOUTS joined
//     with their verdicts from SCORED (both followed from the epoch's
//     start, see join.go), dropping those older than the staleness bound S,
//  5. trains (learner.Learner.Step: E9-E14), publishes the new weights and
//     the step report on CONTROL, which the replay service folds (E2-E5).
//
// With Staleness S >= 1 the tasks of steps t+1..t+S are already out while
// step t trains, so actors run ahead by at most S versions; S = 0 is the
// paper's synchronous loop. Checkpoints (policy, optimiser, step, mode,
// retired questions) let a restarted learner continue at the next step.
package service

import (
	"errors"
	"fmt"
	"time"

	"github.com/exgrpo/exgrpo/learner"
)

// ErrConfig marks an invalid Config.
var ErrConfig = errors.New("learner service: invalid config")

// Config configures the learner role.
type Config struct {
	// Learner holds the algorithm's symbols (K, B, rho, beta, lr, S, ...).
	Learner learner.Config
	// Steps is the number of steps after which Run returns (counting from
	// step 0, so a resumed run stops at the same step); 0 runs until ctx ends.
	Steps int64
	// MaxNew caps response tokens per rollout; default learner.DefaultLMax.
	MaxNew int
	// Temperature of the actors' sampling; default 1. The actors record
	// log-probs of softmax(z/T) and the trainer scores at the same T.
	Temperature float32
	// Seed seeds question draws, E7 tie-breaking and the tasks' sampling seeds.
	Seed int64
	// SampleTimeout bounds one replay sample request; it is retried until
	// ReplayWait. Default 10s.
	SampleTimeout time.Duration
	// ReplayWait is how long a step waits for the replay service before it
	// goes on with fresh questions only (logged). Default 5m.
	ReplayWait time.Duration
	// GatherTimeout is how long a step waits for its rollouts; after it the
	// step trains on the complete groups and drops the rest (counted).
	// Default 10m (tasks are redelivered to live actors well before).
	GatherTimeout time.Duration
	// CheckpointDir receives the checkpoints (CheckpointFormat); empty = no
	// checkpoints.
	CheckpointDir string
	// CheckpointFormat is FormatFile (step-<n>.safetensors and
	// latest.safetensors: the built-in architecture only), FormatDir
	// (step-<n>/ directories from the trainer's own SaveWeights and
	// SaveOptimizer, and a latest file naming one: any trainer), or "" =
	// FormatFile for the built-in architecture, FormatDir for another.
	CheckpointFormat string
	// CheckpointEvery writes a checkpoint every this many steps (and after
	// the last one); 0 = only after the last step.
	CheckpointEvery int
	// CheckpointKeep is how many checkpoints stay on disk: after each new
	// one is complete and latest names it, older ones of this run are
	// deleted down to the newest CheckpointKeep of this lineage (latest and
	// the one before it always among them: a resume may go back to either,
	// and the replay service keeps the pool as of both). 0 = the format's
	// default (DefaultKeepDir for FormatDir, every checkpoint for
	// FormatFile), -1 = every checkpoint, 1 is refused.
	CheckpointKeep int
	// EvalEvery runs the held-out evaluation every this many steps (and
	// after the last one); 0 = only after the last step. Needs Deps.Evaluate.
	EvalEvery int
	// Resume continues from the latest checkpoint in CheckpointDir
	// (latest.safetensors, or what the latest file names for FormatDir).
	Resume bool
	// ConnLoss: when the NATS connection has not been connected for this
	// long, Run returns an error wrapping bus.ErrConnectionLost (the role
	// exits and is restarted, with --resume=auto, instead of stalling on a
	// client that does not come back). Default 2m.
	ConnLoss time.Duration
	// PublishTimeout bounds the wait for the acks of a step's tasks and of
	// its report; after it Run returns an error. Default 3m.
	PublishTimeout time.Duration
	// WatchDead runs the max-deliveries watcher that copies poison messages
	// to DEAD (bus.WatchMaxDeliveries); one privileged role per run does it,
	// and that is the learner. Default true.
	WatchDead bool
}

// DefaultConfig returns the built-in task's settings.
func DefaultConfig() Config {
	return Config{Learner: learner.DefaultConfig(), MaxNew: learner.DefaultLMax, Temperature: 1,
		Seed: 1, SampleTimeout: 10 * time.Second, ReplayWait: 5 * time.Minute,
		GatherTimeout: 10 * time.Minute, ConnLoss: 2 * time.Minute, PublishTimeout: 3 * time.Minute, CheckpointEvery: 0, EvalEvery: 0, WatchDead: true}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if err := c.Learner.Validate(); err != nil {
		return fmt.Errorf("learner service: %w", err)
	}
	switch {
	case c.Steps < 0:
		return fmt.Errorf("%w: Steps %d must be >= 0 (0 = until stopped)", ErrConfig, c.Steps)
	case c.MaxNew < 1:
		return fmt.Errorf("%w: MaxNew %d must be >= 1 token", ErrConfig, c.MaxNew)
	case c.MaxNew > c.Learner.LMax:
		return fmt.Errorf("%w: MaxNew %d exceeds LMax %d, the Dr.GRPO normaliser (E12); raise LMax", ErrConfig, c.MaxNew, c.Learner.LMax)
	case !(c.Temperature > 0):
		return fmt.Errorf("%w: Temperature %v must be > 0", ErrConfig, c.Temperature)
	case c.SampleTimeout <= 0 || c.ReplayWait <= 0 || c.GatherTimeout <= 0 || c.ConnLoss <= 0 || c.PublishTimeout <= 0:
		return fmt.Errorf("%w: SampleTimeout, ReplayWait, GatherTimeout, ConnLoss and PublishTimeout must be positive (start from DefaultConfig)", ErrConfig)
	case c.CheckpointEvery < 0 || c.EvalEvery < 0:
		return fmt.Errorf("%w: CheckpointEvery and EvalEvery must be >= 0", ErrConfig)
	case c.CheckpointKeep < -1 || c.CheckpointKeep == 1:
		return fmt.Errorf("%w: CheckpointKeep %d (want 0 = the format's default, -1 = every checkpoint, or >= 2: a resume may go back to the checkpoint before the latest)", ErrConfig, c.CheckpointKeep)
	case c.CheckpointFormat != "" && c.CheckpointFormat != FormatFile && c.CheckpointFormat != FormatDir:
		return fmt.Errorf("%w: CheckpointFormat %q (want %s, %s or empty)", ErrConfig, c.CheckpointFormat, FormatFile, FormatDir)
	case c.Resume && c.CheckpointDir == "":
		return fmt.Errorf("%w: Resume needs CheckpointDir", ErrConfig)
	}
	return nil
}

// checkpointFormat is the checkpoint format for a trainer of architecture
// arch: the configured one, or the default (FormatFile for the built-in
// architecture, FormatDir for another, which a policy file cannot hold).
func (c Config) checkpointFormat(arch string) (string, error) {
	return CheckpointFormatFor(c.CheckpointFormat, arch)
}

// CheckpointFormatFor resolves a CheckpointFormat setting for a trainer of
// architecture arch (see Config.CheckpointFormat).
func CheckpointFormatFor(format, arch string) (string, error) {
	switch {
	case format == "" && arch == "builtin":
		return FormatFile, nil
	case format == "":
		return FormatDir, nil
	case format == FormatFile && arch != "builtin":
		return "", fmt.Errorf("%w: checkpoint format %s holds the built-in architecture only; a trainer of architecture %q checkpoints as %s",
			ErrConfig, FormatFile, arch, FormatDir)
	case format == FormatFile || format == FormatDir:
		return format, nil
	}
	return "", fmt.Errorf("%w: checkpoint format %q (want %s or %s)", ErrConfig, format, FormatFile, FormatDir)
}
