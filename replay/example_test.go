package replay_test

import (
	"fmt"
	"math/rand/v2"

	"github.com/exgrpo/exgrpo/replay"
)

// A step's report is folded, then questions are drawn for the next step and
// their candidates listed for trajectory selection.
func Example() {
	pool, err := replay.New(replay.DefaultConfig())
	if err != nil {
		panic(err)
	}
	ok := func(id string, tokens ...int32) replay.Trajectory {
		return replay.Trajectory{ID: id, PolicyVersion: 3, Step: 7, PromptTokens: []int32{1, 2},
			Tokens: tokens, LogProbs: make([]float32, len(tokens))}
	}
	err = pool.Apply(replay.Report{Step: 7, Mixed: true, Groups: []replay.Group{
		{QuestionID: "q1", Size: 8, Correct: 4, Successes: []replay.Trajectory{ok("t1", 5, 6), ok("t2", 5, 7)}},
		{QuestionID: "q2", Size: 8, Correct: 8}, // solved 8/8: retired
		{QuestionID: "q3", Size: 8, Correct: 0}, // nothing stored
	}})
	if err != nil {
		panic(err)
	}
	s := pool.Stats()
	fmt.Println("pool", s.Questions, "bucket 4:", s.Buckets[4], "retired", s.Retired, "q2 retired:", pool.Retired("q2"))
	for _, pick := range pool.Sample(64, rand.New(rand.NewPCG(1, 2))) {
		for _, c := range pool.Candidates(pick.QuestionID) {
			fmt.Println(pick.QuestionID, pick.Bucket, c.ID, c.Tokens)
		}
	}
	// Output:
	// pool 1 bucket 4: 1 retired 1 q2 retired: true
	// q1 4 t1 [5 6]
	// q1 4 t2 [5 7]
}
