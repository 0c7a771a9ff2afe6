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

Cost: linear in the payload. Where the install could compile
framing/_msgpack_speedups.c, small messages are decoded and packed by it
(msgpack itself decides anything it leaves, and names every error), and a
server that gives `message_handler` its request fields has a whole read of
requests answered in one compiled call: no dict is built for a request
envelope or a success reply, and the only Python per message is the
handler. Otherwise: one unpackb (with msgpack's defaults, which are as
strict as ours) and one pack into a Packer kept per thread. Large messages
(a map of scalars in a frame of LARGE_MESSAGE bytes or more, the shape of a
request carrying a blob) are read without copying their big bin values:
those decode as read-only memoryviews over the payload. A reply map that
ends with such a view is written in place when the frame has a buffer of
its own (a bytearray: the decoder's large frames): its envelope goes into
the request bytes just before the view, and the reply is a view of the
buffer from there on. A 1 MiB echo then costs no user-space copy of the
blob instead of four (unpack, pack, grow, bytes); a frame in bytes costs one
(envelope + blob).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from framing import _msgpack_codec
from framing._msgpack_codec import UNHANDLED, pack_envelope, thread_packer, unpack_lending
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


#: payload types that own their bytes (a union built per call would cost an allocation)
_OWNED = (bytes, bytearray)


def _unpackb_or_unhandled(data: Any) -> Any:
    """unpackb, when no compiled unpack exists (the batch loop's one call)."""
    try:
        return msgpack.unpackb(data)
    except (ValueError, TypeError):
        return UNHANDLED


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
        self._packer_pack: Callable[[Any], bytes] = thread_packer().pack
        #: the compiled pack where there is one (UNHANDLED: ask the Packer), else the Packer
        self._pack: Callable[[Any], Any] = _msgpack_codec.pack or self._packer_pack
        #: the compiled unpack where there is one, else unpackb (UNHANDLED on failure)
        self._unpack: Callable[[Any], Any] = _msgpack_codec.unpack or _unpackb_or_unhandled
        #: the views the last decode() lent (with their offsets), which an
        #: in-place reply may use, and the payload they are views of
        self._lent: list[tuple[memoryview, int]] = []
        self._lent_from: bytes | bytearray = b""

    def encode(self, obj: Any) -> bytes:
        """msgpack bytes for `obj`; FrameTooLarge if they would not fit a frame."""
        data = self._pack(obj)
        if data is UNHANDLED:
            data = self._packer_pack(obj)  # packs it, or raises what is due
        if len(data) > self.max_frame_length:
            raise FrameTooLarge(len(data), self.max_frame_length, encoding=True)
        return data  # type: ignore[no-any-return]

    def decode(self, payload: BytesLike) -> Any:
        """The object in `payload`, or MessageError naming what is wrong with it.

        In a payload of LARGE_MESSAGE bytes or more, a map of scalars gets
        its bin values of LARGE_BIN bytes or more as read-only memoryviews
        over the payload (no copy); everything else, and every error, is
        msgpack.unpackb's."""
        if self._lent:
            self._lent = []
        if isinstance(payload, _OWNED) and len(payload) >= LARGE_MESSAGE:
            lending = unpack_lending(memoryview(payload).toreadonly(), LARGE_BIN)
            if lending is not UNHANDLED:
                obj, loans = lending
                if loans:
                    self._lent, self._lent_from = loans, payload
                return obj
        # msgpack's defaults are raw=False, strict_map_key=True and every
        # length limit len(payload): as strict as our options within a frame,
        # and a third cheaper than passing seven keywords. A failure is
        # retried with our options below, so the error is exactly theirs.
        if len(payload) <= self.max_frame_length:
            obj = self._unpack(payload)
            if obj is not UNHANDLED:
                return obj
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

    def encode_reply(self, reply: Any) -> BytesLike:
        """encode(), but a map ending with a view that decode() just lent over
        the end of its frame is sent without packing the view: in place in a
        bytearray (the envelope goes into the request bytes before the view,
        all decoded already; the reply is a view from there: no copy), or
        as envelope + view for bytes (one copy)."""
        lent = self._lent
        if not lent:  # the common reply: nothing was lent
            return self.encode(reply)
        self._lent = []
        if type(reply) is dict and reply:
            view = reply[next(reversed(reply))]
            buffer = self._lent_from
            for loan, start in lent:
                if loan is view and start + len(view) == len(buffer):
                    placed = self._in_place(reply, view, start, buffer, lent)
                    if placed is not None:
                        return placed
        return self.encode(reply)

    def _in_place(
        self,
        reply: dict[Any, Any],
        view: memoryview,
        start: int,
        buffer: bytes | bytearray,
        lent: list[tuple[memoryview, int]],
    ) -> BytesLike | None:
        envelope = pack_envelope(reply, len(view))
        if envelope is UNHANDLED:
            return None  # encode() packs it, or raises what is due
        if not isinstance(buffer, bytearray):  # a frame cut from the receive buffer
            joined: bytes = envelope + view  # one copy (not three: unpack, pack, bytes)
            if len(joined) > self.max_frame_length:
                raise FrameTooLarge(len(joined), self.max_frame_length, encoding=True)
            return joined
        begin = start - len(envelope)
        total = len(buffer) - begin
        if begin < 0:
            return None  # no room
        if len(lent) > 1 and any(
            other is not view and offset + len(other) > begin for other, offset in lent
        ):
            return None  # another view still reads those bytes
        if total > self.max_frame_length:
            raise FrameTooLarge(total, self.max_frame_length, encoding=True)
        buffer[begin:start] = envelope
        return memoryview(buffer)[begin:]


def message_handler(
    codec: MessageCodec,
    handle: Any,
    on_error: Any,
    observer: ConnectionObserver = NULL_OBSERVER,
    fields: tuple[str, ...] = (),
    handle_fields: Any = None,
    reply_fields: tuple[str, ...] = (),
) -> BatchHandler:
    """A batch handler over objects: handle(obj) -> reply obj or None;
    on_error(MessageError) -> reply obj or None for a payload that is no
    message (reported to `observer` as "bad_message").

    The fast path, for a request/reply protocol (compiled only): with
    `fields` (ASCII str keys) and `handle_fields`, a message that is a map
    with no key but those is answered by handle_fields(*values), the values
    in the order of `fields` and None for an absent key, without building
    the map; it must answer what handle() would answer for the map, except
    that a reply that is a tuple as long as `reply_fields` stands for the map
    of those keys to its values (packed without being built). Small frames
    of a batch then go through one compiled call per read instead of a
    Python loop; any frame it cannot take goes the way described above."""
    decode, encode, encode_reply = codec.decode, codec.encode, codec.encode_reply
    unpack, pack = codec._unpack, codec._pack
    limit = codec.max_frame_length
    # under this size a payload is no large message: decode() would call
    # unpack(frame) straight away, and so do these
    small = min(LARGE_MESSAGE, limit + 1)
    by_fields = bool(fields) and handle_fields is not None
    c_fields = fields if by_fields else None
    c_handler = handle_fields if by_fields else handle
    c_reply_fields = reply_fields or None

    def answer_one(frame: Payload, append: Callable[[BytesLike], None], reply: Any) -> None:
        """One frame the general way; `reply` is its reply if its handler ran."""
        if reply is UNHANDLED:
            try:
                if len(frame) < small and not codec._lent:
                    obj = unpack(frame)
                    if obj is UNHANDLED:
                        obj = decode(frame)  # msgpack decides, and names what is wrong
                else:
                    obj = decode(frame)
            except MessageError as error:
                observer.error("bad_message", error)
                reply = on_error(error)
            else:
                reply = handle(obj)
        elif type(reply) is tuple and reply_fields and len(reply) == len(reply_fields):
            reply = dict(zip(reply_fields, reply, strict=True))
        if reply is None:
            return
        try:
            if codec._lent:
                append(encode_reply(reply))
            elif (data := pack(reply)) is not UNHANDLED and len(data) <= limit:
                append(data)
            else:
                append(encode(reply))  # the Packer, or the error that is due
        except (FrameTooLarge, ValueError, TypeError, OverflowError) as error:
            refusal = on_error(MessageError(f"the reply cannot be sent: {error}", len(frame)))
            if refusal is not None:
                append(encode(refusal))

    answer = _msgpack_codec.answer
    if answer is None:

        def batch(frames: list[Payload]) -> list[BytesLike]:
            replies: list[BytesLike] = []
            append = replies.append
            for frame in frames:
                answer_one(frame, append, UNHANDLED)
            return replies

        return batch

    def compiled_batch(frames: list[Payload]) -> list[BytesLike]:
        replies: list[BytesLike] = []
        if type(frames) is not list:
            frames = list(frames)
        start, count = 0, len(frames)
        while start < count:
            stop, reply = answer(
                frames, start, c_fields, c_handler, c_reply_fields, small, limit, LARGE_BIN, replies
            )
            if stop < count:
                answer_one(frames[stop], replies.append, reply)
            start = stop + 1
        return replies

    return compiled_batch
