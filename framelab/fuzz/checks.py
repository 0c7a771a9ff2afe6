"""The properties the fuzzer and the property tests check, as plain functions.

- `check_decoder`: a byte stream, cut into pseudo-random chunks fed through
  both input paths (feed() and get_buffer()/buffer_updated()), must give
  exactly the frames and the error of `reference_decode`, a deliberately
  naive decoder; the only exceptions allowed are FrameTooLarge and
  TruncatedFrame; the decoder never holds more than its receive buffer plus
  one frame of at most the limit.
- `check_message`: any payload through an application built on the message
  layer (`framing.message_handler`) must give exactly one reply, a map with a
  boolean "ok", and raise nothing. The application is passed in: the lab's
  msgpack server in production (see target.py), anything else in a test.
Any other exception, or a failed assertion, is a finding.

Cost: linear in the input; the decoder check holds at most its receive buffer
plus one frame, the reference one copy of the stream.
"""

from __future__ import annotations

import random

import msgpack

from framing import BatchHandler, FrameDecoder, FrameTooLarge, FramingError, TruncatedFrame
from framing.decoder import DEFAULT_LARGE_FRAME, HEADER, Payload

FUZZ_BUFFER_SIZE = 32 * 1024  # the smallest allowed: compaction and overflow happen often
CHUNK_SIZES = (1, 2, 3, 4, 5, 7, 100, 4096, 20_000, 70_000)


def reference_decode(
    stream: bytes, max_frame: int
) -> tuple[list[bytes], type[FramingError] | None]:
    """The frames in `stream` and the error ending it, decoded the obvious way."""
    frames: list[bytes] = []
    pos = 0
    while len(stream) - pos >= HEADER.size:
        (length,) = HEADER.unpack_from(stream, pos)
        if length > max_frame:
            return frames, FrameTooLarge
        end = pos + HEADER.size + length
        if end > len(stream):
            return frames, TruncatedFrame
        frames.append(stream[pos + HEADER.size : end])
        pos = end
    return frames, (TruncatedFrame if pos < len(stream) else None)


def check_decoder(
    stream: bytes,
    max_frame: int,
    large_frame: int = DEFAULT_LARGE_FRAME,
    chunk_seed: int = 0,
    buffer_size: int = FUZZ_BUFFER_SIZE,
    views: bool = False,
) -> None:
    """Decode `stream` in pseudo-random chunks; assert it matches the reference.
    Every payload is kept to the end, so with `views` a lent payload that
    later input overwrote shows up as a mismatch."""
    rng = random.Random(chunk_seed)
    decoder = FrameDecoder(max_frame, buffer_size=buffer_size, large_frame=large_frame, views=views)
    bound = buffer_size + max_frame
    frames: list[Payload] = []
    error: FramingError | None = None
    src = memoryview(stream)
    try:
        while src:
            size = rng.choice(CHUNK_SIZES)
            if rng.random() < 0.5:
                frames += decoder.feed(src[:size])
                src = src[size:]
            else:
                room = decoder.get_buffer(size)
                assert len(room) <= max(buffer_size, max_frame), "a buffer over the bound"
                count = min(len(room), size, len(src))
                room[:count] = src[:count]
                room.release()  # as an event loop lets go of it before the next read
                src = src[count:]
                frames += decoder.buffer_updated(count)
            assert decoder.buffered <= bound, f"{decoder.buffered} bytes held, bound {bound}"
        decoder.end_of_stream()
    except (FrameTooLarge, TruncatedFrame) as exc:
        error = exc
    expected_frames, expected_error = reference_decode(stream, max_frame)
    got = [bytes(f) for f in frames]
    assert got == expected_frames, f"{len(got)} frames, expected {len(expected_frames)}"
    assert type(error) is (expected_error or type(None)), f"{error!r}, expected {expected_error}"


def check_message(payload: bytes, application: BatchHandler, max_frame: int) -> None:
    """One payload through `application`: exactly one well-formed reply of at
    most `max_frame` bytes."""
    replies = list(application([payload]) or [])
    assert len(replies) == 1, f"{len(replies)} replies to one request"
    assert len(replies[0]) <= max_frame
    reply = msgpack.unpackb(replies[0])
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
