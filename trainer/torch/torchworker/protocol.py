"""Framing of the worker protocol.

Every message is a frame: a 4-byte little-endian unsigned length, then that
many bytes of one msgpack map. A request carries "op" (a string) and op
arguments; the reply carries "ok" (bool) and either results or "error" (a
string). Numeric arrays travel as msgpack bin of raw little-endian values
(int32 token ids, float32 values), with lengths given separately.

The first request is {"op": "hello", "version": N}; a worker whose
PROTOCOL_VERSION differs answers ok=False with an error naming both versions
and closes the connection.
"""

import struct

import msgpack
import numpy as np

MAX_FRAME = 1 << 31  # 2 GiB: a frame longer than this is a protocol error


class ProtocolError(Exception):
    """Fatal: the connection cannot go on (framing, version)."""


class ShapeError(ValueError):
    """An array of the wrong length in one request (that request fails)."""


def _read_exact(f, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = f.recv(n - len(buf)) if hasattr(f, "recv") else f.read(n - len(buf))
        if not chunk:
            raise EOFError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def read_frame(f):
    """Reads one frame from a socket or binary file and decodes it."""
    (n,) = struct.unpack("<I", _read_exact(f, 4))
    if n > MAX_FRAME:
        raise ProtocolError("frame of %d bytes exceeds %d" % (n, MAX_FRAME))
    msg = msgpack.unpackb(_read_exact(f, n), raw=False)
    if not isinstance(msg, dict):
        raise ProtocolError("frame is a %s, want a map" % type(msg).__name__)
    return msg


def encode_frame(msg):
    body = msgpack.packb(msg, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise ProtocolError("reply of %d bytes exceeds %d" % (len(body), MAX_FRAME))
    return struct.pack("<I", len(body)) + body


def write_frame(f, msg):
    data = encode_frame(msg)
    if hasattr(f, "sendall"):
        f.sendall(data)
    else:
        f.write(data)
        f.flush()


def i32(b, n=None):
    """Decodes little-endian int32 bytes (n values when given, checked)."""
    a = np.frombuffer(b or b"", dtype="<i4")
    if n is not None and a.size != n:
        raise ShapeError("expected %d int32 values, got %d" % (n, a.size))
    return a.astype(np.int64)


def f32(b, n=None):
    a = np.frombuffer(b or b"", dtype="<f4")
    if n is not None and a.size != n:
        raise ShapeError("expected %d float32 values, got %d" % (n, a.size))
    return a


def f32_bytes(a):
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def i32_bytes(a):
    return np.ascontiguousarray(a, dtype="<i4").tobytes()
