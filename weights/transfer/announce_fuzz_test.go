package transfer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/exgrpo/exgrpo/weights"
)

// FuzzAnnouncement: whatever a KV entry holds, decoding and validating it
// neither panics nor accepts an announcement a fetcher could not follow
// safely (unsafe file names, objects out of step with the manifest).
func FuzzAnnouncement(f *testing.F) {
	good := Announcement{Schema: AnnouncementSchema, Version: 2, Transport: TransportObjects, Base: 1, Full: 0,
		Manifest: weights.Manifest{Schema: weights.ManifestSchema, Version: 2, Format: weights.FormatBuiltin,
			Files: []weights.File{{Name: weights.CheckpointFile, Size: 3, SHA256: strings.Repeat("a", 64)}}},
		Objects: []Object{{File: weights.CheckpointFile, Kind: KindDelta, Name: "v2/model.safetensors.delta", Bytes: 1}}}
	b, _ := json.Marshal(good)
	f.Add(b)
	f.Add([]byte(`{"schema":1,"version":1,"transport":"fs","path":"/x","manifest":{"schema":1,"version":1,"format":"hf","files":[{"name":"../etc","size":1,"sha256":"` + strings.Repeat("b", 64) + `"}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a Announcement
		if json.Unmarshal(b, &a) != nil || a.Validate() != nil {
			return
		}
		for _, fl := range a.Manifest.Files {
			if !weights.ValidName(fl.Name) {
				t.Fatalf("accepted file name %q", fl.Name)
			}
		}
		if a.Transport == TransportObjects {
			for i, o := range a.Objects {
				if o.File != a.Manifest.Files[i].Name || (o.Kind != KindSame && o.Name == "") {
					t.Fatalf("accepted object %+v for file %q", o, a.Manifest.Files[i].Name)
				}
			}
		}
	})
}
