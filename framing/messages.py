"""msgpack messages on frames: one msgpack object per frame.

Because the frame already delimits the message, a payload that is not
valid msgpack spoils that one message only: the stream stays in sync, the
peer gets an error for it, and the next frame is read normally. That is the
point of framing.

Unpacking is defensive: raw=False (strings must be UTF-8), strict_map_key
(only str/bytes keys, against hash-flooding), no trailing bytes, and every
declared length capped by the frame limit (msgpack also refuses lengths
beyond the input, so a 4-byte header claiming 4 GiB allocates nothing).
Nesting deeper than msgpack's stack (1024) is refused too. A reply that
cannot be encoded (an integer past 64 bits, a reply over the frame limit) is
replaced by the error reply for that one request.

Cost: linear in the payload, and per small message one unpackb (with
msgpack's defaults, which are as strict as ours: keywords cost a third of
the call) and one pack into a Packer kept per thread (msgpack.packb makes
and frees a 1 MiB buffer on every call). Large messages
(a map of scalars in a frame of LARGE_MESSAGE bytes or more, the shape of a
request carrying a blob) are read without copying their big bin values:
those decode as read-only memoryviews over the payload. A reply map that
ends with such a view, sent by `message_handler`, is written in place when
the frame has a buffer of its own (a bytearray: frames the decoder received
in pieces): its envelope goes into the request bytes just before the view,
and the reply is a view of the buffer from there on. A 1 MiB echo then
costs no user-space copy of the blob instead of four (unpack, pack, grow,
bytes); a frame that arrived whole (bytes) costs one (envelope + blob).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from framing.batch import BatchHandler
from framing.decoder import DEFAULT_LARGE_FRAME, DEFAULT_MAX_FRAME_LENGTH, BytesLike, Payload
from framing.errors import FrameTooLarge, MessageError
from framing.observer import NULL_OBSERVER, ConnectionObserver

#: frames of this many bytes or more get the no-copy reading of big bin values
LARGE_MESSAGE = DEFAULT_LARGE_FRAME
#: in such a frame, bin values of this many bytes or more decode as views
LARGE_BIN = 8 * 1024

_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (msgpack.ExtraData, "trailing bytes after the msgpack object"),
    (msgpack.StackError, "containers nested too deeply"),
    (msgpack.FormatError, "not msgpack (invalid type byte)"),
    (UnicodeDecodeError, "a string is not valid UTF-8"),
)


def _reason(error: Exception) -> str:
    for kind, text in _REASONS:
        if isinstance(error, kind):
            return text
    text = str(error)
    if "incomplete input" in text:
        return "truncated msgpack object (a declared length runs past the frame)"
    return text or type(error).__name__


_local = threading.local()
#: payload types that own their bytes (a union built per call would cost an allocation)
_OWNED = (bytes, bytearray)


def _thread_packer() -> msgpack.Packer:
    """This thread's Packer: reused, so its buffer is allocated once, not per
    message. A pack() that raises leaves the buffer empty (msgpack resets it)."""
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


# -- the extent of one scalar msgpack value, from its type byte --------------
# _SIZED: type byte -> (bytes before the data, the length field's format);
# _FIXED: type byte -> the whole value's size. Containers are no scalars.
_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
_SIZED: dict[int, tuple[int, struct.Struct]] = {
    0xC4: (2, _U8),  # bin 8
    0xC5: (3, _U16),
    0xC6: (5, _U32),
    0xC7: (3, _U8),  # ext 8 (the extra byte is the ext type)
    0xC8: (4, _U16),
    0xC9: (6, _U32),
    0xD9: (2, _U8),  # str 8
    0xDA: (3, _U16),
    0xDB: (5, _U32),
}
_FIXED = {
    0xC0: 1, 0xC2: 1, 0xC3: 1,  # nil, false, true
    0xCA: 5, 0xCB: 9,  # float 32, 64
    0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,  # uint 8..64
    0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9,  # int 8..64
    0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18,  # fixext 1..16
}  # fmt: skip
_BIN_TYPES = (0xC4, 0xC5, 0xC6)


def _scalar_end(data: memoryview, pos: int) -> int | None:
    """Where the scalar starting at `pos` ends (None: a container or invalid)."""
    tag = data[pos]
    if tag < 0x80 or tag >= 0xE0:  # fixint
        return pos + 1
    if 0xA0 <= tag <= 0xBF:  # fixstr
        return pos + 1 + (tag & 0x1F)
    fixed = _FIXED.get(tag)
    if fixed is not None:
        return pos + fixed
    sized = _SIZED.get(tag)
    if sized is None:
        return None
    head, length = sized
    start = pos + 1
    if start + length.size > len(data):
        return None
    declared: int = length.unpack_from(data, start)[0]
    return pos + head + declared


def _map_header(data: memoryview) -> tuple[int, int] | None:
    """(entries, offset of the first key) of a top-level map, None if no map."""
    tag = data[0]
    if 0x80 <= tag <= 0x8F:
        return tag & 0x0F, 1
    if tag == 0xDE and len(data) >= 3:
        return _U16.unpack_from(data, 1)[0], 3
    if tag == 0xDF and len(data) >= 5:
        return _U32.unpack_from(data, 1)[0], 5
    return None


def _bin_header(length: int) -> bytes:
    if length < 0x100:
        return b"\xc4" + _U8.pack(length)
    if length < 0x10000:
        return b"\xc5" + _U16.pack(length)
    return b"\xc6" + _U32.pack(length)


class _Lent:
    """A bin value handed out as a view over a frame buffer: where it lies."""

    __slots__ = ("buffer", "start", "view")

    def __init__(self, view: memoryview, buffer: bytes | bytearray, start: int) -> None:
        self.view = view
        self.buffer = buffer
        self.start = start


class MessageCodec:
    """Pack and unpack one msgpack object per frame, with limits from the frame limit."""

    def __init__(self, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        self.max_frame_length = max_frame_length
        cap = max_frame_length
        self._options: dict[str, Any] = {
            "raw": False,
            "strict_map_key": True,
            "max_str_len": cap,
            "max_bin_len": cap,
            "max_array_len": cap,
            "max_map_len": cap // 2,
            "max_ext_len": cap,
        }
        self._pack: Callable[[Any], bytes] = _thread_packer().pack
        #: the views the last decode() lent, which an in-place reply may use
        self._lent: list[_Lent] = []

    def encode(self, obj: Any) -> bytes:
        """msgpack bytes for `obj`; FrameTooLarge if they would not fit a frame."""
        data = self._pack(obj)
        if len(data) > self.max_frame_length:
            raise FrameTooLarge(len(data), self.max_frame_length, encoding=True)
        return data

    def decode(self, payload: BytesLike) -> Any:
        """The object in `payload`, or MessageError naming what is wrong with it.

        In a payload of LARGE_MESSAGE bytes or more, a map of scalars gets
        its bin values of LARGE_BIN bytes or more as read-only memoryviews
        over the payload (no copy); everything else, and every error, is
        msgpack.unpackb's."""
        if self._lent:
            self._lent = []
        if isinstance(payload, _OWNED) and len(payload) >= LARGE_MESSAGE:
            obj = self._decode_lending(payload)
            if obj is not None:
                return obj
            self._lent = []
        # msgpack's defaults are raw=False, strict_map_key=True and every
        # length limit len(payload): as strict as our options within a frame,
        # and a third cheaper than passing seven keywords. A failure is
        # retried with our options below, so the error is exactly theirs.
        try:
            if len(payload) <= self.max_frame_length:
                return msgpack.unpackb(payload)
        except (ValueError, TypeError):
            pass
        try:
            return msgpack.unpackb(payload, **self._options)
        except (ValueError, TypeError) as error:  # every msgpack failure is one of these
            if not isinstance(payload, bytes | bytearray | memoryview):  # our caller's mistake
                raise TypeError(
                    "MessageCodec.decode: payload must be bytes, bytearray or memoryview, "
                    f"not {type(payload).__name__}"
                ) from None
            if not payload:
                raise MessageError("empty frame (no msgpack object)", 0) from error
            raise MessageError(_reason(error), len(payload)) from error

    def _decode_lending(self, payload: bytes | bytearray) -> dict[Any, Any] | None:
        """A map of scalars with big bins as views; None for any other shape
        or any doubt (unpackb then decides, and names any error)."""
        data = memoryview(payload).toreadonly()
        header = _map_header(data)
        if header is None:
            return None
        entries, pos = header
        end = len(data)
        if entries > self._options["max_map_len"]:
            return None
        # each slice is one scalar inside the frame: msgpack's default limits
        # (its input's length) are as strict as ours there, and cheaper
        unpack = msgpack.unpackb
        obj: dict[Any, Any] = {}
        try:
            for _ in range(entries):
                key_end = _scalar_end(data, pos) if pos < end else None
                if key_end is None or key_end > end:
                    return None
                key = unpack(data[pos:key_end])
                if not isinstance(key, str | bytes):
                    return None
                value_end = _scalar_end(data, key_end) if key_end < end else None
                if value_end is None or value_end > end:
                    return None
                tag = data[key_end]
                if tag in _BIN_TYPES and value_end - key_end >= LARGE_BIN:
                    start = key_end + _SIZED[tag][0]
                    view = data[start:value_end]
                    self._lent.append(_Lent(view, payload, start))
                    obj[key] = view
                else:
                    obj[key] = unpack(data[key_end:value_end])
                pos = value_end
        except (ValueError, TypeError):
            return None
        return obj if pos == end else None

    def encode_reply(self, reply: Any) -> BytesLike:
        """encode(), but a map ending with a view that decode() just lent over
        the end of its frame is sent without packing the view: in place in a
        bytearray (the envelope goes into the request bytes before the view,
        all decoded already; the reply is a view from there: no copy), or
        as envelope + view for bytes (one copy)."""
        lent = self._lent
        if not lent:  # the common reply: nothing was lent
            data = self._pack(reply)
            if len(data) > self.max_frame_length:
                raise FrameTooLarge(len(data), self.max_frame_length, encoding=True)
            return data
        self._lent = []
        if type(reply) is dict and reply:
            last_key = next(reversed(reply))
            view = reply[last_key]
            for loan in lent:
                if loan.view is view and loan.start + len(view) == len(loan.buffer):
                    placed = self._in_place(reply, last_key, loan, lent)
                    if placed is not None:
                        return placed
        return self.encode(reply)

    def _in_place(
        self, reply: dict[Any, Any], last_key: Any, loan: _Lent, lent: list[_Lent]
    ) -> BytesLike | None:
        pack = self._pack
        parts = [_map_prefix(len(reply))]
        items = list(reply.items())
        for key, value in items[:-1]:
            parts.append(pack(key))
            parts.append(pack(value))
        parts.append(pack(last_key))
        parts.append(_bin_header(len(loan.view)))
        envelope = b"".join(parts)
        if not isinstance(loan.buffer, bytearray):  # a frame cut from the receive buffer
            joined = envelope + loan.view  # one copy (not three: unpack, pack, bytes)
            if len(joined) > self.max_frame_length:
                raise FrameTooLarge(len(joined), self.max_frame_length, encoding=True)
            return joined
        begin = loan.start - len(envelope)
        total = len(loan.buffer) - begin
        if begin < 0 or any(
            other is not loan and other.start + len(other.view) > begin for other in lent
        ):
            return None  # no room, or another view still reads those bytes
        if total > self.max_frame_length:
            raise FrameTooLarge(total, self.max_frame_length, encoding=True)
        loan.buffer[begin : loan.start] = envelope
        return memoryview(loan.buffer)[begin:]


