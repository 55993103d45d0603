package service

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/wire"
	"go.uber.org/zap"
)

// The learner's fence: what comes off ROLLOUTS and SCORED was written by
// actors and verifiers the learner cannot vouch for, so every rollout is checked before
// it can reach a forward pass, a group or (through the step report) the
// replay pool. Trusted: nothing but the ids the learner made itself (task id,
// step, question) to find the rollout's place; checked: the arrays against
// the model (wire.Trajectory.Check: lengths, context, vocabulary, finite
// log-probs <= 0, entropies), the reward (0 or 1), the policy version (one
// the learner has published), and that the text the verifier graded is the
// decoding of the tokens the learner trains on. A rollout that fails goes to
// DEAD with the reason and is asked for again (a retry task for that one
// sample), so its group still trains with K rollouts.

// maxRetries bounds how often one rollout is asked for again.
const maxRetries = 3

// waitLogEvery is how often a gather that waits says what it waits for.
const waitLogEvery = 15 * time.Second

// retryRef ties a retry task to the rollout it replaces.
type retryRef struct {
	pt    *planned
	index int
}

// limits is what the model says a rollout can be.
func (s *Service) limits() wire.Limits {
	in := s.core.Trainer().Info()
	return wire.Limits{Vocab: in.Vocab, Context: in.Context}
}

// validate checks one scored rollout of this epoch (see the fence above).
func (s *Service) validate(sc *wire.Scored) error {
	tr := &sc.Traj
	if err := tr.Check(s.limits()); err != nil {
		return err
	}
	if sc.Reward != 0 && sc.Reward != 1 {
		return fmt.Errorf("%w: trajectory %s: reward %v (want 0 or 1)", wire.ErrInvalid, tr.ID, sc.Reward)
	}
	if tr.PolicyVersion < 0 || tr.PolicyVersion > s.version {
		return fmt.Errorf("%w: trajectory %s: policy version %d, but the learner has published up to %d",
			wire.ErrInvalid, tr.ID, tr.PolicyVersion, s.version)
	}
	// The built-in tokenizer decodes only the built-in architecture's ids;
	// an HF model's decoding lives in its worker.
	if s.d.Tokenizer != nil && s.core.Trainer().Info().Arch == "builtin" {
		if text := task.ResponseText(s.d.Tokenizer, tr.Tokens); text != tr.Text {
			return fmt.Errorf("%w: trajectory %s: its text %q is not the decoding of its tokens %q (the verifier graded other text than the learner would train on)",
				wire.ErrInvalid, tr.ID, clip(tr.Text, 80), clip(text, 80))
		}
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// admit handles one joined rollout (a trajectory from ROLLOUTS with its
// verdict from SCORED, see join.go): keep it only when it belongs to this
// epoch, fence it, file it under its step. A refused one goes to DEAD (the
// ROLLOUTS message, with the reason) and is asked for again.
func (s *Service) admit(ctx context.Context, sc *wire.Scored, r *heldRollout) {
	if e, _ := wire.TaskEpoch(sc.Traj.TaskID); e != s.epoch {
		s.met.Ignored.Inc() // another learner epoch's rollout (after a restart): never trained on
		return
	}
	if horizon := s.step + int64(s.cfg.Learner.Staleness); sc.Traj.Step > horizon {
		// No task of this epoch asked for it: forged, or a broken actor.
		s.deadRollout(ctx, r, fmt.Errorf("%w: trajectory %s: step %d is not in flight (the learner has asked for steps up to %d)",
			wire.ErrInvalid, sc.Traj.ID, sc.Traj.Step, horizon))
		return
	}
	if err := s.validate(sc); err != nil {
		s.deadRollout(ctx, r, err)
		s.retry(ctx, sc, err)
		return
	}
	s.accept(sc, r.seq)
}

// locate finds the planned task and the group index a rollout fills.
func (s *Service) locate(tr *wire.Trajectory) (*plan, *planned, int, bool) {
	p, ok := s.plans[tr.Step]
	if !ok {
		return nil, nil, 0, false
	}
	if pt, ok := p.tasks[tr.TaskID]; ok {
		if tr.Index < 0 || tr.Index >= pt.samples {
			return nil, nil, 0, false
		}
		return p, pt, tr.Index, true
	}
	if r, ok := p.retries[tr.TaskID]; ok && tr.Index == 0 {
		return p, r.pt, r.index, true
	}
	return nil, nil, 0, false
}

// retry asks again for the rollout a refused trajectory stood for, with a
// task of its own (one sample, a fresh seed), up to maxRetries times.
func (s *Service) retry(ctx context.Context, sc *wire.Scored, why error) {
	p, pt, i, ok := s.locate(&sc.Traj)
	if !ok {
		return
	}
	if _, done := pt.got[i]; done {
		return
	}
	if pt.retried == nil {
		pt.retried = map[int]int{}
	}
	pt.retried[i]++
	attempt := pt.retried[i]
	if attempt > maxRetries {
		s.log.Warn("rollout refused too often; its group will be incomplete", zap.String("task", pt.taskID), zap.Int("index", i),
			zap.Error(why))
		return
	}
	id := wire.RetryTaskID(pt.taskID, i, attempt)
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", s.cfg.Seed, id)
	tk := wire.Task{RunID: s.d.Bus.Names.Run, TaskID: id, Step: p.step, QuestionID: pt.problem.ID, Prompt: pt.problem.Prompt,
		Answer: pt.problem.Answer, Kind: pt.problem.Kind, Samples: 1, MinVersion: p.version, MaxNew: s.cfg.MaxNew,
		Temp: s.cfg.Temperature, Seed: int64(h.Sum64() >> 1), PromptTokens: pt.prompt}
	data, err := wire.Encode(&tk)
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
		_, err = s.pub.Publish(pctx, s.d.Bus.Names.Subject(bus.Tasks), id, data)
		cancel()
	}
	if err != nil {
		s.log.Warn("could not ask for a refused rollout again", zap.String("task", id), zap.Error(err))
		return
	}
	p.retries[id] = retryRef{pt: pt, index: i}
	s.met.Retried.Inc()
	s.log.Info("refused rollout asked for again", zap.String("task", id), zap.Error(why))
}

// waiting describes what a gather still waits for: the tasks with missing
// rollouts (a few named) and how many rollouts.
func (p *plan) waiting() (tasks []string, rollouts int) {
	for _, id := range p.order {
		pt := p.tasks[id]
		if n := pt.samples - len(pt.got); n > 0 {
			tasks = append(tasks, fmt.Sprintf("%s (%d)", id, n))
			rollouts += n
		}
	}
	sort.Strings(tasks)
	return tasks, rollouts
}

// logWait says what step p waits for and since when.
func (s *Service) logWait(p *plan, since time.Time) {
	tasks, n := p.waiting()
	shown := tasks
	if len(shown) > 5 {
		shown = shown[:5]
	}
	s.log.Info("gather waiting for rollouts", zap.Int64("step", p.step), zap.Int("rollouts", n), zap.Int("tasks", len(tasks)),
		zap.String("first_tasks", strings.Join(shown, ", ")), zap.Duration("waited", time.Since(since).Round(time.Second)),
		zap.Duration("deadline", s.cfg.GatherTimeout))
}
