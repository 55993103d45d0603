// Package policy is the built-in policy of exgrpo: a small decoder-only
// transformer (GPT-2 style, after llm.c's train_gpt2.c) written in plain Go,
// with everything the RL loop needs from a language model and nothing else.
//
//   - Sample draws responses for a batch of prompts with a KV cache, at a
//     sampling temperature T (no top-p: a nucleus is refused), and records
//     for every generated token the log-probability of that token and the
//     entropy of the whole next-token distribution, both under the
//     distribution it drew from, softmax(z/T).
//   - ScoreAt recomputes exactly those records at the same temperature for
//     given prompt+response sequences (no gradients); ScoreSharedAt does the
//     same for several responses to one prompt, running the prompt once.
//     Score and ScoreShared are the T = 1 cases.
//   - ForwardAt / Pass.Backward differentiate any token-level loss at a
//     temperature (Forward: T = 1): the
//     caller supplies dL/dlogp and dL/dentropy per response token and the
//     gradients accumulate into Model.Grads.
//   - AdamW with global-norm clipping and skip-on-bad-gradient steps.
//   - A character tokenizer and safetensors checkpoints.
//
// Architecture: token + position embeddings, Layers pre-LayerNorm blocks of
// causal multi-head self-attention and a GELU (tanh) MLP of width 4C, final
// LayerNorm, and an output projection that is either tied to the token
// embedding or a separate (V, C) matrix. All parameters live in one flat
// float32 slice (Model.Params) with named views; gradients mirror it.
//
// Dimension letters in shape comments: V vocabulary, C width, NH heads,
// HS = C/NH head size, L layers, T sequence length, N the number of tokens of
// a packed batch (sequences of different lengths are concatenated, never
// padded), M the number of predicted (response) tokens, B sequences.
//
// Concurrency: a Model is safe for use by one goroutine at a time; use Clone
// to give another goroutine its own copy. Internally the maths kernels split
// work over GOMAXPROCS goroutines (matrix products, attention per sequence
// and head, row-wise LayerNorm and GELU); they finish before the call
// returns. Results are deterministic given the *rand.Rand passed in and
// GOMAXPROCS: scheduling never changes them, while a different worker count
// may reassociate a few sums (LayerNorm gain gradients, the gradient norm)
// and change the last bits.
//
// Speed: matrix products go through sgemm. On amd64 CPUs with AVX2 and FMA
// it is a packed GEMM around a 6×16 register-tile kernel in Go assembly
// (gemm.go, gemm_amd64.s), which keeps the static CGO_ENABLED=0 build fast;
// elsewhere, or with the build tag noasm, gonum's pure-Go BLAS; with the
// build tag openblas and cgo, OpenBLAS. Softmax and GELU use a vector exp,
// attention per-head vector row loops (simd.go). Backend() says which
// product is in use.
package policy
