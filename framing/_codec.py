"""The codec's per-frame loops, compiled when possible, Python otherwise.

`split_frames` cuts complete frames out of a receive buffer as bytes;
`split_views` lends them as read-only memoryviews of it instead, and
`buffer_exported` says whether one of those is still alive (so the buffer
may not be written again); `pack_frames` lays out many frames in one
buffer, and `wire_region` finds replies that already lie in one as they go
on the wire (an echo of lent views) so that nothing needs packing;
`payload_buffer` makes the bytearray a large payload is received into
(compiled, it skips zero-filling memory the kernel is about to overwrite).
Everything around them (limits, large frames, errors) stays in decoder.py
and encoder.py, in Python, but for the decoder's per-read pair (get_buffer,
buffer_updated), compiled as the base type FrameDecoder stands on. The C twins
in _speedups.c are selected automatically when the install could build
them; FRAMELAB_PURE_PYTHON=1 forces these Python versions (the tests run
both and compare them; the benchmark measures both).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

HEADER = struct.Struct(">I")
MAX_DECLARABLE = 0xFFFF_FFFF

#: pack_frames statuses (as in _speedups.c)
PACKED_ALL = 0
PACKED_UP_TO_LARGE = 1  # payloads[stop] is large: its header ends the data
STOPPED_AT_OVERSIZED = 2  # payloads[stop] is over the limit, not packed

Frames = list[bytes | bytearray | memoryview]  # decoder.Payload
Buffer = bytes | bytearray | memoryview
SplitFrames = Callable[[Buffer, int, int, int], tuple[Frames, int]]
SplitViews = Callable[[bytes | bytearray, int, int, int, int], tuple[Frames, int]]
Packable = Sequence[bytes | bytearray | memoryview]
PackFrames = Callable[[Packable, int, int, int], tuple[bytes | bytearray, int, int]]


def py_split_frames(buf: Buffer, start: int, end: int, limit: int) -> tuple[Frames, int]:
    """Complete frames in buf[start:end] and the first offset not consumed;
    stops before an incomplete frame or a header over `limit`."""
    with memoryview(buf) as view:
        return _cut("split_frames", view, start, end, limit, MAX_DECLARABLE + 1)


def py_split_views(
    buffer: bytes | bytearray, start: int, end: int, limit: int, min_view: int
) -> tuple[Frames, int]:
    """split_frames, each payload of `min_view` bytes or more a read-only
    slice of `buffer` instead of a copy."""
    if type(buffer) not in (bytes, bytearray):
        raise TypeError("split_views: buffer must be bytes or a bytearray")
    return _cut("split_views", memoryview(buffer).toreadonly(), start, end, limit, min_view)


def _cut(
    name: str, view: memoryview, start: int, end: int, limit: int, min_view: int
) -> tuple[Frames, int]:
    """Both splits, one loop (as in C): payloads of `min_view` bytes or more
    are slices of `view`, shorter ones bytes."""
    if start < 0 or end > view.nbytes or start > end or limit < 0:
        raise ValueError(f"{name}: start/end out of range")
    frames: Frames = []
    unpack, pos = HEADER.unpack_from, start
    while end - pos >= 4:
        (length,) = unpack(view, pos)
        stop = pos + 4 + length
        if length > limit or stop > end:
            break
        payload = view[pos + 4 : stop]
        frames.append(payload if length >= min_view else bytes(payload))
        pos = stop
    return frames, pos


def py_wire_region(payloads: Packable, limit: int) -> memoryview | None:
    """Always None: Python cannot see where in its buffer a view lies, so the
    pure loops pack (copy) what the compiled wire_region writes in place; the
    bytes on the wire are the same."""
    return None


def py_buffer_exported(buffer: bytearray) -> bool:
    """True while a view of `buffer` is alive: a bytearray with exports cannot
    change size, so shrinking it by its last byte (and putting it back) is
    the test."""
    if not isinstance(buffer, bytearray):
        raise TypeError("buffer_exported: a bytearray is required")
    if not buffer:
        return False
    try:
        last = buffer.pop()
    except BufferError:
        return True
    buffer.append(last)
    return False


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


class Codec(NamedTuple):
    """One implementation of the loops: all compiled, or all Python."""

    split_frames: SplitFrames
    split_views: SplitViews
    buffer_exported: Callable[[bytearray], bool]
    pack_frames: PackFrames
    wire_region: Callable[[Packable, int], memoryview | None]
    #: a bytearray for a payload the kernel will fill (compiled: not zero-filled first)
    payload_buffer: Callable[[int], bytearray]
    accelerated: bool
    #: FrameDecoder's base with get_buffer() and buffer_updated() compiled
    #: (None: decoder.PyDecoderCore, their Python twin)
    decoder_core: type | None = None


PURE = Codec(
    py_split_frames,
    py_split_views,
    py_buffer_exported,
    py_pack_frames,
    py_wire_region,
    bytearray,
    False,
)


def _select() -> Codec:
    if os.environ.get("FRAMELAB_PURE_PYTHON", "") not in ("", "0"):
        return PURE
    try:
        from framing import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return PURE
    compiled = _speedups
    return Codec(
        compiled.split_frames,
        compiled.split_views,
        compiled.buffer_exported,
        compiled.pack_frames,
        compiled.wire_region,
        compiled.payload_buffer,
        True,
        compiled.DecoderCore,
    )


SELECTED = _select()
(
    split_frames,
    split_views,
    buffer_exported,
    pack_frames,
    wire_region,
    payload_buffer,
    ACCELERATED,
    _,
) = SELECTED
