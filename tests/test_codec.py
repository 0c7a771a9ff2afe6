"""The compiled codec loops and their pure-Python twins behave the same.

The rest of the suite runs with whichever the install selected (compiled
where it could be built); here both are compared on arbitrary input, and
the decoder's chunking property is checked with the pure-Python loops too.
"""

from __future__ import annotations

import gc
import struct
import subprocess
import sys
import weakref
from types import ModuleType
from typing import Any

import pytest
from codec_support import on_codec, read_through_buffer
from hypothesis import given, settings
from hypothesis import strategies as st

from framing import FrameDecoder, FrameTooLarge, FramingError, encode_frames, write_frames
from framing._codec import (
    ACCELERATED,
    PACKED_ALL,
    PACKED_UP_TO_LARGE,
    PURE,
    SELECTED,
    STOPPED_AT_OVERSIZED,
    py_pack_frames,
    py_split_frames,
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


@given(
    st.lists(st.binary(max_size=3000), max_size=15),
    st.lists(st.integers(min_value=1, max_value=5000), max_size=40),
)
@settings(max_examples=60)
def test_decoder_on_the_python_loops_splits_any_chunking(
    payloads: list[bytes], sizes: list[int]
) -> None:
    blob = bytes(encode_frames(payloads))
    with on_codec(PURE):
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
    with on_codec(PURE), pytest.raises(FrameTooLarge):
        write_frames(lambda b: written.append(bytes(b)), [b"ok", bytes(11)], max_frame_length=10)
    assert b"".join(written) == frames_blob([b"ok"])


def _read_all(
    wire: bytes, sizes: list[int], max_frame: int, large: int, views: bool
) -> tuple[list[bytes], list[tuple[int, int, int, bool]], str | None]:
    """Payloads, the decoder's state after each read, and the error, reading
    `wire` through get_buffer()/buffer_updated() in reads of `sizes`."""
    decoder = FrameDecoder(max_frame, buffer_size=40 * 1024, large_frame=large, views=views)
    frames: list[Any] = []
    states: list[tuple[int, int, int, bool]] = []

    def note_state() -> None:
        at = (decoder.buffered, decoder.frames_decoded, decoder._start)
        states.append((*at, decoder.ended_at_boundary))

    error = None
    try:
        read_through_buffer(decoder, wire, sizes, frames, note_state)
        decoder.end_of_stream()
    except FramingError as failure:
        error = f"{type(failure).__name__}: {failure}"
    return [bytes(p) for p in frames], states, error


@pytest.mark.skipif(not SELECTED.accelerated, reason="the C accelerator is not built here")
@given(
    st.lists(st.binary(max_size=2500), max_size=25),
    st.lists(st.integers(1, 9000), max_size=40),
    st.sampled_from([1000, 2499, 8 * 1024 * 1024]),
    st.sampled_from([600, 2048, 64 * 1024]),
    st.booleans(),
    st.binary(max_size=6),
)
@settings(max_examples=150, deadline=None)
def test_the_compiled_decoder_core_and_its_python_twin_agree(
    payloads: list[bytes],
    sizes: list[int],
    max_frame: int,
    large: int,
    views: bool,
    tail: bytes,
) -> None:
    """Same payloads, same state after every read, same error (oversize,
    truncated, from a random tail), whatever the chunking."""
    wire = bytes(encode_frames([p for p in payloads if len(p) <= max_frame])) + tail
    compiled = _read_all(wire, sizes, max_frame, large, views)
    with on_codec(PURE):
        pure = _read_all(wire, sizes, max_frame, large, views)
    assert compiled == pure


@pytest.mark.skipif(not SELECTED.accelerated, reason="the C accelerator is not built here")
def test_the_compiled_core_checks_what_python_code_could_set_wrong() -> None:
    decoder = FrameDecoder()
    assert SELECTED.decoder_core is not None and isinstance(decoder, SELECTED.decoder_core)
    with pytest.raises(ValueError, match="nbytes must be 0 or more"):
        decoder.buffer_updated(-1)
    with pytest.raises(TypeError, match="at most 1 argument"):
        decoder.get_buffer(1, 2)  # type: ignore[call-arg]
    room = decoder.get_buffer()
    with pytest.raises(ValueError, match="out of range"):
        decoder.buffer_updated(len(room) + 1)  # more than the room it was given
    del room
    for corrupt in (len(decoder._buf) + 1, -1):  # a bad offset is refused, not written past
        decoder._end = corrupt
        with pytest.raises(ValueError, match="out of range"):
            decoder.get_buffer()
    decoder._end = 0
    with pytest.raises(ValueError, match="out of range"):
        decoder.buffer_updated(sys.maxsize)  # would overflow the end offset
    decoder._buf = b"not a bytearray"  # type: ignore[assignment]
    with pytest.raises(TypeError, match="must be a bytearray"):
        decoder.get_buffer()
    decoder.failed = "not an exception"  # type: ignore[assignment]
    with pytest.raises(TypeError, match="must be an exception"):
        decoder.get_buffer()


class _Owner:
    """Something a decoder refers to, whose lifetime a weak reference can see."""

    def told(self, size: int) -> None:
        pass


def _failed_decoder_in_a_cycle() -> weakref.ref[_Owner]:
    owner = _Owner()
    decoder = FrameDecoder(max_frame_length=10)
    decoder.on_buffer_left = owner.told  # the decoder keeps the owner alive
    room = decoder.get_buffer()
    room[:4] = struct.pack(">I", 11)
    del room
    with pytest.raises(FrameTooLarge) as first:
        decoder.buffer_updated(4)
    with pytest.raises(FrameTooLarge) as again:
        decoder.get_buffer()
    assert again.value is first.value is decoder.failed
    # decoder.failed's traceback holds this frame, whose locals hold the decoder
    return weakref.ref(owner)


def test_a_failed_decoder_raises_its_error_again_and_is_collected() -> None:
    """The error is kept and raised by every later call; its traceback refers
    back to the decoder, a cycle the garbage collector must see and break."""
    owner = _failed_decoder_in_a_cycle()
    gc.collect()
    assert owner() is None
