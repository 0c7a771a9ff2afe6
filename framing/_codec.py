"""The codec's two per-frame loops, compiled when possible, Python otherwise.

`split_frames` cuts complete frames out of a receive buffer; `pack_frames`
lays out many frames in one buffer; `payload_buffer` makes the bytearray a
large payload is received into (compiled, it skips zero-filling memory the
kernel is about to overwrite). Everything around them (limits, large
frames, errors) stays in decoder.py and encoder.py, in Python. The C twins
in _speedups.c are selected automatically when the install could build
them; FRAMELAB_PURE_PYTHON=1 forces these Python versions (the tests run
both and compare them; the benchmark measures both).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence

HEADER = struct.Struct(">I")
MAX_DECLARABLE = 0xFFFF_FFFF

#: pack_frames statuses (as in _speedups.c)
PACKED_ALL = 0
PACKED_UP_TO_LARGE = 1  # payloads[stop] is large: its header ends the data
STOPPED_AT_OVERSIZED = 2  # payloads[stop] is over the limit, not packed

Frames = list[bytes | bytearray]  # decoder.Payload; bytes from here
SplitFrames = Callable[[memoryview, int, int, int], tuple[Frames, int]]
Packable = Sequence[bytes | bytearray | memoryview]
PackFrames = Callable[[Packable, int, int, int], tuple[bytes | bytearray, int, int]]


def py_split_frames(buf: memoryview, start: int, end: int, limit: int) -> tuple[Frames, int]:
    """Complete frames in buf[start:end] and the first offset not consumed;
    stops before an incomplete frame or a header over `limit`."""
    frames: Frames = []
    unpack, pos = HEADER.unpack_from, start
    while end - pos >= 4:
        (length,) = unpack(buf, pos)
        stop = pos + 4 + length
        if length > limit or stop > end:
            break
        frames.append(bytes(buf[pos + 4 : stop]))
        pos = stop
    return frames, pos


def py_pack_frames(
    payloads: Packable, start: int, limit: int, large: int
) -> tuple[bytes | bytearray, int, int]:
    """Header + payload for payloads[start:] in one buffer, up to the first
    large payload (its header included) or oversized one (excluded)."""
    out = bytearray()
    pack = HEADER.pack
    for index in range(start, len(payloads)):
        payload = payloads[index]
        length = memoryview(payload).nbytes
        if length > limit or length > MAX_DECLARABLE:
            return out, index, STOPPED_AT_OVERSIZED
        out += pack(length)
        if length >= large:
            return out, index, PACKED_UP_TO_LARGE
        out += payload
    return out, len(payloads), PACKED_ALL


def _select() -> tuple[SplitFrames, PackFrames, Callable[[int], bytearray], bool]:
    if os.environ.get("FRAMELAB_PURE_PYTHON", "") not in ("", "0"):
        return py_split_frames, py_pack_frames, bytearray, False
    try:
        from framing import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return py_split_frames, py_pack_frames, bytearray, False
    return _speedups.split_frames, _speedups.pack_frames, _speedups.payload_buffer, True


#: payload_buffer(n): a bytearray for a large payload the kernel will fill
#: (compiled: not zero-filled first)
split_frames, pack_frames, payload_buffer, ACCELERATED = _select()
