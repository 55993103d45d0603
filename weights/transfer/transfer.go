// Package transfer moves policy versions (weights.Manifest file sets) from
// the learner to the actors over one of two transports, chosen by
// configuration:
//
//   - TransportFS, a shared filesystem: the learner writes DIR/v<N>/ (files
//     first, the manifest last, the directory renamed into place), then
//     announces the path; actors load from the path. A version is pruned
//     only when no actor holds a live lease on it (actors lease a version in
//     KV while they read it; a lease not renewed for LeaseTTL lapses, which
//     is the grace period for an actor that died mid-read).
//   - TransportObjects, the JetStream Object Store: the learner stores each
//     file in full every FullEvery versions and otherwise as a per-tensor
//     delta against the previous version (weights.EncodeDelta); actors
//     rebuild the files in a local directory, from their own copy of an
//     earlier version when they have one in the chain, else from the chain's
//     full version, and check every file against the manifest's digest. A
//     reconstruction that fails its digest is retried from the full version.
//
// Either way a version is announced in the run's KV bucket as an
// Announcement under "weights.v<N>" before the policy version key
// (bus.VersionKey) moves, so a watcher of that key always finds the
// announcement complete. Versions without an announcement are the built-in
// single-object versions of bus.PublishWeights; ErrNotAnnounced says so.
package transfer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/weights"
	"github.com/nats-io/nats.go/jetstream"
)

// Transports.
const (
	TransportFS      = "fs"
	TransportObjects = "objects"
)

// Errors; test with errors.Is.
var (
	ErrConfig = errors.New("transfer: bad configuration")
	// ErrNotAnnounced: no announcement for the version (a built-in
	// single-object version, or one pruned meanwhile).
	ErrNotAnnounced = errors.New("transfer: version not announced")
	// ErrVersionGone: the version's files vanished while being read
	// (pruned); read the latest version instead.
	ErrVersionGone = errors.New("transfer: version directory disappeared")
)

// AnnouncementSchema is the Announcement format version.
const AnnouncementSchema = 1

// Object kinds: how one file of a version is stored in the Object Store.
const (
	KindFull  = "full"  // the file itself
	KindDelta = "delta" // weights.EncodeDelta against the same file of version Base
	KindSame  = "same"  // identical to the same file of version Base: nothing stored
)

// Object is one file of an Object Store version.
type Object struct {
	File  string `json:"file"`            // the manifest's file name
	Kind  string `json:"kind"`            // KindFull, KindDelta or KindSame
	Name  string `json:"name,omitempty"`  // object name (empty for KindSame)
	Bytes int64  `json:"bytes,omitempty"` // stored bytes
}

// Announcement says where version N is and how it is stored.
type Announcement struct {
	Schema    int              `json:"schema"`
	Version   int64            `json:"version"`
	Transport string           `json:"transport"`
	Manifest  weights.Manifest `json:"manifest"`
	UnixMs    int64            `json:"unix_ms"`
	// TransportFS
	Path       string `json:"path,omitempty"`         // the version's directory
	LeaseTTLms int64  `json:"lease_ttl_ms,omitempty"` // how long an actor's lease lasts unrenewed
	// TransportObjects
	Base    int64    `json:"base"`              // the version deltas are against; -1 when full
	Full    int64    `json:"full"`              // the full version this one's delta chain starts from
	Objects []Object `json:"objects,omitempty"` // one per manifest file, same order
}

// Stored is the number of bytes the version added to the store (its
// objects; for TransportFS its files).
func (a Announcement) Stored() int64 {
	if a.Transport == TransportFS {
		return a.Manifest.Bytes()
	}
	var n int64
	for _, o := range a.Objects {
		n += o.Bytes
	}
	return n
}

// Validate checks an announcement read from the network.
func (a Announcement) Validate() error {
	if a.Schema != AnnouncementSchema {
		return fmt.Errorf("transfer: announcement schema %d, this build reads %d", a.Schema, AnnouncementSchema)
	}
	if err := a.Manifest.Validate(); err != nil {
		return fmt.Errorf("transfer: announcement of v%d: %w", a.Version, err)
	}
	if a.Manifest.Version != a.Version {
		return fmt.Errorf("transfer: announcement of v%d carries the manifest of v%d", a.Version, a.Manifest.Version)
	}
	switch a.Transport {
	case TransportFS:
		if a.Path == "" {
			return fmt.Errorf("transfer: fs announcement of v%d without a path", a.Version)
		}
	case TransportObjects:
		if len(a.Objects) != len(a.Manifest.Files) || a.Full > a.Version || a.Base >= a.Version || (a.Base < 0) != (a.Full == a.Version) {
			return fmt.Errorf("transfer: objects announcement of v%d: %d objects for %d files, base %d, full %d", a.Version,
				len(a.Objects), len(a.Manifest.Files), a.Base, a.Full)
		}
		for i, o := range a.Objects {
			if o.File != a.Manifest.Files[i].Name {
				return fmt.Errorf("transfer: v%d: object %d is for %q, the manifest's file %d is %q", a.Version, i, o.File, i, a.Manifest.Files[i].Name)
			}
			switch o.Kind {
			case KindFull:
			case KindDelta, KindSame:
				if a.Base < 0 {
					return fmt.Errorf("transfer: v%d is full but stores %s as %s", a.Version, o.File, o.Kind)
				}
			default:
				return fmt.Errorf("transfer: v%d: %s stored as %q", a.Version, o.File, o.Kind)
			}
			if (o.Kind == KindSame) != (o.Name == "") {
				return fmt.Errorf("transfer: v%d: %s (%s) with object name %q", a.Version, o.File, o.Kind, o.Name)
			}
		}
	default:
		return fmt.Errorf("transfer: v%d: transport %q", a.Version, a.Transport)
	}
	return nil
}

