package bench

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// CPU by pprof label. The data-plane benchmark runs every role in one
// process, so process CPU time cannot tell the roles apart; a CPU profile
// can: each role runs under pprof.Do with the label role=<name>, which the
// goroutines it starts (its NATS connection's reader and flusher, its
// publisher, its consumers' dispatchers) inherit. Samples without the label
// are the embedded server's (its connection handlers, stores, consumers) and
// the runtime's (garbage collection, scheduler).

// labelCPU sums the CPU time (nanoseconds) of the samples of a gzipped CPU
// profile (runtime/pprof's output) by the value of the label key; samples
// without it count under "". It reads the profile.proto fields it needs:
// Profile.sample (2), Profile.string_table (6), Sample.value (2),
// Sample.label (3), Label.key (1), Label.str (2). The CPU value is the last
// of each sample's values (samples/count, cpu/nanoseconds).
func labelCPU(gz []byte, key string) (map[string]int64, int, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, 0, fmt.Errorf("cpu profile: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, 0, fmt.Errorf("cpu profile: %w", err)
	}
	type sample struct {
		ns     int64
		labels [][2]int64 // key, str (string table indices)
	}
	var samples []sample
	var strs []string
	err = protoFields(raw, func(field int, wt int, v uint64, b []byte) error {
		switch {
		case field == 2 && wt == 2:
			var s sample
			var vals []int64
			err := protoFields(b, func(f, wt int, v uint64, b []byte) error {
				switch {
				case f == 2 && wt == 0:
					vals = append(vals, int64(v))
				case f == 2 && wt == 2:
					for len(b) > 0 {
						x, n := binary.Uvarint(b)
						if n <= 0 {
							return errors.New("bad packed value")
						}
						vals = append(vals, int64(x))
						b = b[n:]
					}
				case f == 3 && wt == 2:
					var kv [2]int64
					if err := protoFields(b, func(f, wt int, v uint64, _ []byte) error {
						if wt == 0 && (f == 1 || f == 2) {
							kv[f-1] = int64(v)
						}
						return nil
					}); err != nil {
						return err
					}
					s.labels = append(s.labels, kv)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(vals) > 0 {
				s.ns = vals[len(vals)-1]
			}
			samples = append(samples, s)
		case field == 6 && wt == 2:
			strs = append(strs, string(b))
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("cpu profile: %w", err)
	}
	out := map[string]int64{}
	for _, s := range samples {
		val := ""
		for _, kv := range s.labels {
			if kv[0] >= 0 && int(kv[0]) < len(strs) && strs[kv[0]] == key && kv[1] >= 0 && int(kv[1]) < len(strs) {
				val = strs[kv[1]]
			}
		}
		out[val] += s.ns
	}
	return out, len(samples), nil
}

// protoFields calls fn for each field of a protobuf message: its number,
// wire type, the value of a varint (or fixed) field, the bytes of a
// length-delimited one.
func protoFields(b []byte, fn func(field, wt int, v uint64, b []byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("bad tag")
		}
		b = b[n:]
		field, wt := int(tag>>3), int(tag&7)
		switch wt {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return errors.New("bad varint")
			}
			b = b[n:]
			if err := fn(field, wt, v, nil); err != nil {
				return err
			}
		case 1:
			if len(b) < 8 {
				return errors.New("short fixed64")
			}
			if err := fn(field, wt, binary.LittleEndian.Uint64(b), nil); err != nil {
				return err
			}
			b = b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return errors.New("bad length")
			}
			if err := fn(field, wt, 0, b[n:n+int(l)]); err != nil {
				return err
			}
			b = b[n+int(l):]
		case 5:
			if len(b) < 4 {
				return errors.New("short fixed32")
			}
			if err := fn(field, wt, uint64(binary.LittleEndian.Uint32(b)), nil); err != nil {
				return err
			}
			b = b[4:]
		default:
			return fmt.Errorf("wire type %d", wt)
		}
	}
	return nil
}
