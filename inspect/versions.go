package inspect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/exgrpo/exgrpo/bus"
	"github.com/exgrpo/exgrpo/weights/transfer"
	"github.com/nats-io/nats.go/jetstream"
)

// VersionsView is `inspect versions`: the policy versions the learner
// published and how each is stored, and the actors' leases.
type VersionsView struct {
	Run      string           `json:"run"`
	UnixMs   int64            `json:"unix_ms"`
	Latest   int64            `json:"latest"` // the policy version key; -1 when none
	Versions []VersionRow     `json:"versions"`
	Leases   []transfer.Lease `json:"leases"`
}

// VersionRow is one version.
type VersionRow struct {
	Version   int64  `json:"version"`
	Transport string `json:"transport"` // fs, objects, or "object" for a built-in single-object version
	Kind      string `json:"kind"`      // full, delta (objects), or "-"
	Base      int64  `json:"base"`      // objects: what the deltas are against, -1 when full
	Full      int64  `json:"full"`      // objects: the chain's full version
	Format    string `json:"format,omitempty"`
	Files     int    `json:"files"`
	Bytes     int64  `json:"bytes"`  // the version's files
	Stored    int64  `json:"stored"` // what it added to the store
	Path      string `json:"path,omitempty"`
	UnixMs    int64  `json:"unix_ms"`
}

// Versions reads the announcements, the leases and the single-object
// versions of the Object Store.
func (s *Source) Versions(ctx context.Context) (VersionsView, error) {
	v := VersionsView{Run: s.Names.Run, UnixMs: time.Now().UnixMilli(), Latest: -1, Versions: []VersionRow{}, Leases: []transfer.Lease{}}
	kv, err := s.JS.KeyValue(ctx, s.Names.StateBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return v, nil
	}
	if err != nil {
		return v, fmt.Errorf("inspect: kv %s: %w", s.Names.StateBucket(), err)
	}
	if e, err := kv.Get(ctx, bus.VersionKey); err == nil {
		v.Latest, _ = strconv.ParseInt(string(e.Value()), 10, 64)
	}
	anns, leases, err := transfer.ListKV(ctx, kv, 30*time.Second)
	if err != nil {
		return v, fmt.Errorf("inspect: %w", err)
	}
	v.Leases = append(v.Leases, leases...)
	seen := map[int64]bool{}
	for _, a := range anns {
		r := VersionRow{Version: a.Version, Transport: a.Transport, Kind: "-", Base: a.Base, Full: a.Full, Format: a.Manifest.Format,
			Files: len(a.Manifest.Files), Bytes: a.Manifest.Bytes(), Stored: a.Stored(), Path: a.Path, UnixMs: a.UnixMs}
		if a.Transport == transfer.TransportObjects {
			r.Kind = "full"
			if a.Base >= 0 {
				r.Kind = "delta"
			}
		} else {
			r.Base, r.Full = -1, -1
		}
		seen[a.Version] = true
		v.Versions = append(v.Versions, r)
	}
	if obs, err := s.JS.ObjectStore(ctx, s.Names.WeightsBucket()); err == nil {
		list, err := obs.List(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
			return v, fmt.Errorf("inspect: list weights: %w", err)
		}
		for _, info := range list {
			n, err := strconv.ParseInt(strings.TrimPrefix(info.Name, "v"), 10, 64)
			if err != nil || !strings.HasPrefix(info.Name, "v") || seen[n] {
				continue // a file of an announced version, or not a version
			}
			v.Versions = append(v.Versions, VersionRow{Version: n, Transport: "object", Kind: "-", Base: -1, Full: -1, Format: "exgrpo",
				Files: 1, Bytes: int64(info.Size), Stored: int64(info.Size), UnixMs: info.ModTime.UnixMilli()})
		}
	}
	sort.Slice(v.Versions, func(i, j int) bool { return v.Versions[i].Version < v.Versions[j].Version })
	sort.Slice(v.Leases, func(i, j int) bool { return v.Leases[i].Actor < v.Leases[j].Actor })
	return v, nil
}

func (v VersionsView) table(w io.Writer) error {
	now := time.UnixMilli(v.UnixMs)
	latest := "none"
	if v.Latest >= 0 {
		latest = fmt.Sprint(v.Latest)
	}
	fmt.Fprintf(w, "run %s, policy version %s, %d versions stored\n\n", v.Run, latest, len(v.Versions))
	t := table(w)
	fmt.Fprintln(t, "version\ttransport\tkind\tbase\tfull\tformat\tfiles\tbytes\tstored\tratio\tage\tpath")
	for _, r := range v.Versions {
		ratio, base, full := "-", "-", "-"
		if r.Stored > 0 {
			ratio = fmt.Sprintf("%.1fx", float64(r.Bytes)/float64(r.Stored))
		}
		if r.Base >= 0 {
			base = fmt.Sprint(r.Base)
		}
		if r.Full >= 0 {
			full = fmt.Sprint(r.Full)
		}
		fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Version, r.Transport, r.Kind, base, full, r.Format, r.Files,
			bytesIEC(uint64(r.Bytes)), bytesIEC(uint64(r.Stored)), ratio, age(now, r.UnixMs), r.Path)
	}
	t.Flush()
	if len(v.Leases) == 0 {
		fmt.Fprintln(w, "\nleases: none")
		return nil
	}
	fmt.Fprintln(w, "\nleases (shared-filesystem versions actors are reading):")
	t = table(w)
	fmt.Fprintln(t, "actor\tversion\trenewed")
	for _, l := range v.Leases {
		fmt.Fprintf(t, "%s\t%d\t%s\n", l.Actor, l.Version, age(now, l.UnixMs))
	}
	return t.Flush()
}
