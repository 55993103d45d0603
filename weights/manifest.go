package weights

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// ManifestFile is the name of the manifest inside a version directory. It
// is written last (by rename), so a directory without it is incomplete.
const ManifestFile = "MANIFEST.json"

// ManifestSchema is the manifest format version.
const ManifestSchema = 1

// Formats of a version's files.
const (
	FormatBuiltin = "exgrpo" // the built-in checkpoint, one safetensors file (CheckpointFile)
	FormatHF      = "hf"     // an HF model directory: safetensors shards, their index, config, tokenizer
)

// CheckpointFile is the one file of a FormatBuiltin version.
const CheckpointFile = "model.safetensors"

// ErrManifest marks a malformed manifest or one that does not match the
// files; ErrIncomplete a version directory that is not (yet) complete.
var (
	ErrManifest   = errors.New("weights: bad manifest")
	ErrIncomplete = errors.New("weights: incomplete version")
)

// File is one file of a version.
type File struct {
	Name   string `json:"name"`   // slash-separated path inside the version directory
	Size   int64  `json:"size"`   // bytes
	SHA256 string `json:"sha256"` // hex digest of the whole file
}

// Manifest names a version's files. It is what a reader checks a version
// against, whichever way the files came.
type Manifest struct {
	Schema  int               `json:"schema"`
	Version int64             `json:"version"`
	Format  string            `json:"format"`
	Files   []File            `json:"files"` // sorted by Name
	Meta    map[string]string `json:"meta,omitempty"`
}

// Bytes is the total size of the files.
func (m Manifest) Bytes() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// File returns the entry called name.
func (m Manifest) File(name string) (File, bool) {
	i := sort.Search(len(m.Files), func(i int) bool { return m.Files[i].Name >= name })
	if i < len(m.Files) && m.Files[i].Name == name {
		return m.Files[i], true
	}
	return File{}, false
}

// ValidName reports whether name is a safe relative file name inside a
// version directory: slash-separated, clean, not absolute, no "..", not the
// manifest itself.
func ValidName(name string) bool {
	if name == "" || name == ManifestFile || strings.HasPrefix(name, "/") || strings.ContainsAny(name, "\\\x00") ||
		path.Clean(name) != name || name == "." || name == ".." || strings.HasPrefix(name, "../") {
		return false
	}
	return true
}

// Validate checks the manifest's own consistency.
func (m Manifest) Validate() error {
	if m.Schema != ManifestSchema {
		return fmt.Errorf("%w: schema %d, this build reads %d", ErrManifest, m.Schema, ManifestSchema)
	}
	if m.Version < 0 {
		return fmt.Errorf("%w: version %d", ErrManifest, m.Version)
	}
	if m.Format != FormatBuiltin && m.Format != FormatHF {
		return fmt.Errorf("%w: format %q", ErrManifest, m.Format)
	}
	if len(m.Files) == 0 {
		return fmt.Errorf("%w: no files", ErrManifest)
	}
	for i, f := range m.Files {
		if !ValidName(f.Name) {
			return fmt.Errorf("%w: file name %q", ErrManifest, f.Name)
		}
		if i > 0 && m.Files[i-1].Name >= f.Name {
			return fmt.Errorf("%w: files not sorted or repeated at %q", ErrManifest, f.Name)
		}
		if f.Size < 0 || len(f.SHA256) != 64 {
			return fmt.Errorf("%w: file %q: size %d, sha256 %q", ErrManifest, f.Name, f.Size, f.SHA256)
		}
		if _, err := hex.DecodeString(f.SHA256); err != nil {
			return fmt.Errorf("%w: file %q: sha256 %q", ErrManifest, f.Name, f.SHA256)
		}
	}
	if m.Format == FormatBuiltin {
		if _, ok := m.File(CheckpointFile); !ok || len(m.Files) != 1 {
			return fmt.Errorf("%w: a %s version is the one file %s", ErrManifest, FormatBuiltin, CheckpointFile)
		}
	}
	return nil
}

// Encode returns the manifest as JSON.
func (m Manifest) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, fmt.Errorf("weights: encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// DecodeManifest parses and validates a manifest.
func DecodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > 16<<20 {
		return m, fmt.Errorf("%w: %d bytes", ErrManifest, len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	return m, m.Validate()
}

// BuildManifest lists the regular files under dir (recursively, the
// manifest excluded) with their sizes and digests.
func BuildManifest(dir string, version int64, format string, meta map[string]string) (Manifest, error) {
	m := Manifest{Schema: ManifestSchema, Version: version, Format: format, Meta: meta}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == ManifestFile {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%w: %s is not a regular file", ErrManifest, rel)
		}
		size, sum, err := HashFile(p)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, File{Name: rel, Size: size, SHA256: sum})
		return nil
	})
	if err != nil {
		return m, fmt.Errorf("weights: manifest of %s: %w", dir, err)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Name < m.Files[j].Name })
	return m, m.Validate()
}

