// Package weights holds what a policy version is, independent of how it
// travels: a set of files (HF safetensors shards with their index, config
// and tokenizer files; or the built-in checkpoint as one file) named by a
// Manifest with per-file sizes and SHA-256 digests; a reader of safetensors
// headers; and the delta encoding of one version's file against the
// previous version's (per tensor of 2- or 4-byte elements: the positions
// of the changed elements and their integer differences, entropy-coded
// with huff0; other bytes as XOR planes through zstd), whose
// reconstruction is checked against the target file's digest. Directory helpers write a
// version so that a reader never sees it incomplete: files first, the
// manifest last by atomic rename, the directory renamed into place.
//
// The package is pure: no NATS, no clock, no goroutines except the bounded
// worker pool of the codec, which returns before the call does.
// weights/transfer moves versions over a shared filesystem or the Object
// Store.
package weights
