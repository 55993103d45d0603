package service

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/bus/bustest"
	"github.com/exgrpo/exgrpo/policy"
	"github.com/exgrpo/exgrpo/task"
	"github.com/exgrpo/exgrpo/trainer"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"go.uber.org/zap"
)

// otherArch is a trainer that presents itself as an HF model: it has no
// built-in weights to hand out (Weights is ErrNotBuiltin) and saves an HF
// directory (config.json beside the safetensors weights). The maths is the
// built-in trainer's, so its scores can be checked.
type otherArch struct{ *trainer.Builtin }

func (o otherArch) Info() trainer.Info {
	in := o.Builtin.Info()
	in.Arch = "hf"
	return in
}

func (o otherArch) Weights(context.Context) (*policy.Model, error) {
	return nil, fmt.Errorf("%w: an hf model", trainer.ErrNotBuiltin)
}

func (o otherArch) SaveWeights(ctx context.Context, dir string) error {
	if err := o.Builtin.SaveWeights(ctx, dir); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"model_type":"test"}`), 0o644)
}

// TestVersionPublisherAnyTrainer: VersionPublisher publishes what the
// trainer's SaveWeights writes, with the format of its architecture in the
// manifest, and the version's probe first: for the built-in architecture
// the probe Probe makes of the trainer's weights (what the blob path
// publishes); for another the trainer's own scores of ids its tokenizer
// made.
func TestVersionPublisherAnyTrainer(t *testing.T) {
	tok := task.BuiltinTokenizer()
	cfg := task.ModelConfig()
	cfg.Layers, cfg.Width, cfg.Heads = 1, 16, 2
	for _, arch := range []string{"builtin", "hf"} {
		t.Run(arch, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b := bustest.Open(t, bustest.Server(t), bus.DefaultConfig("vp"))
			m, err := policy.New(cfg, rand.New(rand.NewPCG(9, 9)))
			if err != nil {
				t.Fatal(err)
			}
			bt, err := trainer.NewBuiltin(m.Clone(), tok, policy.DefaultAdamW(), trainer.BuiltinOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var tr trainer.Trainer = bt
			format := weights.FormatBuiltin
			if arch == "hf" {
				tr, format = otherArch{bt}, weights.FormatHF
			}
			root := t.TempDir()
			p, err := transfer.NewPublisher(b, transfer.DefaultConfig(transfer.TransportFS, root), zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			if err := VersionPublisher(b, p, tok)(ctx, 4, tr); err != nil {
				t.Fatal(err)
			}
			a, err := transfer.Lookup(ctx, b, 4)
			if err != nil {
				t.Fatal(err)
			}
			if a.Manifest.Format != format || a.Path != filepath.Join(root, "v4") {
				t.Fatalf("announced %q at %s, want %q at %s", a.Manifest.Format, a.Path, format, filepath.Join(root, "v4"))
			}
			ck, err := policy.LoadFile(filepath.Join(a.Path, weights.CheckpointFile))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ck.Model.Params, m.Params) || ck.Tokenizer == nil {
				t.Fatal("the version's checkpoint is not the trainer's weights with its tokenizer")
			}
			probe, err := b.FetchProbe(ctx, 4)
			if err != nil {
				t.Fatal(err)
			}
			if arch == "builtin" {
				want, err := Probe(4, m, tok)
				if err != nil {
					t.Fatal(err)
				}
				want.V, want.RunID = probe.V, probe.RunID // set by PublishProbe
				if !reflect.DeepEqual(*probe, want) {
					t.Fatal("the built-in trainer's probe differs from Probe of its weights")
				}
				return
			}
			if probe.Version != 4 || probe.Temp != 1 || len(probe.Seqs) != len(probeProblems) {
				t.Fatalf("probe v%d T=%v with %d sequences", probe.Version, probe.Temp, len(probe.Seqs))
			}
			for i, sq := range probe.Seqs {
				if sq.PromptLen < 1 || sq.PromptLen >= len(sq.Tokens) {
					t.Fatalf("probe %d: prompt %d of %d tokens", i, sq.PromptLen, len(sq.Tokens))
				}
				want, _, err := m.Score([]policy.Seq{{Tokens: sq.Tokens, PromptLen: sq.PromptLen}})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(want[0], []float32(sq.LogProbs)) {
					t.Fatalf("probe %d: log-probs are not the model's", i)
				}
			}
		})
	}
}

// TestFormatOfArchitecture: the manifest format follows the trainer's
// architecture; an unknown one is refused.
func TestFormatOfArchitecture(t *testing.T) {
	for arch, want := range map[string]string{"builtin": weights.FormatBuiltin, "hf": weights.FormatHF} {
		if got, err := Format(trainer.Info{Arch: arch}); err != nil || got != want {
			t.Errorf("Format(%s) = %q, %v; want %q", arch, got, err, want)
		}
	}
	if _, err := Format(trainer.Info{Arch: "gguf"}); err == nil {
		t.Error("an unknown architecture was given a format")
	}
}
