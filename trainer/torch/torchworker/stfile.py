"""safetensors with the standard library and numpy (Debian ships no
safetensors package).

A file is an 8-byte little-endian header length, a JSON header mapping tensor
names to {"dtype", "shape", "data_offsets": [begin, end]} plus "__metadata__"
(a string map), then the raw little-endian data. The project's built-in
checkpoints (policy/checkpoint.go) are such files with F32 tensors in the
parameter layout order and the model config in the metadata.
"""

import json
import os
import struct
import tempfile

import numpy as np

_NP = {"F32": "<f4", "F16": "<f2", "I32": "<i4", "I64": "<i8", "BF16": "<u2"}
MAX_HEADER = 64 << 20


def read(path):
    """Returns (tensors: dict name -> (dtype string, shape, bytes view),
    metadata dict). BF16 data comes back as uint16 arrays (use to_torch)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("%s: too short for a safetensors file" % path)
    (hl,) = struct.unpack("<Q", data[:8])
    if hl < 2 or hl > MAX_HEADER or 8 + hl > len(data):
        raise ValueError("%s: header length %d out of range" % (path, hl))
    header = json.loads(data[8 : 8 + hl].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + hl :]
    out = {}
    for name, e in header.items():
        dt = e["dtype"]
        if dt not in _NP:
            raise ValueError("%s: tensor %s has unsupported dtype %s" % (path, name, dt))
        lo, hi = e["data_offsets"]
        arr = np.frombuffer(body[lo:hi], dtype=_NP[dt])
        n = int(np.prod(e["shape"])) if e["shape"] else 1
        if arr.size != n:
            raise ValueError("%s: tensor %s holds %d values, shape %s wants %d" % (path, name, arr.size, e["shape"], n))
        out[name] = (dt, list(e["shape"]), arr.reshape(e["shape"]))
    return out, meta


def encode(tensors, meta):
    """tensors: list of (name, dtype string, shape, numpy array) in the order
    to store; returns the file bytes."""
    header = {}
    off = 0
    blobs = []
    for name, dt, shape, arr in tensors:
        b = np.ascontiguousarray(arr, dtype=_NP[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    if meta is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in meta.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)  # align the data as the reference writer does
    return struct.pack("<Q", len(hb)) + hb + b"".join(blobs)


def write_atomic(path, data):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_shards(dir, tensors, max_shard_bytes, meta=None):
    """Writes HF-style shards model-0000i-of-0000n.safetensors and
    model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map"})
    into dir. tensors: list of (name, dtype, shape, array) in order; a shard
    closes before the tensor that would take it past max_shard_bytes (a
    larger tensor gets a shard of its own). A single shard is still indexed,
    which every loader accepts. Returns the index dict."""
    os.makedirs(dir, exist_ok=True)
    shards, cur, cur_bytes = [], [], 0
    total = 0
    for t in tensors:
        nb = np.dtype(_NP[t[1]]).itemsize * int(np.prod(t[2]) if t[2] else 1)
        if cur and cur_bytes + nb > max_shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(t)
        cur_bytes += nb
        total += nb
    if cur:
        shards.append(cur)
    n = len(shards)
    weight_map = {}
    for i, sh in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, n)
        m = {"format": "pt"}
        if meta:
            m.update(meta)
        write_atomic(os.path.join(dir, fname), encode(sh, m))
        for t in sh:
            weight_map[t[0]] = fname
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    write_atomic(os.path.join(dir, "model.safetensors.index.json"), json.dumps(index, indent=2, sort_keys=True).encode())
    return index
