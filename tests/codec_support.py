"""Run framing on one codec: its compiled loops and decoder core, or their Python twins."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast
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
