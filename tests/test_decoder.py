"""The sans-IO decoder: chunking independence, limits, end of stream, cost."""

from __future__ import annotations

import itertools
import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framing import (
    FrameDecoder,
    FrameTooLarge,
    TruncatedFrame,
    encode_frame,
    encode_frames,
)

payload_lists = st.lists(st.binary(max_size=3000), max_size=40)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def decode_chunks(chunks: list[bytes], **kwargs: Any) -> list[bytes]:
    decoder = FrameDecoder(**kwargs)
    frames = []
    for chunk in chunks:
        frames += [bytes(f) for f in decoder.feed(chunk)]
    decoder.end_of_stream()
    return frames


@given(payload_lists, st.lists(st.integers(min_value=0), max_size=60))
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    wire = bytes(encode_frames(payloads))
    assert decode_chunks(split(wire, cuts)) == payloads


@given(payload_lists)
@settings(max_examples=30)
def test_one_byte_chunks(payloads: list[bytes]) -> None:
    wire = bytes(encode_frames(payloads))
    assert decode_chunks([wire[i : i + 1] for i in range(len(wire))]) == payloads


@given(
    st.lists(st.binary(min_size=0, max_size=200_000), min_size=1, max_size=4),
    st.lists(st.integers(min_value=0), max_size=30),
)
@settings(max_examples=25, deadline=None)
def test_large_frames_take_the_zero_copy_path_and_still_agree(
    payloads: list[bytes], cuts: list[int]
) -> None:
    wire = bytes(encode_frames(payloads))
    assert decode_chunks(split(wire, cuts), large_frame=1024) == payloads


@given(payload_lists, st.lists(st.integers(min_value=1, max_value=70_000), max_size=50))
def test_get_buffer_path_matches_feed(payloads: list[bytes], read_sizes: list[int]) -> None:
    """The BufferedProtocol path: the 'kernel' writes into get_buffer()."""
    wire = memoryview(bytes(encode_frames(payloads)))
    decoder = FrameDecoder()
    frames: list[bytes] = []
    sizes = iter(read_sizes or [4096])
    while wire:
        room = decoder.get_buffer(-1)
        count = min(len(room), len(wire), next(sizes, 4096))
        room[:count] = wire[:count]
        wire = wire[count:]
        frames += [bytes(f) for f in decoder.buffer_updated(count)]
    decoder.end_of_stream()
    assert frames == payloads


def test_zero_length_frames() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"\0\0\0\0" * 1000) == [b""] * 1000
    decoder.end_of_stream()


def test_oversized_header_is_rejected_before_its_payload() -> None:
    decoder = FrameDecoder(max_frame_length=100)
    decoder.feed(struct.pack(">I", 101)[:3])  # incomplete header: nothing to judge yet
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(struct.pack(">I", 101)[3:])
    assert (info.value.declared, info.value.limit) == (101, 100)
    assert "101" in str(info.value) and "100" in str(info.value)
    assert decoder.buffered == 4  # only the header: no payload was kept


def test_max_declarable_header() -> None:
    with pytest.raises(FrameTooLarge) as info:
        FrameDecoder().feed(b"\xff\xff\xff\xff")
    assert info.value.declared == 0xFFFFFFFF


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    assert FrameDecoder(max_frame_length=10).feed(encode_frame(b"x" * 10)) == [b"x" * 10]


def test_decoder_stays_failed() -> None:
    decoder = FrameDecoder(max_frame_length=1)
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_frame(b"ab", 10))
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"more")
    assert decoder.failed is not None


def test_clean_end_at_a_frame_boundary() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"abc"))
    decoder.end_of_stream()  # no error


@pytest.mark.parametrize(
    ("wire", "buffered", "expected", "in_header"),
    [
        (b"\0\0", 2, 4, True),
        (encode_frame(b"hello")[:7], 3, 5, False),
        (encode_frame(b"x" * 100_000)[:50_004], 50_000, 100_000, False),  # large-frame path
    ],
)
def test_truncated_frame_reports_what_was_buffered(
    wire: bytes, buffered: int, expected: int, in_header: bool
) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(wire) == []
    with pytest.raises(TruncatedFrame) as info:
        decoder.end_of_stream()
    err = info.value
    assert (err.buffered, err.expected, err.in_header) == (buffered, expected, in_header)
    assert f"{buffered} of {expected}" in str(err)


