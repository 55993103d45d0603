package task

// Length caps of the built-in task, in characters (one token each). The
// generators keep every built-in question and worked solution within them
// (TestGeneratedProblemsWellFormed, TestModelConfigHoldsLongestProblem); the
// model's context holds BOS + prompt + separator + MaxNew.
const (
	MaxPromptChars   = 24 // longest built-in question: 7 operands, 13 chars
	MaxResponseChars = 47 // longest built-in solution: 7 operands, 45 chars

	// MaxNew caps sampled response tokens (EOS included) for evaluation.
	MaxNew = MaxResponseChars + 1
	// TrainMaxNew caps sampled response tokens during RL on the training
	// distribution (and is the learner's Dr.GRPO L_max). Training solutions
	// are at most 33 characters; the rest is room for a wandering sample
	// to show it failed.
	TrainMaxNew = 48
)
