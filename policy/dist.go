package policy

import (
	"fmt"
	"math"
)

// LogSoftmax returns, per sequence and per response token position, the
// full next-token log-distribution log softmax(logits / temp) (V values;
// temp 0 means 1). It runs the same kernels as Score; an inference server
// takes its top-k log-probs from it. Memory is (response tokens x V) floats.
func (m *Model) LogSoftmax(seqs []Seq, temp float32) ([][][]float32, error) {
	if math.IsNaN(float64(temp)) || temp < 0 {
		return nil, fmt.Errorf("%w: temperature %v must be >= 0 (0 means 1)", ErrInput, temp)
	}
	if temp == 0 {
		temp = 1
	}
	if _, err := m.pack(seqs); err != nil { // validation only
		return nil, err
	}
	V := m.Config.Vocab
	out := make([][][]float32, len(seqs))
	pw := m.packWeights()
	for i, s := range seqs {
		n := len(s.Tokens)
		rows := make([]int32, 0, n-s.PromptLen)
		for t := s.PromptLen; t < n; t++ {
			rows = append(rows, int32(t-1))
		}
		kv := m.newKV(1, n, true)
		logits := make([]float32, len(rows)*V)
		m.infer(&kv, &pw, m.newInferBufs(n, len(rows)), []int{0}, []int{n}, []int{0}, s.Tokens, rows, logits)
		dist := make([][]float32, len(rows))
		for r := range rows {
			z := logits[r*V : r*V+V]
			mx := z[0]
			for _, v := range z[1:] {
				mx = max(mx, v)
			}
			var sum float64
			for _, v := range z {
				sum += math.Exp(float64(v-mx) / float64(temp))
			}
			lse := math.Log(sum)
			d := make([]float32, V)
			for v, zv := range z {
				d[v] = float32(float64(zv-mx)/float64(temp) - lse)
			}
			dist[r] = d
		}
		out[i] = dist
	}
	return out, nil
}