def test_peer_is_named_in_the_message() -> None:
    err = FrameTooLarge(10, 5)
    err.peer = "127.0.0.1:4000"
    assert "peer 127.0.0.1:4000" in str(err)


def test_large_payload_is_its_own_buffer_filled_in_place() -> None:
    """A big frame is received into one bytearray: get_buffer() offers its tail."""
    decoder = FrameDecoder(large_frame=1024)
    header = struct.pack(">I", 10_000)
    assert decoder.feed(header + b"a" * 100) == []
    room = decoder.get_buffer(-1)
    assert len(room) == 10_000 - 100  # exactly the rest of the payload, nothing more
    room[:] = b"b" * len(room)
    (frame,) = decoder.buffer_updated(len(room))
    assert isinstance(frame, bytearray) and frame == b"a" * 100 + b"b" * 9_900


def test_64_mib_in_4_kib_pieces_allocates_the_frame_once() -> None:
    """Twisted's receiver concatenates per chunk (quadratic copying, and twice
    the frame in memory at the end); ours allocates the payload once and the
    kernel-side chunks are copied straight into it. Checked by allocation, not
    by time: the peak stays near one frame.
    """
    size = 64 << 20
    wire = memoryview(encode_frame(bytes(size), size))
    decoder = FrameDecoder(max_frame_length=size)
    tracemalloc.start()
    try:
        frames = []
        for i in range(0, len(wire), 4096):
            frames += decoder.feed(wire[i : i + 4096])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(frames) == 1 and len(frames[0]) == size
    assert peak < size + (2 << 20), f"peak {peak} for a {size}-byte frame"


def test_memory_per_connection_is_bounded_by_the_limit() -> None:
    decoder = FrameDecoder(max_frame_length=1 << 20)
    decoder.feed(struct.pack(">I", 1 << 20) + bytes(1000))
    assert decoder.buffered <= (1 << 20) + 4
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame_length=1 << 20).feed(struct.pack(">I", (1 << 20) + 1))


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_length=-1)
    with pytest.raises(ValueError):
        FrameDecoder(buffer_size=10)


def test_frames_before_an_oversized_header_are_delivered_first() -> None:
    decoder = FrameDecoder(max_frame_length=10)
    frames = decoder.feed(encode_frame(b"ok") + encode_frame(b"fine") + struct.pack(">I", 100))
    assert frames == [b"ok", b"fine"]
    assert isinstance(decoder.failed, FrameTooLarge)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"")
    with pytest.raises(FrameTooLarge):
        decoder.end_of_stream()


@given(
    st.lists(st.sampled_from([0, 1, 100, 65_535, 65_536, 70_000]), max_size=8),
    st.lists(st.integers(min_value=0), max_size=10),
)
@settings(max_examples=60)
def test_one_type_rule_whatever_the_chunking(sizes: list[int], cuts: list[int]) -> None:
    """Under large_frame (64 KiB) a payload is bytes; at 64 KiB or more a bytearray,
    also when the whole frame arrived in one read."""
    payloads = [bytes([n % 251]) * n for n in sizes]
    decoder = FrameDecoder()
    got = []
    for chunk in split(bytes(encode_frames(payloads)), cuts):
        got += decoder.feed(chunk)
    assert got == payloads
    assert [type(p) for p in got] == [bytearray if n >= 65_536 else bytes for n in sizes]


def test_a_large_frame_between_small_ones_in_one_read() -> None:
    wire = bytes(encode_frames([b"a", b"L" * 100_000, b"b", b"c"]))
    decoder = FrameDecoder()
    room = decoder.get_buffer(len(wire))
    room[: len(wire)] = wire
    frames = decoder.buffer_updated(len(wire))
    assert frames == [b"a", b"L" * 100_000, b"b", b"c"]
    assert [type(f) for f in frames] == [bytes, bytearray, bytes, bytes]
    assert not decoder.in_frame and decoder.frames_decoded == 4