// AnnouncementKey is the KV key of version v's announcement.
func AnnouncementKey(v int64) string { return "weights.v" + strconv.FormatInt(v, 10) }

// leasePrefix starts every lease key: weights.lease.<actor>.
const leasePrefix = "weights.lease."

// Lease is an actor's claim on a TransportFS version while it reads it.
type Lease struct {
	Actor   string `json:"actor"`
	Version int64  `json:"version"`
	UnixMs  int64  `json:"unix_ms"` // last renewal
}

// leaseKey makes a KV-safe key of an actor id.
func leaseKey(actor string) string {
	var b strings.Builder
	for _, r := range actor {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return leasePrefix + b.String()
}

// Lookup reads version v's announcement; ErrNotAnnounced when there is none.
func Lookup(ctx context.Context, b *bus.Bus, v int64) (Announcement, error) {
	return LookupKV(ctx, b.State, b.Config.OpTimeout, v)
}

// LookupKV is Lookup on the run's KV bucket, each read bounded by timeout.
func LookupKV(ctx context.Context, kv jetstream.KeyValue, timeout time.Duration, v int64) (Announcement, error) {
	var a Announcement
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	e, err := kv.Get(octx, AnnouncementKey(v))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return a, fmt.Errorf("%w: v%d", ErrNotAnnounced, v)
	}
	if err != nil {
		return a, fmt.Errorf("transfer: read announcement of v%d: %w", v, err)
	}
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return a, fmt.Errorf("transfer: announcement of v%d: %w", v, err)
	}
	if err := a.Validate(); err != nil {
		return a, err
	}
	if a.Version != v {
		return a, fmt.Errorf("transfer: key of v%d holds the announcement of v%d", v, a.Version)
	}
	return a, nil
}

// List returns every announced version and every lease, for inspection
// and pruning; versions in increasing order.
func List(ctx context.Context, b *bus.Bus) ([]Announcement, []Lease, error) {
	return ListKV(ctx, b.State, b.Config.OpTimeout)
}

// ListKV is List on the run's KV bucket, bounded by timeout.
func ListKV(ctx context.Context, kv jetstream.KeyValue, timeout time.Duration) ([]Announcement, []Lease, error) {
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lister, err := kv.ListKeys(octx)
	if err != nil {
		return nil, nil, fmt.Errorf("transfer: list keys: %w", err)
	}
	var vs []int64
	var leases []Lease
	for k := range lister.Keys() {
		switch {
		case strings.HasPrefix(k, leasePrefix):
			e, err := kv.Get(octx, k)
			if err != nil {
				continue
			}
			var l Lease
			if json.Unmarshal(e.Value(), &l) == nil {
				leases = append(leases, l)
			}
		case strings.HasPrefix(k, "weights.v"):
			if v, err := strconv.ParseInt(strings.TrimPrefix(k, "weights.v"), 10, 64); err == nil {
				vs = append(vs, v)
			}
		}
	}
	if err := octx.Err(); err != nil {
		return nil, nil, fmt.Errorf("transfer: list keys: %w", err)
	}
	slices.Sort(vs)
	anns := make([]Announcement, 0, len(vs))
	for _, v := range vs {
		a, err := LookupKV(ctx, kv, timeout, v)
		if errors.Is(err, ErrNotAnnounced) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		anns = append(anns, a)
	}
	return anns, leases, nil
}

// transferDeadline sizes a deadline to an object: 15s plus 1s per 8 MiB (a
// floor of 8 MiB/s); a Get whose context has no deadline is cut at the
// client's 5s default (ARCHITECTURE.md pitfalls). The same rule as
// bus.FetchWeights.
func transferDeadline(size int64) time.Duration {
	return 15*time.Second + time.Duration(size/(8<<20))*time.Second
}
