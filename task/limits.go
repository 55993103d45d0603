package task

// Length caps of the built-in task, in characters (one token each). The
// generators keep every built-in question and worked solution within them
// (TestGeneratedProblemsWellFormed); the model's context must hold
// BOS + prompt + separator + response + EOS.
const (
	MaxPromptChars   = 24 // longest built-in question: 7 operands, 13 chars
	MaxResponseChars = 71 // longest built-in solution (7 operands) is under it

	// MaxNew caps sampled response tokens (EOS included) for evaluation.
	MaxNew = MaxResponseChars + 1
	// TrainMaxNew caps sampled response tokens during RL on the training
	// distribution: its solutions are at most 47 characters, plus EOS.
	TrainMaxNew = 48
)
