"""Run framing on one codec: its compiled loops and decoder core, or their Python twins."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast
from unittest.mock import patch

from framing._codec import PURE, SELECTED, Codec
from framing.decoder import FrameDecoder, PyDecoderCore

CODECS = [PURE, *([SELECTED] if SELECTED.accelerated else [])]
CODEC_IDS = ["python", *(["compiled"] if SELECTED.accelerated else [])]


@contextmanager
def on_codec(codec: Codec) -> Iterator[None]:
    """Every loop the decoder and the encoder call, and the decoder's per-read
    pair (get_buffer, buffer_updated), taken from `codec` while inside."""
    core = cast(type[PyDecoderCore], codec.decoder_core or PyDecoderCore)
    with (
        patch("framing.decoder.split_frames", codec.split_frames),
        patch("framing.decoder.split_views", codec.split_views),
        patch("framing.decoder.buffer_exported", codec.buffer_exported),
        patch("framing.encoder.pack_frames", codec.pack_frames),
        patch.object(FrameDecoder, "get_buffer", core.get_buffer),
        patch.object(FrameDecoder, "buffer_updated", core.buffer_updated),
    ):
        yield


def read_through_buffer(
    decoder: FrameDecoder,
    wire: bytes,
    sizes: list[int],
    frames: list[Any] | None = None,
    after_read: Callable[[], None] | None = None,
) -> list[Any]:
    """What the event loop does: the 'kernel' writes `wire` into get_buffer()
    in reads of `sizes` (then 4096 bytes), each followed by buffer_updated().
    The payloads go into `frames` (a new list if None), so a caller that
    catches an error still has the ones before it; `after_read` runs after each."""
    frames = [] if frames is None else frames
    view, reads = memoryview(wire), iter(sizes)
    while view:
        room = decoder.get_buffer(-1)
        count = min(len(room), len(view), next(reads, 4096))
        room[:count] = view[:count]
        del room  # the loop lets go of it before the next read
        view = view[count:]
        frames += decoder.buffer_updated(count)
        if after_read is not None:
            after_read()
    return frames
