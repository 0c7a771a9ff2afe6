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
"""

from __future__ import annotations

from typing import Any

import msgpack

from framing.batch import BatchHandler
from framing.decoder import DEFAULT_MAX_FRAME_LENGTH, BytesLike, Payload
from framing.errors import FrameTooLarge, MessageError
from framing.observer import NULL_OBSERVER, ConnectionObserver

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


class MessageCodec:
    """Pack and unpack one msgpack object per frame, with limits from the frame limit."""

    def __init__(self, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        self.max_frame_length = max_frame_length

    def encode(self, obj: Any) -> bytes:
        """msgpack bytes for `obj`; FrameTooLarge if they would not fit a frame."""
        data: bytes = msgpack.packb(obj, use_bin_type=True)
        if len(data) > self.max_frame_length:
            raise FrameTooLarge(len(data), self.max_frame_length, encoding=True)
        return data

    def decode(self, payload: BytesLike) -> Any:
        """The object in `payload`, or MessageError naming what is wrong with it."""
        try:
            cap = self.max_frame_length
            return msgpack.unpackb(
                payload,
                raw=False,
                strict_map_key=True,
                max_str_len=cap,
                max_bin_len=cap,
                max_array_len=cap,
                max_map_len=cap // 2,
                max_ext_len=cap,
            )
        except (ValueError, TypeError) as error:  # every msgpack failure is one of these
            if not isinstance(payload, bytes | bytearray | memoryview):  # our caller's mistake
                raise TypeError(
                    "MessageCodec.decode: payload must be bytes, bytearray or memoryview, "
                    f"not {type(payload).__name__}"
                ) from None
            if not payload:
                raise MessageError("empty frame (no msgpack object)", 0) from error
            raise MessageError(_reason(error), len(payload)) from error


def message_handler(
    codec: MessageCodec,
    handle: Any,
    on_error: Any,
    observer: ConnectionObserver = NULL_OBSERVER,
) -> BatchHandler:
    """A batch handler over objects: handle(obj) -> reply obj or None;
    on_error(MessageError) -> reply obj or None for a payload that is no
    message (reported to `observer` as "bad_message")."""

    def batch(frames: list[Payload]) -> list[bytes]:
        replies = []
        for frame in frames:
            try:
                obj = codec.decode(frame)
            except MessageError as error:
                observer.error("bad_message", error)
                reply = on_error(error)
            else:
                reply = handle(obj)
            if reply is None:
                continue
            try:
                replies.append(codec.encode(reply))
            except (FrameTooLarge, ValueError, TypeError, OverflowError) as error:
                refusal = on_error(MessageError(f"the reply cannot be sent: {error}", len(frame)))
                if refusal is not None:
                    replies.append(codec.encode(refusal))
        return replies

    return batch
