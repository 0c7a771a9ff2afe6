"""msgpack's hot calls for messages: compiled when possible, Python otherwise.

`unpack` and `pack` (compiled only, else None) decode and encode the shapes
a request/reply protocol sends, as msgpack.unpackb and
Packer(use_bin_type=True).pack do, and answer UNHANDLED for anything else
(then msgpack decides, and names any error). At 64-byte messages they cost
a fraction of msgpack's calls, whose time goes to setting up a context per
call. `answer` runs a whole read of requests through a handler in one
call (see message_handler). `unpack_lending` reads a map of scalars with
its big bins as views over the payload (no copy); `pack_envelope` packs a
reply up to the bin it ends with. Those two have pure-Python twins below,
which the tests compare with the compiled ones; FRAMELAB_PURE_PYTHON=1
selects the twins, as it does for framing/_codec.py.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

#: what the compiled calls answer for input they leave to msgpack
UNHANDLED: Any = object()

_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
# the extent of one scalar from its type byte (no containers, no ext types):
# _SIZED: type byte -> (bytes before the data, the length field's format);
# _FIXED: type byte -> the whole value's size
_SIZED: dict[int, tuple[int, struct.Struct]] = {
    0xC4: (2, _U8),  # bin 8
    0xC5: (3, _U16),
    0xC6: (5, _U32),
    0xD9: (2, _U8),  # str 8
    0xDA: (3, _U16),
    0xDB: (5, _U32),
}
_FIXED = {
    0xC0: 1, 0xC2: 1, 0xC3: 1,  # nil, false, true
    0xCA: 5, 0xCB: 9,  # float 32, 64
    0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,  # uint 8..64
    0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9,  # int 8..64
}  # fmt: skip
_BIN_TYPES = (0xC4, 0xC5, 0xC6)
_KEY_TYPES = frozenset((*range(0xA0, 0xC0), 0xD9, 0xDA, 0xDB, *_BIN_TYPES))

Lending = tuple[dict[Any, Any], list[tuple[memoryview, int]]]
_local = threading.local()


def thread_packer() -> msgpack.Packer:
    """This thread's Packer: reused, so its buffer is allocated once, not per
    message. A pack() that raises leaves the buffer empty (msgpack resets it)."""
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def _scalar_end(data: memoryview, pos: int) -> int | None:
    """Where the scalar starting at `pos` ends (None: a container, an ext or
    truncated)."""
    if pos >= len(data):
        return None
    tag = data[pos]
    if tag < 0x80 or tag >= 0xE0:  # fixint
        return pos + 1
    if 0xA0 <= tag <= 0xBF:  # fixstr
        end = pos + 1 + (tag & 0x1F)
    elif (fixed := _FIXED.get(tag)) is not None:
        end = pos + fixed
    elif (sized := _SIZED.get(tag)) is not None:
        head, length = sized
        if pos + 1 + length.size > len(data):
            return None
        end = pos + head + length.unpack_from(data, pos + 1)[0]
    else:
        return None
    return end if end <= len(data) else None


def _map_header(data: memoryview) -> tuple[int, int] | None:
    """(entries, offset of the first key) of a top-level map, None if no map."""
    tag = data[0] if len(data) else 0
    if 0x80 <= tag <= 0x8F:
        return tag & 0x0F, 1
    if tag == 0xDE and len(data) >= 3:
        return _U16.unpack_from(data, 1)[0], 3
    if tag == 0xDF and len(data) >= 5:
        return _U32.unpack_from(data, 1)[0], 5
    return None


def py_unpack_lending(view: memoryview, min_bin: int) -> Lending | Any:
    """A top-level map of scalars in `view`, its bins of `min_bin` encoded
    bytes or more as slices of `view` listed with their offsets; UNHANDLED
    for any other shape."""
    header = _map_header(view)
    if header is None:
        return UNHANDLED
    entries, pos = header
    if entries > (len(view) - pos) // 2:
        return UNHANDLED
    # each slice is one scalar: msgpack's default limits (its input's
    # length) are as strict as any frame limit there, and cheaper
    unpack = msgpack.unpackb
    obj: dict[Any, Any] = {}
    loans: list[tuple[memoryview, int]] = []
    try:
        for _ in range(entries):
            key_end = _scalar_end(view, pos)
            if key_end is None or view[pos] not in _KEY_TYPES:
                return UNHANDLED
            key = unpack(view[pos:key_end])
            value_end = _scalar_end(view, key_end)
            if value_end is None:
                return UNHANDLED
            tag = view[key_end]
            if tag in _BIN_TYPES and value_end - key_end >= min_bin:
                start = key_end + _SIZED[tag][0]
                lent = view[start:value_end]
                loans.append((lent, start))
                obj[key] = lent
            else:
                obj[key] = unpack(view[key_end:value_end])
            pos = value_end
    except (ValueError, TypeError):  # a string that is not UTF-8
        return UNHANDLED
    return (obj, loans) if pos == len(view) else UNHANDLED


def _bin_header(length: int) -> bytes:
    if length < 0x100:
        return b"\xc4" + _U8.pack(length)
    if length < 0x10000:
        return b"\xc5" + _U16.pack(length)
    return b"\xc6" + _U32.pack(length)


def _map_prefix(entries: int) -> bytes:
    if entries < 16:
        return bytes((0x80 | entries,))
    if entries < 0x10000:
        return b"\xde" + _U16.pack(entries)
    return b"\xdf" + _U32.pack(entries)


def py_pack_envelope(reply: dict[Any, Any], bin_length: int) -> bytes | Any:
    """`reply` packed up to its last value, then a bin header of `bin_length`."""
    pack = thread_packer().pack
    parts = [_map_prefix(len(reply))]
    *head, last_key = reply
    for key in head:
        parts.append(pack(key))
        parts.append(pack(reply[key]))
    parts.append(pack(last_key))
    parts.append(_bin_header(bin_length))
    return b"".join(parts)


UnpackLending = Callable[[memoryview, int], "Lending | Any"]
PackEnvelope = Callable[[dict[Any, Any], int], "bytes | Any"]


class _Selected(NamedTuple):
    unpack: Callable[[Any], Any] | None
    pack: Callable[[Any], Any] | None
    answer: Callable[..., tuple[int, Any]] | None
    unpack_lending: UnpackLending
    pack_envelope: PackEnvelope
    unhandled: Any


def _select() -> _Selected:
    pure = _Selected(None, None, None, py_unpack_lending, py_pack_envelope, UNHANDLED)
    if os.environ.get("FRAMELAB_PURE_PYTHON", "") not in ("", "0"):
        return pure
    try:
        from framing import _msgpack_speedups as c  # type: ignore[attr-defined]
    except ImportError:
        return pure
    return _Selected(c.unpack, c.pack, c.answer, c.unpack_lending, c.pack_envelope, c.UNHANDLED)


#: unpack(data), pack(obj), answer(...): compiled or None; unpack_lending,
#: pack_envelope: compiled or their twins. UNHANDLED is the compiled
#: module's own sentinel where it is selected.
unpack, pack, answer, unpack_lending, pack_envelope, UNHANDLED = _select()
ACCELERATED = unpack is not None
