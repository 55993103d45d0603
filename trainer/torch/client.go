package torch

import (
	"bytes"
	"context"
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/vmihailenco/msgpack/v5"
)

// ProtocolVersion is the worker protocol this client speaks
// (torchworker.PROTOCOL_VERSION).
const ProtocolVersion = 1

// maxFrame bounds a reply frame (2 GiB, the worker's bound).
const maxFrame = 1 << 31

//go:embed torchworker/*.py
var workerSource embed.FS

// Options configure Start and Connect.
type Options struct {
	// Python is the interpreter to run the worker with; "" = $EXGRPO_PYTHON,
	// then /usr/bin/python3. It must import torch, numpy and msgpack.
	Python string
	// Device is the worker's torch device ("cpu", "cuda", "cuda:1"); default cpu.
	Device string
	// MicroBatchTokens is the worker's token budget of one forward with
	// gradient; the learner splits mini-batches by it. 0 = no bound.
	MicroBatchTokens int
	// LogitChunk is the worker's tokens per chunk of the fp32 log-prob and
	// entropy computation; 0 = the worker's default (1024).
	LogitChunk int
	// Threads sets torch's intra-op threads; 0 = torch's default.
	Threads int
	// GradientCheckpointing recomputes activations in the backward.
	GradientCheckpointing bool
	// StartTimeout bounds the start-up (model load, socket, hello); default 10 min.
	StartTimeout time.Duration
	// CallTimeout bounds every call after start-up; default 30 min (a large
	// GPU micro-batch takes seconds; a dead worker is noticed at once anyway).
	CallTimeout time.Duration
	// Stderr receives the worker's stderr (besides the tail kept for error
	// messages); nil discards it.
	Stderr io.Writer
}

func (o Options) withDefaults() Options {
	if o.Device == "" {
		o.Device = "cpu"
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Minute
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 30 * time.Minute
	}
	return o
}

// Validate reports a bad option.
func (o Options) Validate() error {
	if o.MicroBatchTokens < 0 || o.LogitChunk < 0 || o.Threads < 0 {
		return fmt.Errorf("%w: MicroBatchTokens, LogitChunk and Threads must be >= 0", trainer.ErrInput)
	}
	return nil
}

// Client is a trainer.Trainer backed by a worker process. Not safe for
// concurrent use (one goroutine drives a trainer).
type Client struct {
	opts Options
	conn net.Conn
	info trainer.Info
	tok  *policy.Tokenizer // the built-in model's tokenizer (nil for HF)

	cmd     *exec.Cmd     // nil when connected to a torchrun worker
	exited  chan struct{} // closed when the started worker exits
	exitErr error         // its Wait error, valid after exited is closed
	stderr  *tailBuffer
	tmp     string // extracted worker source and scratch files

	connMu sync.Mutex // guards conn against the exit watcher
	broken error      // first transport failure; every later call returns it
	cached *policy.Model
	closed sync.Once
}

