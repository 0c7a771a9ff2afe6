"""The compiled codec loops and their pure-Python twins behave the same.

The rest of the suite runs with whichever the install selected (compiled
where it could be built); here both are compared on arbitrary input, and
the decoder's chunking property is checked with the pure-Python loops too.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framing import FrameDecoder, FrameTooLarge, encode_frames, write_frames
from framing._codec import (
    ACCELERATED,
    PACKED_ALL,
    PACKED_UP_TO_LARGE,
    STOPPED_AT_OVERSIZED,
    py_buffer_exported,
    py_pack_frames,
    py_split_frames,
    py_split_views,
)


def compiled() -> ModuleType:
    try:
        from framing import _speedups  # type: ignore[attr-defined]
    except ImportError:
        pytest.skip("the C accelerator is not built here (no compiler at install)")
    return _speedups  # type: ignore[no-any-return]


def frames_blob(payloads: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in payloads)


@given(
    st.lists(st.binary(max_size=300), max_size=20),
    st.binary(max_size=8),
    st.integers(0, 400),
    st.data(),
)
def test_split_twins_agree(
    payloads: list[bytes], tail: bytes, limit: int, data: st.DataObject
) -> None:
    c = compiled()
    buf = memoryview(bytearray(frames_blob(payloads) + tail))
    start = data.draw(st.integers(0, len(buf)))
    end = data.draw(st.integers(start, len(buf)))
    assert c.split_frames(buf, start, end, limit) == py_split_frames(buf, start, end, limit)


@given(
    st.lists(st.binary(max_size=200), max_size=20),
    st.integers(0, 250),
    st.integers(0, 250),
    st.data(),
)
def test_pack_twins_agree(
    payloads: list[bytes], limit: int, large: int, data: st.DataObject
) -> None:
    c = compiled()
    kinds = data.draw(
        st.lists(
            st.sampled_from([bytes, bytearray, memoryview]),
            min_size=len(payloads),
            max_size=len(payloads),
        )
    )
    items = [kind(p) for kind, p in zip(kinds, payloads, strict=True)]
    start = data.draw(st.integers(0, len(items)))
    got = c.pack_frames(items, start, limit, large)
    want = py_pack_frames(items, start, limit, large)
    assert (bytes(got[0]), got[1], got[2]) == (bytes(want[0]), want[1], want[2])


def test_pack_statuses() -> None:
    big, small = bytes(100), b"abc"
    for pack in (py_pack_frames, *([compiled().pack_frames] if ACCELERATED else [])):
        assert pack([small], 0, 1000, 50) == (frames_blob([small]), 1, PACKED_ALL)
        data, stop, status = pack([small, big, small], 0, 1000, 50)
        assert (bytes(data), stop, status) == (
            frames_blob([small]) + struct.pack(">I", 100),
            1,
            PACKED_UP_TO_LARGE,
        )
        data, stop, status = pack([small, big], 0, 99, 1000)
        assert (bytes(data), stop, status) == (frames_blob([small]), 1, STOPPED_AT_OVERSIZED)


def test_payload_buffer_is_a_bytearray_of_the_size() -> None:
    buffer = compiled().payload_buffer(1 << 20)
    assert isinstance(buffer, bytearray) and len(buffer) == 1 << 20
    with pytest.raises(ValueError):
        compiled().payload_buffer(-1)


def test_environment_variable_forces_the_python_loops() -> None:
    code = "import framing._codec as c; print(c.ACCELERATED, c.split_frames.__module__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"FRAMELAB_PURE_PYTHON": "1", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "framing._codec"]


@contextmanager
def pure_python_loops() -> Iterator[None]:
    with (
        patch("framing.decoder.split_frames", py_split_frames),
        patch("framing.decoder.split_views", py_split_views),
        patch("framing.decoder.buffer_exported", py_buffer_exported),
        patch("framing.encoder.pack_frames", py_pack_frames),
    ):
        yield


@given(
    st.lists(st.binary(max_size=3000), max_size=15),
    st.lists(st.integers(min_value=1, max_value=5000), max_size=40),
)
@settings(max_examples=60)
def test_decoder_on_the_python_loops_splits_any_chunking(
    payloads: list[bytes], sizes: list[int]
) -> None:
    blob = bytes(encode_frames(payloads))
    with pure_python_loops():
        decoder = FrameDecoder(large_frame=2048, buffer_size=64 * 1024)
        got: list[bytes] = []
        pos = 0
        for size in [*sizes, len(blob)]:
            got += [bytes(f) for f in decoder.feed(blob[pos : pos + size])]
            pos += size
        decoder.end_of_stream()
    assert got == payloads


def test_encoder_on_the_python_loops_refuses_oversize_after_the_frames_before() -> None:
    written: list[bytes] = []
    with pure_python_loops(), pytest.raises(FrameTooLarge):
        write_frames(lambda b: written.append(bytes(b)), [b"ok", bytes(11)], max_frame_length=10)
    assert b"".join(written) == frames_blob([b"ok"])
