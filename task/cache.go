package task

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/exgrpo/exgrpo/policy"
)

// pretrainFormat versions what a cached base model depends on besides its
// config: the generator, the solution format and the training loop. Bump it
// when any of them changes so stale caches are not reused.
const pretrainFormat = "task-pretrain-1"

// Checkpoint metadata keys written by BaseModel and SaveBase.
const (
	MetaPretrain     = "task.pretrain"      // PretrainConfig as JSON (defaults applied)
	MetaPretrainKey  = "task.pretrain.key"  // PretrainKey of that config
	MetaPretrainLoss = "task.pretrain.loss" // final smoothed loss
)

// PretrainKey is a short stable hash of everything a warm-up's result
// depends on: the config (defaults applied), the alphabet and the format
// version. BaseModel names its cache file after it.
func PretrainKey(cfg PretrainConfig) string {
	cfg = cfg.withDefaults()
	b, err := json.Marshal(cfg)
	if err != nil {
		panic("task: PretrainConfig must marshal: " + err.Error()) // plain data; cannot fail
	}
	h := sha256.New()
	h.Write([]byte(pretrainFormat + "\x00" + Alphabet + "\x00"))
	h.Write(b)
	h.Write(generatorFingerprint(cfg))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// generatorFingerprint is a sample of what the warm-up trains on: the first
// problems the generator draws for cfg's distribution and seed, prompts and
// worked solutions. A change to the generator or the solution format changes
// it, so a stale cached base model is never reused even when nobody bumps
// pretrainFormat.
func generatorFingerprint(cfg PretrainConfig) []byte {
	ds, err := Generate("fingerprint", cfg.Data, 64, cfg.Seed)
	if err != nil {
		return []byte("generate: " + err.Error())
	}
	var b []byte
	for _, p := range ds.Problems {
		b = append(b, p.Prompt...)
		b = append(b, 0)
		b = append(b, p.Solution...)
		b = append(b, 0)
	}
	return b
}

// BasePath is where BaseModel caches the base model of cfg in cacheDir.
func BasePath(cacheDir string, cfg PretrainConfig) string {
	return filepath.Join(cacheDir, "base-"+PretrainKey(cfg)+".safetensors")
}

// BaseModel returns the warm-up model of cfg: loaded from
// BasePath(cacheDir, cfg) when that file exists and matches, else pretrained
// (progress as in Pretrain) and saved there atomically. cached says which.
// The file embeds the config under MetaPretrain, so a mismatching file (a
// hash collision or a hand-copied file) is retrained over, not trusted.
func BaseModel(ctx context.Context, cacheDir string, cfg PretrainConfig, progress func(PretrainProgress)) (ck policy.Checkpoint, cached bool, err error) {
	if err := cfg.Validate(); err != nil {
		return policy.Checkpoint{}, false, err
	}
	path := BasePath(cacheDir, cfg)
	// A missing, unreadable or mismatching file is retrained and overwritten.
	if ck, err := policy.LoadFile(path); err == nil && ck.Meta[MetaPretrainKey] == PretrainKey(cfg) && ck.Tokenizer.Alphabet() == BuiltinTokenizer().Alphabet() {
		return ck, true, nil
	}
	m, res, err := Pretrain(ctx, cfg, progress)
	if err != nil {
		return policy.Checkpoint{}, false, err
	}
	ck = BaseCheckpoint(m, cfg, res)
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return ck, false, fmt.Errorf("%w: cache dir: %w", ErrPretrain, err)
	}
	if err := policy.SaveFile(path, ck); err != nil {
		return ck, false, fmt.Errorf("%w: save base model: %w", ErrPretrain, err)
	}
	return ck, false, nil
}

// BaseCheckpoint packs a warm-up result as a checkpoint (no optimiser
// state: RL starts its own) with the config and loss in its metadata.
func BaseCheckpoint(m *policy.Model, cfg PretrainConfig, res PretrainResult) policy.Checkpoint {
	cfg = cfg.withDefaults()
	b, _ := json.Marshal(cfg)
	return policy.Checkpoint{
		Model:     m,
		Tokenizer: BuiltinTokenizer(),
		Meta: map[string]string{
			MetaPretrain:     string(b),
			MetaPretrainKey:  PretrainKey(cfg),
			MetaPretrainLoss: strconv.FormatFloat(res.FinalLoss, 'g', 6, 64),
		},
	}
}
