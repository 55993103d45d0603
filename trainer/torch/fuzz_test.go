package torch

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// FuzzReplyDecode: any reply bytes decode to a map or an error, and the
// per-token unpacking of a decoded reply never panics (wrong lengths are
// errors).
func FuzzReplyDecode(f *testing.F) {
	good, _ := msgpack.Marshal(map[string]any{"ok": true, "logps": f32Bytes([][]float32{{-1, -2}}), "ents": f32Bytes([][]float32{{0.5, 0.25}})})
	f.Add(good)
	f.Add([]byte{0x80})
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var reply map[string]any
		if err := msgpack.Unmarshal(b, &reply); err != nil {
			return
		}
		lp, en, err := unpackRows(reply, []int{1, 1})
		if err == nil && (len(lp) != 2 || len(en) != 2 || len(lp[0]) != 1 || len(en[1]) != 1) {
			t.Fatalf("decoded %v %v without error", lp, en)
		}
		_ = asInt(reply["version"])
		_ = asFloat(reply["grad_norm"])
		_ = asString(reply["error"])
	})
}