// Python returns the interpreter Start would use for o.
func (o Options) python() string {
	if o.Python != "" {
		return o.Python
	}
	if p := os.Getenv("EXGRPO_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

// CheckPython reports whether python can import what the worker needs,
// with a message saying how to fix it when not.
func CheckPython(ctx context.Context, python string) error {
	if _, ok := pythonOK.Load(python); ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import torch, numpy, msgpack").CombinedOutput()
	if err != nil {
		return fmt.Errorf("trainer/torch: %s cannot import torch, numpy and msgpack (%v: %s); install them (Debian: python3-torch python3-numpy python3-msgpack) or point --python / EXGRPO_PYTHON at an interpreter that has them",
			python, err, strings.TrimSpace(lastLines(string(out), 3)))
	}
	pythonOK.Store(python, true)
	return nil
}

// pythonOK remembers the interpreters CheckPython accepted (importing torch
// takes seconds).
var pythonOK sync.Map

// StartBuiltin starts a worker that trains the built-in model ck (weights
// and tokenizer; ck.Opt is ignored) with AdamW adam.
func StartBuiltin(ctx context.Context, o Options, ck policy.Checkpoint, adam policy.AdamWConfig) (*Client, error) {
	if ck.Model == nil || ck.Tokenizer == nil {
		return nil, fmt.Errorf("%w: the built-in model and its tokenizer are required", trainer.ErrInput)
	}
	tmp, err := os.MkdirTemp("", "exgrpo-torchworker-")
	if err != nil {
		return nil, fmt.Errorf("trainer/torch: %w", err)
	}
	path := filepath.Join(tmp, "base.safetensors")
	if err := policy.SaveFile(path, policy.Checkpoint{Model: ck.Model, Tokenizer: ck.Tokenizer}); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("trainer/torch: %w", err)
	}
	return start(ctx, o, path, tmp, adam)
}

// Start starts a worker loading model: a built-in checkpoint file (or a
// directory holding model.safetensors) or an HF model directory.
func Start(ctx context.Context, o Options, model string, adam policy.AdamWConfig) (*Client, error) {
	if _, err := os.Stat(model); err != nil {
		return nil, fmt.Errorf("%w: model %s: %w", trainer.ErrInput, model, err)
	}
	abs, err := filepath.Abs(model)
	if err != nil {
		return nil, fmt.Errorf("trainer/torch: %w", err)
	}
	tmp, err := os.MkdirTemp("", "exgrpo-torchworker-")
	if err != nil {
		return nil, fmt.Errorf("trainer/torch: %w", err)
	}
	return start(ctx, o, abs, tmp, adam)
}

func start(ctx context.Context, o Options, model, tmp string, adam policy.AdamWConfig) (*Client, error) {
	o = o.withDefaults()
	fail := func(err error) (*Client, error) {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := o.Validate(); err != nil {
		return fail(err)
	}
	if err := adam.Validate(); err != nil {
		return fail(fmt.Errorf("trainer/torch: %w", err))
	}
	python := o.python()
	if err := CheckPython(ctx, python); err != nil {
		return fail(err)
	}
	if err := extractWorker(tmp); err != nil {
		return fail(err)
	}
	sock := filepath.Join(tmp, "worker.sock")
	args := []string{"-m", "torchworker", "--model", model, "--listen", sock, "--device", o.Device,
		"--micro-batch-tokens", fmt.Sprint(o.MicroBatchTokens)}
	if o.LogitChunk > 0 {
		args = append(args, "--logit-chunk", fmt.Sprint(o.LogitChunk))
	}
	if o.Threads > 0 {
		args = append(args, "--threads", fmt.Sprint(o.Threads))
	}
	if o.GradientCheckpointing {
		args = append(args, "--gradient-checkpointing")
	}
	cmd := exec.Command(python, args...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+tmp, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
	if o.Threads > 0 {
		// BLAS keeps its own thread pool beside torch's: bound both, or a
		// CPU worker oversubscribes the cores it shares with the actors.
		for _, v := range []string{"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"} {
			if os.Getenv(v) == "" {
				cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", v, o.Threads))
			}
		}
	}
	c := &Client{opts: o, cmd: cmd, exited: make(chan struct{}), stderr: newTailBuffer(8<<10, o.Stderr), tmp: tmp}
	cmd.Stderr = c.stderr
	cmd.Stdout = c.stderr
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("trainer/torch: start %s: %w", python, err))
	}
	go func() {
		c.exitErr = cmd.Wait()
		close(c.exited)
		c.connMu.Lock()
		if c.conn != nil {
			c.conn.Close() // a read in progress fails now, not at its deadline
		}
		c.connMu.Unlock()
	}()
	sctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	conn, err := c.dial(sctx, sock)
	if err != nil {
		c.kill()
		return nil, err
	}
	c.connMu.Lock()
	c.conn = conn
	c.connMu.Unlock()
	select {
	case <-c.exited: // exited between dial and here: the watcher may have missed conn
		conn.Close()
	default:
	}
	if err := c.hello(sctx, adam); err != nil {
		c.kill()
		return nil, err
	}
	if c.info.Arch == "builtin" {
		// Fetch the weights once: it checks the export path and gives the
		// client the tokenizer that Restore writes into checkpoints.
		if _, err := c.Weights(sctx); err != nil {
			c.kill()
			return nil, err
		}
	}
	return c, nil
}

// Connect attaches to a worker listening on socket (rank 0 of a torchrun
// job), retrying until o.StartTimeout, and trains with AdamW adam. Close
// then only closes the connection, which ends the worker's job.
func Connect(ctx context.Context, o Options, socket string, adam policy.AdamWConfig) (*Client, error) {
	o = o.withDefaults()
	if err := adam.Validate(); err != nil {
		return nil, fmt.Errorf("trainer/torch: %w", err)
	}
	tmp, err := os.MkdirTemp("", "exgrpo-torchworker-")
	if err != nil {
		return nil, fmt.Errorf("trainer/torch: %w", err)
	}
	c := &Client{opts: o, stderr: newTailBuffer(1, nil), tmp: tmp}
	sctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	conn, err := c.dial(sctx, socket)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	c.conn = conn
	if err := c.hello(sctx, adam); err != nil {
		c.Close()
		return nil, err
	}
	if c.info.Arch == "builtin" {
		if _, err := c.Weights(sctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func extractWorker(dir string) error {
	dst := filepath.Join(dir, "torchworker")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("trainer/torch: %w", err)
	}
	return fs.WalkDir(workerSource, "torchworker", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := workerSource.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o644)
	})
}

// dial connects to the socket once it exists, failing at once when the
// started worker exits first.
func (c *Client) dial(ctx context.Context, sock string) (net.Conn, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", sock)
		if err == nil {
			return conn, nil
		}
		select {
		case <-c.exitedChan():
			return nil, c.deadErr("start-up")
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: worker not listening on %s after %v: %v%s", trainer.ErrBackend, sock, c.opts.StartTimeout, ctx.Err(), c.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Client) exitedChan() <-chan struct{} {
	if c.exited == nil {
		return nil // connected: no process to watch
	}
	return c.exited
}

func (c *Client) tail() string {
	t := strings.TrimSpace(lastLines(c.stderr.String(), 12))
	if t == "" {
		return ""
	}
	return "; worker stderr:\n" + t
}

func (c *Client) deadErr(during string) error {
	return fmt.Errorf("%w: the torch worker exited during %s (%v)%s", trainer.ErrBackend, during, c.exitErr, c.tail())
}

func (c *Client) hello(ctx context.Context, adam policy.AdamWConfig) error {
	r, err := c.call(ctx, "hello", map[string]any{"version": ProtocolVersion, "adam": map[string]any{
		"lr": adam.LR, "beta1": adam.Beta1, "beta2": adam.Beta2, "eps": adam.Eps, "weight_decay": adam.WeightDecay,
		"clip_norm": adam.ClipNorm, "skip_norm": adam.SkipNorm}})
	if err != nil {
		return fmt.Errorf("trainer/torch: hello: %w", err)
	}
	if v := asInt(r["version"]); v != ProtocolVersion {
		return fmt.Errorf("%w: protocol version mismatch: this learner speaks %d, the worker %d", trainer.ErrBackend, ProtocolVersion, v)
	}
	c.info = trainer.Info{Backend: "torch", Arch: asString(r["arch"]), Device: asString(r["device"]), Params: asInt(r["params"]),
		Vocab: asInt(r["vocab"]), Context: asInt(r["context"]), MicroBatchTokens: asInt(r["micro_batch_tokens"]), Model: asString(r["model"])}
	if adam.Schedule != nil {
		return fmt.Errorf("%w: the torch worker runs a constant learning rate; AdamW schedules are not sent over the protocol", trainer.ErrInput)
	}
	return nil
}

// call sends one request and reads its reply under the call's deadline. A
// reply with ok=false is a request error (the worker stays usable) unless it
// is marked fatal; any transport failure breaks the client.
func (c *Client) call(ctx context.Context, op string, args map[string]any) (map[string]any, error) {
	if c.broken != nil {
		return nil, c.broken
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msg := make(map[string]any, len(args)+1)
	for k, v := range args {
		msg[k] = v
	}
	msg["op"] = op
	body, err := msgpack.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("trainer/torch: encode %s: %w", op, err)
	}
	deadline := time.Now().Add(c.opts.CallTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		if !d.After(time.Now()) {
			return nil, context.DeadlineExceeded // nothing sent: the stream stays in step
		}
		deadline = d
	}
	if err := c.conn.SetDeadline(deadline); err != nil {
		return nil, c.fail(op, err)
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	frame := make([]byte, 4, 4+len(body))
	binary.LittleEndian.PutUint32(frame, uint32(len(body)))
	if _, err := c.conn.Write(append(frame, body...)); err != nil {
		return nil, c.fail(op, ctxOr(ctx, err))
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
		return nil, c.fail(op, ctxOr(ctx, err))
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > maxFrame {
		return nil, c.fail(op, fmt.Errorf("reply frame of %d bytes", n))
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.conn, buf); err != nil {
		return nil, c.fail(op, ctxOr(ctx, err))
	}
	var reply map[string]any
	if err := msgpack.Unmarshal(buf, &reply); err != nil {
		return nil, c.fail(op, fmt.Errorf("decode reply: %w", err))
	}
	if ok, _ := reply["ok"].(bool); !ok {
		e := fmt.Errorf("%w: torch worker: %s", trainer.ErrInput, asString(reply["error"]))
		if fatal, _ := reply["fatal"].(bool); fatal {
			e = fmt.Errorf("%w: torch worker: %s", trainer.ErrBackend, asString(reply["error"]))
			c.broken = e
		}
		return nil, e
	}
	return reply, nil
}

// ctxOr names the context's end as the cause of a transport error when it
// is one (the deadline set from the context may pass before the context's
// own timer has fired).
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if d, ok := ctx.Deadline(); ok && !d.After(time.Now()) {
		return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	return err
}

// fail records a transport failure: the stream is out of step now, so the
// client is broken for good.
func (c *Client) fail(op string, err error) error {
	if c.exited != nil {
		select {
		case <-c.exited:
			c.broken = c.deadErr(op)
			return c.broken
		case <-time.After(200 * time.Millisecond): // an exit closing the socket lands within this
			select {
			case <-c.exited:
				c.broken = c.deadErr(op)
				return c.broken
			default:
			}
		}
	}
	c.broken = fmt.Errorf("%w: torch worker: %s: %w%s", trainer.ErrBackend, op, err, c.tail())
	return c.broken
}

// Info implements trainer.Trainer.
func (c *Client) Info() trainer.Info { return c.info }

func packSeqs(seqs []policy.Seq) map[string]any {
	var toks, lens, plens []int32
	for _, s := range seqs {
		toks = append(toks, s.Tokens...)
		lens = append(lens, int32(len(s.Tokens)))
		plens = append(plens, int32(s.PromptLen))
	}
	return map[string]any{"tokens": i32Bytes(toks), "lens": i32Bytes(lens), "prompt_lens": i32Bytes(plens)}
}

func checkSeqs(seqs []policy.Seq) error {
	for i, s := range seqs {
		if s.PromptLen < 1 || s.PromptLen > len(s.Tokens) {
			return fmt.Errorf("%w: sequence %d: PromptLen %d outside [1, %d]", trainer.ErrInput, i, s.PromptLen, len(s.Tokens))
		}
	}
	return nil
}

func checkTemp(temp float32) error {
	if !(temp > 0) || math.IsInf(float64(temp), 0) {
		return fmt.Errorf("%w: temperature %v must be finite and > 0", trainer.ErrInput, temp)
	}
	return nil
}

// unpackRows cuts the packed per-token results by each sequence's response
// length.
func unpackRows(r map[string]any, counts []int) ([][]float32, [][]float32, error) {
	total := 0
	for _, k := range counts {
		total += k
	}
	lp, err := f32s(r["logps"], total)
	if err != nil {
		return nil, nil, err
	}
	en, err := f32s(r["ents"], total)
	if err != nil {
		return nil, nil, err
	}
	lps, ens := make([][]float32, len(counts)), make([][]float32, len(counts))
	off := 0
	for i, k := range counts {
		lps[i], ens[i] = lp[off:off+k:off+k], en[off:off+k:off+k]
		off += k
	}
	return lps, ens, nil
}

func responseCounts(seqs []policy.Seq) []int {
	out := make([]int, len(seqs))
	for i, s := range seqs {
		out[i] = len(s.Tokens) - s.PromptLen
	}
	return out
}

func (c *Client) scoreOp(ctx context.Context, op string, seqs []policy.Seq, temp float32) ([][]float32, [][]float32, error) {
	if err := checkTemp(temp); err != nil {
		return nil, nil, err
	}
	if err := checkSeqs(seqs); err != nil {
		return nil, nil, err
	}
	args := packSeqs(seqs)
	args["temp"] = float64(temp)
	r, err := c.call(ctx, op, args)
	if err != nil {
		return nil, nil, err
	}
	lp, en, err := unpackRows(r, responseCounts(seqs))
	if err != nil {
		return nil, nil, c.fail(op, err)
	}
	return lp, en, nil
}

// Score implements trainer.Trainer.
func (c *Client) Score(ctx context.Context, seqs []policy.Seq, temp float32) ([][]float32, [][]float32, error) {
	return c.scoreOp(ctx, "score", seqs, temp)
}

// ScoreShared implements trainer.Trainer.
func (c *Client) ScoreShared(ctx context.Context, prompt []int32, responses [][]int32, temp float32) ([][]float32, [][]float32, error) {
	if err := checkTemp(temp); err != nil {
		return nil, nil, err
	}
	var toks, lens []int32
	counts := make([]int, len(responses))
	for i, r := range responses {
		toks = append(toks, r...)
		lens = append(lens, int32(len(r)))
		counts[i] = len(r)
	}
	r, err := c.call(ctx, "score_shared", map[string]any{"prompt": i32Bytes(prompt), "resp_tokens": i32Bytes(toks),
		"resp_lens": i32Bytes(lens), "temp": float64(temp)})
	if err != nil {
		return nil, nil, err
	}
	lp, en, err := unpackRows(r, counts)
	if err != nil {
		return nil, nil, c.fail("score_shared", err)
	}
	return lp, en, nil
}

// Forward implements trainer.Trainer.
func (c *Client) Forward(ctx context.Context, seqs []policy.Seq, temp float32) ([][]float32, [][]float32, error) {
	return c.scoreOp(ctx, "forward", seqs, temp)
}

// Backward implements trainer.Trainer.
func (c *Client) Backward(ctx context.Context, dlogps, dents [][]float32) error {
	args := map[string]any{"dlogps": f32Bytes(dlogps)}
	if dents != nil {
		if len(dents) != len(dlogps) {
			return fmt.Errorf("%w: %d entropy gradient rows for %d log-prob rows", trainer.ErrInput, len(dents), len(dlogps))
		}
		for i := range dents {
			if len(dents[i]) != len(dlogps[i]) {
				return fmt.Errorf("%w: row %d: %d entropy gradients for %d log-prob gradients", trainer.ErrInput, i, len(dents[i]), len(dlogps[i]))
			}
		}
		args["dents"] = f32Bytes(dents)
	}
	_, err := c.call(ctx, "backward", args)
	return err
}

// Step implements trainer.Trainer.
func (c *Client) Step(ctx context.Context) (policy.StepInfo, error) {
	c.cached = nil
	r, err := c.call(ctx, "step", nil)
	if err != nil {
		return policy.StepInfo{}, err
	}
	skipped, _ := r["skipped"].(bool)
	return policy.StepInfo{GradNorm: asFloat(r["grad_norm"]), Skipped: skipped, LR: asFloat(r["lr"])}, nil
}

// Gradients implements trainer.GradientReader.
func (c *Client) Gradients(ctx context.Context) ([]float32, error) {
	r, err := c.call(ctx, "gradients", nil)
	if err != nil {
		return nil, err
	}
	g, err := f32s(r["grads"], c.info.Params)
	if err != nil {
		return nil, c.fail("gradients", err)
	}
	return g, nil
}

func (c *Client) export(ctx context.Context, opt bool) (policy.Checkpoint, error) {
	if c.info.Arch != "builtin" {
		return policy.Checkpoint{}, fmt.Errorf("%w: the worker holds an %s model", trainer.ErrNotBuiltin, c.info.Arch)
	}
	r, err := c.call(ctx, "export", map[string]any{"opt": opt})
	if err != nil {
		return policy.Checkpoint{}, err
	}
	b, _ := r["checkpoint"].([]byte)
	ck, err := policy.ReadCheckpoint(bytes.NewReader(b))
	if err != nil {
		return policy.Checkpoint{}, c.fail("export", err)
	}
	return ck, nil
}

// Weights implements trainer.Trainer: a copy fetched from the worker once
// per update (cached until the next Step or Restore).
func (c *Client) Weights(ctx context.Context) (*policy.Model, error) {
	if c.cached != nil {
		return c.cached, nil
	}
	ck, err := c.export(ctx, false)
	if err != nil {
		return nil, err
	}
	c.cached, c.tok = ck.Model, ck.Tokenizer
	return c.cached, nil
}

// Optimizer implements trainer.Trainer (a copy fetched from the worker).
func (c *Client) Optimizer(ctx context.Context) (*policy.AdamW, error) {
	ck, err := c.export(ctx, true)
	if err != nil {
		return nil, err
	}
	if ck.Opt == nil {
		return nil, c.fail("export", errors.New("the worker sent no optimiser state"))
	}
	return ck.Opt, nil
}

// Restore implements trainer.Trainer (through a file in the client's
// scratch directory, which the worker reads).
func (c *Client) Restore(ctx context.Context, m *policy.Model, opt *policy.AdamW) error {
	if c.info.Arch != "builtin" {
		return fmt.Errorf("%w: the worker holds an %s model", trainer.ErrNotBuiltin, c.info.Arch)
	}
	if m == nil {
		return fmt.Errorf("%w: Restore without a model", trainer.ErrInput)
	}
	if c.tok == nil || c.tok.Size() != m.Config.Vocab {
		return fmt.Errorf("%w: restored model's vocabulary %d does not fit the worker's tokenizer", trainer.ErrInput, m.Config.Vocab)
	}
	path := filepath.Join(c.tmp, "restore.safetensors")
	if err := policy.SaveFile(path, policy.Checkpoint{Model: m, Tokenizer: c.tok, Opt: opt}); err != nil {
		return fmt.Errorf("trainer/torch: restore: %w", err)
	}
	defer os.Remove(path)
	c.cached = nil
	_, err := c.call(ctx, "restore", map[string]any{"path": path, "opt": opt != nil})
	return err
}

func absPath(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%w: empty path", trainer.ErrInput)
	}
	return filepath.Abs(p)
}

// SaveWeights implements trainer.Trainer.
func (c *Client) SaveWeights(ctx context.Context, dir string) error {
	d, err := absPath(dir)
	if err != nil {
		return err
	}
	_, err = c.call(ctx, "save_weights", map[string]any{"dir": d})
	return err
}

// SaveMasterWeights implements trainer.MasterWeightsSaver: SaveWeights with
// the fp32 master weights kept (an HF model's SaveWeights rounds them to
// the model's dtype, bf16, for the engines).
func (c *Client) SaveMasterWeights(ctx context.Context, dir string) error {
	d, err := absPath(dir)
	if err != nil {
		return err
	}
	_, err = c.call(ctx, "save_weights", map[string]any{"dir": d, "master": true})
	return err
}

// SaveOptimizer implements trainer.Trainer.
func (c *Client) SaveOptimizer(ctx context.Context, path string) error {
	p, err := absPath(path)
	if err != nil {
		return err
	}
	_, err = c.call(ctx, "save_optimizer", map[string]any{"path": p})
	return err
}

// LoadOptimizer implements trainer.Trainer.
func (c *Client) LoadOptimizer(ctx context.Context, path string) error {
	p, err := absPath(path)
	if err != nil {
		return err
	}
	_, err = c.call(ctx, "load_optimizer", map[string]any{"path": p})
	return err
}

// Tokenize implements trainer.Trainer. The built-in model's chat template
// is task.EncodePrompt's (the separator is appended here; the worker adds
// BOS); an HF model's is its tokenizer's.
func (c *Client) Tokenize(ctx context.Context, prompts []string) ([][]int32, error) {
	return c.tokenize(ctx, nil, prompts)
}

// TokenizeChat implements trainer.ChatTokenizer: an HF model's chat
// template puts systems[i] (when not "") first as the system message; the
// built-in format has no system prompt and ignores them.
func (c *Client) TokenizeChat(ctx context.Context, systems, prompts []string) ([][]int32, error) {
	if len(systems) != len(prompts) {
		return nil, fmt.Errorf("%w: %d system prompts for %d prompts", trainer.ErrInput, len(systems), len(prompts))
	}
	return c.tokenize(ctx, systems, prompts)
}

func (c *Client) tokenize(ctx context.Context, systems, prompts []string) ([][]int32, error) {
	texts := make([]string, len(prompts))
	for i, p := range prompts {
		texts[i] = p
		if c.info.Arch == "builtin" {
			texts[i] = p + task.PromptSeparator
		}
	}
	args := map[string]any{"texts": texts}
	if systems != nil {
		args["systems"] = systems
	}
	r, err := c.call(ctx, "tokenize", args)
	if err != nil {
		return nil, err
	}
	lensB, _ := r["lens"].([]byte)
	lens := i32s(lensB)
	total := 0
	for _, n := range lens {
		total += int(n)
	}
	toksB, _ := r["tokens"].([]byte)
	toks := i32s(toksB)
	if len(lens) != len(prompts) || len(toks) != total {
		return nil, c.fail("tokenize", fmt.Errorf("%d lengths and %d tokens for %d prompts", len(lens), len(toks), len(prompts)))
	}
	out := make([][]int32, len(prompts))
	off := 0
	for i, n := range lens {
		out[i] = toks[off : off+int(n) : off+int(n)]
		off += int(n)
	}
	return out, nil
}

// Close implements trainer.Trainer: asks the worker to shut down, waits for
// it (killing it after 10 s) and removes the scratch directory.
func (c *Client) Close() error {
	c.closed.Do(func() {
		if c.conn != nil && c.broken == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c.call(ctx, "shutdown", nil)
			cancel()
		}
		if c.conn != nil {
			c.conn.Close()
		}
		if c.cmd != nil {
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				c.kill()
			}
		}
		os.RemoveAll(c.tmp)
	})
	return nil
}

func (c *Client) kill() {
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Kill()
		<-c.exited
	}
	if c.conn != nil {
		c.conn.Close()
	}
	os.RemoveAll(c.tmp)
}

// PID is the started worker's process id (0 when connected to torchrun's).
func (c *Client) PID() int {
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Ping is one empty round trip (the protocol's fixed cost).
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.call(ctx, "ping", nil)
	return err
}

// BenchStep asks the worker to time, repeats times and with no socket in
// between, what one Forward, Backward(dlogps, dents) and Step cost through
// the client; it returns the worker's seconds per repeat.
func (c *Client) BenchStep(ctx context.Context, seqs []policy.Seq, temp float32, dlogps, dents [][]float32, repeats int) ([]float64, error) {
	args := packSeqs(seqs)
	args["temp"] = float64(temp)
	args["dlogps"] = f32Bytes(dlogps)
	args["dents"] = f32Bytes(dents)
	args["repeats"] = repeats
	c.cached = nil
	r, err := c.call(ctx, "bench", args)
	if err != nil {
		return nil, err
	}
	raw, _ := r["seconds"].([]any)
	out := make([]float64, len(raw))
	for i, v := range raw {
		out[i] = asFloat(v)
	}
	return out, nil
}