def _map_prefix(entries: int) -> bytes:
    if entries < 16:
        return bytes((0x80 | entries,))
    if entries < 0x10000:
        return b"\xde" + _U16.pack(entries)
    return b"\xdf" + _U32.pack(entries)


def message_handler(
    codec: MessageCodec,
    handle: Any,
    on_error: Any,
    observer: ConnectionObserver = NULL_OBSERVER,
) -> BatchHandler:
    """A batch handler over objects: handle(obj) -> reply obj or None;
    on_error(MessageError) -> reply obj or None for a payload that is no
    message (reported to `observer` as "bad_message")."""
    decode, encode, encode_reply = codec.decode, codec.encode, codec.encode_reply
    unpackb = msgpack.unpackb
    # under this size a payload is no large message: decode() would call
    # unpackb(frame) straight away, so the loop does, one call fewer a message
    small = min(LARGE_MESSAGE, codec.max_frame_length + 1)

    def batch(frames: list[Payload]) -> list[BytesLike]:
        replies: list[BytesLike] = []
        append = replies.append
        for frame in frames:
            try:
                if len(frame) < small and not codec._lent:
                    try:
                        obj = unpackb(frame)
                    except (ValueError, TypeError):
                        obj = decode(frame)  # decode() names what is wrong
                else:
                    obj = decode(frame)
            except MessageError as error:
                observer.error("bad_message", error)
                reply = on_error(error)
            else:
                reply = handle(obj)
            if reply is None:
                continue
            try:
                append(encode_reply(reply))
            except (FrameTooLarge, ValueError, TypeError, OverflowError) as error:
                refusal = on_error(MessageError(f"the reply cannot be sent: {error}", len(frame)))
                if refusal is not None:
                    append(encode(refusal))
        return replies

    return batch
