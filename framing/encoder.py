"""Sans-IO encoder: payloads in, wire bytes out. No sockets here.

`encode_frame` makes one frame; `encode_frames` packs a batch into a single
bytearray so a writer makes one write() (one syscall) for many replies.
`write_frames` sends large payloads without copying them.
Every function refuses a payload over the limit (tokio-util checks on
encode too): a peer using the same limit could not read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from framing._codec import (
    PACKED_ALL,
    PACKED_UP_TO_LARGE,
    STOPPED_AT_OVERSIZED,
    pack_frames,
    wire_region,
)
from framing.decoder import (
    DEFAULT_LARGE_FRAME,
    DEFAULT_MAX_FRAME_LENGTH,
    HEADER,
    MAX_DECLARABLE,
    BytesLike,
)
from framing.errors import FrameTooLarge

#: with a gathering write (writelines as one writev), payloads of this many
#: bytes or more are written as they are rather than copied into the batch
WRITEV_AS_IS = 16 * 1024
_SEQUENCES = (list, tuple)  # taken as they are; `list | tuple` would be built per call


def _not_bytes(function: str, argument: str, value: object) -> TypeError:
    """The caller passed something that is no bytes-like object (often a str)."""
    hint = " (encode it first, e.g. text.encode())" if isinstance(value, str) else ""
    return TypeError(
        f"{function}: {argument} must be bytes, bytearray or memoryview, "
        f"not {type(value).__name__}{hint}"
    )


def _which_is_not_bytes(function: str, items: Sequence[BytesLike], error: TypeError) -> TypeError:
    """pack_frames raised TypeError: name the payload that is not bytes-like."""
    for index, item in enumerate(items):
        if not isinstance(item, bytes | bytearray | memoryview):
            return _not_bytes(function, f"payloads[{index}]", item)
    return error


def _checked_length(payload: BytesLike, limit: int, function: str = "encode_frame") -> int:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise _not_bytes(function, "payload", payload)
    length = len(payload)
    if length > limit or length > MAX_DECLARABLE:
        raise FrameTooLarge(length, min(limit, MAX_DECLARABLE), encoding=True)
    return length


def frame_header(payload: BytesLike, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> bytes:
    """The 4-byte header for `payload` (checked against the limit)."""
    return HEADER.pack(_checked_length(payload, max_frame_length, "frame_header"))


def encode_frame(payload: BytesLike, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> bytes:
    """Header + payload as one bytes object (one copy of the payload)."""
    return HEADER.pack(_checked_length(payload, max_frame_length)) + bytes(payload)


def encode_frames(
    payloads: Iterable[BytesLike], max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH
) -> bytes | bytearray:
    """Many frames in one buffer: one copy per payload (in C when compiled), one write for all."""
    items = payloads if isinstance(payloads, _SEQUENCES) else list(payloads)
    try:  # no payload counts as large here: every one is copied into the buffer
        data, stop, status = pack_frames(items, 0, max_frame_length, MAX_DECLARABLE + 1)
    except TypeError as error:
        raise _which_is_not_bytes("encode_frames", items, error) from None
    if status == STOPPED_AT_OVERSIZED:
        _checked_length(items[stop], max_frame_length)  # raises FrameTooLarge
    return data


def write_as_is(large_frame: int, gathering: bool) -> int:
    """The size from which write_frames passes a payload uncopied."""
    return min(large_frame, WRITEV_AS_IS) if gathering else large_frame


def write_frames(
    write: Callable[[BytesLike], object],
    payloads: Iterable[BytesLike],
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    large_frame: int = DEFAULT_LARGE_FRAME,
    writelines: Callable[[list[BytesLike]], object] | None = None,
    *,
    in_place: bool = True,
) -> int:
    """Encode `payloads` into as few write() calls as copies allow.

    Small payloads are packed into one buffer (one copy each, in C when
    compiled); a payload of `large_frame` bytes or more is written as it is,
    after the buffer that ends with its header, so big replies are never
    copied in user space (a bytearray or memoryview so written must not
    change until the transport has sent it). With `writelines` (a transport
    whose writelines is a writev, like uvloop's) the whole batch goes in one
    call, and a payload of WRITEV_AS_IS bytes or more already goes as it is:
    there an extra buffer costs an iovec entry, a copy costs a pass over it.
    A payload over the limit raises FrameTooLarge after the frames before it
    were written. Returns the number of frames written. Views a decoder lent
    (views=True) and handed back in order, as an echo or a relay does, already
    lie in its receive buffer as frames: they are written from there, uncopied
    (wire_region; the decoder sees the transport hold them, if it does). Pass
    `in_place=False` while the transport is already queueing: a queued region
    pins its whole receive buffer, so from the second one on a copy is cheaper
    (at most one buffer per connection is then held by the writes).
    """
    items = payloads if isinstance(payloads, _SEQUENCES) else list(payloads)
    region = wire_region(items, max_frame_length) if in_place else None
    if region is not None:
        write(region)
        return len(items)
    if writelines is not None and large_frame > WRITEV_AS_IS:
        large_frame = WRITEV_AS_IS  # as write_as_is() says, without a call per batch
    try:
        data, stop, status = pack_frames(items, 0, max_frame_length, large_frame)
    except TypeError as error:
        raise _which_is_not_bytes("write_frames", items, error) from None
    if status == PACKED_ALL:  # the common batch: one buffer, one write
        if data:
            write(data)
        return len(items)
    parts: list[BytesLike] = []
    try:
        while status == PACKED_UP_TO_LARGE:
            parts += (data, items[stop])
            try:
                data, stop, status = pack_frames(items, stop + 1, max_frame_length, large_frame)
            except TypeError as error:
                raise _which_is_not_bytes("write_frames", items, error) from None
        if data:
            parts.append(data)
        if status == STOPPED_AT_OVERSIZED:
            _checked_length(items[stop], max_frame_length)  # raises FrameTooLarge
    finally:  # what was encoded before an error is still written
        if writelines is not None and len(parts) > 1:
            writelines(parts)
        else:
            for part in parts:
                write(part)
    return len(items)
