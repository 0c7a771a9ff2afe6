"""Encoder and msgpack message layer."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from framing import (
    FrameDecoder,
    FrameTooLarge,
    MessageCodec,
    MessageError,
    encode_frame,
    encode_frames,
    frame_header,
    write_frames,
)
from framing.encoder import (
    WRITEV_AS_IS,
)


def test_wire_format_is_big_endian_length_then_payload() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"
    assert frame_header(b"x" * 258) == b"\x00\x00\x01\x02"


def test_batch_is_one_buffer_equal_to_the_single_frames() -> None:
    payloads = [b"a", b"", b"bc" * 100]
    assert bytes(encode_frames(payloads)) == b"".join(encode_frame(p) for p in payloads)


def test_encoder_refuses_payload_over_the_limit() -> None:
    with pytest.raises(FrameTooLarge) as info:
        encode_frame(b"x" * 11, max_frame_length=10)
    assert info.value.encoding and info.value.declared == 11
    with pytest.raises(FrameTooLarge):
        encode_frames([b"ok", b"x" * 11], max_frame_length=10)


def test_write_frames_passes_large_payloads_uncopied() -> None:
    big = bytearray(100_000)
    writes: list[Any] = []
    count = write_frames(writes.append, [b"a", big, b"b"], large_frame=65536)
    assert count == 3
    assert any(w is big for w in writes)  # the very object, not a copy
    wire = b"".join(bytes(w) for w in writes)
    assert FrameDecoder().feed(wire) == [b"a", big, b"b"]
    assert len(writes) == 3  # small+header, big, small


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(json_like)
def test_messages_round_trip(obj: Any) -> None:
    codec = MessageCodec()
    assert codec.decode(codec.encode(obj)) == obj


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb(1) + b"x", "trailing bytes"),
        (b"\x91" * 5000 + b"\xc0", "nested too deeply"),
        (b"\xdb\xff\xff\xff\xff", "truncated msgpack object"),
        (b"\xdd\xff\xff\xff\xff", "exceeds max_array_len"),
        (b"\xa2\xff\xfe", "UTF-8"),
        (msgpack.packb({1: 2}), "map key"),
    ],
)
def test_bad_messages_name_what_is_wrong(payload: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        MessageCodec().decode(payload)
    assert reason in str(info.value)
    assert info.value.payload_length == len(payload)


def test_a_bad_message_leaves_the_stream_in_sync() -> None:
    codec = MessageCodec()
    wire = encode_frames([codec.encode({"a": 1}), b"\xc1garbage", codec.encode([2])])
    results = []
    for frame in FrameDecoder().feed(wire):
        try:
            results.append(codec.decode(frame))
        except MessageError:
            results.append("error")
    assert results == [{"a": 1}, "error", [2]]


def test_encode_refuses_a_message_larger_than_a_frame() -> None:
    with pytest.raises(FrameTooLarge):
        MessageCodec(max_frame_length=10).encode("x" * 100)


def ignore(_data: object) -> None:
    pass


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: encode_frame("hello"), "encode_frame: payload must be bytes"),  # type: ignore[arg-type]
        (lambda: frame_header("hello"), "frame_header: payload must be bytes"),  # type: ignore[arg-type]
        (lambda: encode_frames([b"ok", "no"]), r"encode_frames: payloads\[1\] must be bytes"),  # type: ignore[list-item]
        (lambda: write_frames(ignore, ["no"]), r"write_frames: payloads\[0\] must be bytes"),  # type: ignore[list-item]
        (lambda: MessageCodec().decode("abc"), "MessageCodec.decode: payload must be bytes"),  # type: ignore[arg-type]
    ],
    ids=["encode_frame", "frame_header", "encode_frames", "write_frames", "decode"],
)
def test_a_str_where_bytes_belong_is_the_callers_type_error(call: Any, named: str) -> None:
    with pytest.raises(TypeError, match=named) as info:
        call()
    assert not isinstance(info.value, MessageError)  # not reported as bad data from a peer
    assert "not str" in str(info.value)


def test_decoding_an_empty_frame_says_empty_frame() -> None:
    with pytest.raises(MessageError, match="empty frame") as info:
        MessageCodec().decode(b"")
    assert info.value.payload_length == 0


def test_the_library_knows_its_version() -> None:
    import framing

    assert framing.__version__ and framing.__version__[0].isdigit()


@given(
    sizes=st.lists(st.sampled_from([0, 5, 16 * 1024 - 1, 16 * 1024, 70_000]), max_size=8),
    gathering=st.booleans(),
)
def test_write_frames_sends_the_same_bytes_in_one_gathering_write(
    sizes: list[int], gathering: bool
) -> None:
    """With writelines (a writev) the batch is one call and payloads of
    WRITEV_AS_IS bytes or more go out as they are; the bytes on the wire are
    encode_frames' either way."""
    payloads = [bytes([i]) * size for i, size in enumerate(sizes)]
    calls: list[list[Any]] = []
    write_frames(
        lambda b: calls.append([b]),
        payloads,
        large_frame=65536,
        writelines=calls.append if gathering else None,
    )
    assert b"".join(bytes(part) for call in calls for part in call) == encode_frames(payloads)
    as_is = WRITEV_AS_IS if gathering else 65536
    uncopied = [p for call in calls for p in call if any(p is q for q in payloads)]
    assert uncopied == [p for p in payloads if len(p) >= as_is]
    if gathering:
        assert len(calls) <= 1