// HashFile returns a file's size and hex SHA-256.
func HashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("weights: hash %s: %w", p, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// WriteManifest writes m into dir as ManifestFile, atomically (a temporary
// file renamed), which marks dir complete.
func WriteManifest(dir string, m Manifest) error {
	b, err := m.Encode()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".manifest-*")
	if err != nil {
		return fmt.Errorf("weights: write manifest: %w", err)
	}
	_, werr := tmp.Write(b)
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("weights: write manifest: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, ManifestFile)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("weights: write manifest: %w", err)
	}
	return nil
}

// Check says how thoroughly OpenVersion checks the files against the
// manifest.
type Check int

const (
	CheckSizes   Check = iota // every file present with its size
	CheckDigests              // and its SHA-256 (reads every byte)
)

// OpenVersion reads dir's manifest and checks the files against it. A
// directory without a manifest, or whose files are missing or differ, is
// ErrIncomplete (wrapping fs.ErrNotExist when something vanished, so a
// caller can tell a pruned version from a damaged one).
func OpenVersion(dir string, check Check) (Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: %s: %w", ErrIncomplete, dir, err)
	}
	m, err := DecodeManifest(b)
	if err != nil {
		return m, fmt.Errorf("%s: %w", dir, err)
	}
	for _, f := range m.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Name))
		if check == CheckDigests {
			size, sum, err := HashFile(p)
			if err != nil {
				return m, fmt.Errorf("%w: v%d: %w", ErrIncomplete, m.Version, err)
			}
			if size != f.Size || sum != f.SHA256 {
				return m, fmt.Errorf("%w: v%d: %s has %d bytes sha256 %s, the manifest says %d bytes %s", ErrDigest, m.Version, f.Name, size, sum, f.Size, f.SHA256)
			}
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return m, fmt.Errorf("%w: v%d: %w", ErrIncomplete, m.Version, err)
		}
		if st.Size() != f.Size {
			return m, fmt.Errorf("%w: v%d: %s has %d bytes, the manifest says %d", ErrIncomplete, m.Version, f.Name, st.Size(), f.Size)
		}
	}
	return m, nil
}

// VersionDir is the directory name of version v: "v<v>".
func VersionDir(v int64) string { return fmt.Sprintf("v%d", v) }

// Stage makes a hidden staging directory under root for version v; write
// its files there, then Commit it.
func Stage(root string, v int64) (string, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("weights: stage v%d: %w", v, err)
	}
	d, err := os.MkdirTemp(root, "."+VersionDir(v)+".partial-")
	if err != nil {
		return "", fmt.Errorf("weights: stage v%d: %w", v, err)
	}
	return d, nil
}

// Commit builds the manifest of a staged directory, writes it last, and
// renames the directory to root/v<v>; readers see either no v<v> or a
// complete one. A v<v> already there (a version published again after a
// restart) is replaced.
func Commit(root, staged string, v int64, format string, meta map[string]string) (string, Manifest, error) {
	m, err := BuildManifest(staged, v, format, meta)
	if err != nil {
		return "", m, err
	}
	return CommitManifest(root, staged, m)
}

// CommitManifest is Commit with a manifest the caller already checked the
// files against (a reader that verified each digest as it wrote the file):
// only the sizes are checked again, nothing is hashed twice.
func CommitManifest(root, staged string, m Manifest) (string, Manifest, error) {
	v := m.Version
	if err := m.Validate(); err != nil {
		return "", m, err
	}
	for _, f := range m.Files {
		st, err := os.Stat(filepath.Join(staged, filepath.FromSlash(f.Name)))
		if err != nil || st.Size() != f.Size {
			return "", m, fmt.Errorf("%w: v%d: staged %s: %v", ErrIncomplete, v, f.Name, err)
		}
	}
	if err := WriteManifest(staged, m); err != nil {
		return "", m, err
	}
	final := filepath.Join(root, VersionDir(v))
	if err := os.Rename(staged, final); err != nil {
		if _, serr := os.Stat(final); serr != nil {
			return "", m, fmt.Errorf("weights: commit v%d: %w", v, err)
		}
		old := final + ".replaced"
		_ = os.RemoveAll(old)
		if err := os.Rename(final, old); err != nil {
			return "", m, fmt.Errorf("weights: commit v%d: move the old one aside: %w", v, err)
		}
		if err := os.Rename(staged, final); err != nil {
			return "", m, fmt.Errorf("weights: commit v%d: %w", v, err)
		}
		_ = os.RemoveAll(old)
	}
	return final, m, nil
}
