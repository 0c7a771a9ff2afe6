"""The message layer's no-copy path for large frames: same objects, same
errors as msgpack.unpackb, and in-place replies byte-equal to packb's."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framing.errors import MessageError
from framing.messages import LARGE_BIN, LARGE_MESSAGE, MessageCodec, message_handler

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=300)
)


def frame_of(obj: Any) -> bytearray:
    return bytearray(msgpack.packb(obj, use_bin_type=True))


def big_blob(size: int = LARGE_MESSAGE) -> bytes:
    return bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=8), scalars, max_size=4), st.integers(0, 2))
def test_large_map_decodes_like_unpackb(small: dict[str, Any], where: int) -> None:
    items = list(small.items())
    items.insert(min(where, len(items)), ("blob", big_blob()))
    obj = dict(items)
    decoded = MessageCodec().decode(frame_of(obj))
    assert decoded == msgpack.unpackb(msgpack.packb(obj, use_bin_type=True))
    assert isinstance(decoded["blob"], memoryview) and decoded["blob"].readonly


def test_small_bins_and_small_frames_stay_bytes() -> None:
    codec = MessageCodec()
    decoded = codec.decode(frame_of({"a": b"x" * (LARGE_BIN - 10), "pad": "y" * LARGE_MESSAGE}))
    assert type(decoded["a"]) is bytes
    assert type(codec.decode(frame_of({"a": b"x" * LARGE_BIN}))["a"]) is bytes  # small frame


@pytest.mark.parametrize(
    "obj",
    [
        [b"x" * LARGE_MESSAGE],  # not a map
        {"nested": {"blob": b"x" * LARGE_MESSAGE}},  # a container value
        {1: b"x" * LARGE_MESSAGE},  # a key strict_map_key refuses
    ],
)
def test_other_shapes_decode_or_fail_exactly_as_unpackb(obj: Any) -> None:
    payload = frame_of(obj)
    try:
        expected = msgpack.unpackb(bytes(payload), strict_map_key=True)
    except ValueError as error:
        with pytest.raises(MessageError) as info:
            MessageCodec().decode(payload)
        assert isinstance(info.value.__cause__, type(error))
    else:
        assert MessageCodec().decode(payload) == expected


def test_broken_large_frames_fail_with_the_same_reasons() -> None:
    good = frame_of({"id": 1, "args": big_blob()})
    cases = {
        "trailing": good + b"\x01",
        "truncated": good[:-1],
        "bad utf-8": frame_of({"id": 1, "args": big_blob()}).replace(b"\xa2id", b"\xa2\xff\xfe"),
    }
    for name, payload in cases.items():
        with pytest.raises(MessageError) as lending:
            MessageCodec().decode(payload)
        with pytest.raises(MessageError) as plain:
            msgpack_reason(payload)
        assert lending.value.reason == plain.value.reason, name


def msgpack_reason(payload: bytearray) -> None:
    """The old decode: unpackb with the options, nothing lent."""
    from framing.messages import _reason

    cap = 8 << 20
    try:
        msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_str_len=cap,
            max_bin_len=cap,
            max_array_len=cap,
            max_map_len=cap // 2,
            max_ext_len=cap,
        )
    except ValueError as error:
        raise MessageError(_reason(error), len(payload)) from error


def echo(request: Any) -> Any:
    return {"id": request["id"], "ok": True, "result": request["args"]}


def reject(error: MessageError) -> Any:
    return {"ok": False, "error": error.reason}


@pytest.mark.parametrize("size", [LARGE_MESSAGE, 1 << 20])
def test_echo_reply_is_written_in_place_and_equals_packb(size: int) -> None:
    request = frame_of({"op": "echo", "id": 70000, "args": big_blob(size)})
    handler = message_handler(MessageCodec(), echo, reject)
    (reply,) = list(handler([request]) or [])
    assert isinstance(reply, memoryview) and reply.obj is request  # no copy of the blob
    assert bytes(reply) == msgpack.packb(
        {"id": 70000, "ok": True, "result": big_blob(size)}, use_bin_type=True
    )


def test_a_frame_in_bytes_is_lent_read_only_and_answered_with_one_copy() -> None:
    request = bytes(frame_of({"op": "echo", "id": 7, "args": big_blob()}))
    codec = MessageCodec()
    assert isinstance(codec.decode(request)["args"], memoryview)
    handler = message_handler(MessageCodec(), echo, reject)
    (reply,) = list(handler([request]) or [])
    assert type(reply) is bytes
    assert reply == msgpack.packb({"id": 7, "ok": True, "result": big_blob()}, use_bin_type=True)


def test_no_room_for_the_envelope_falls_back_to_a_copy() -> None:
    request = frame_of({"a": big_blob()})  # 3 bytes before the blob
    handler = message_handler(MessageCodec(), lambda r: {"id": 1, "result": r["a"]}, reject)
    (reply,) = list(handler([request]) or [])
    assert not isinstance(reply, memoryview)
    assert reply == msgpack.packb({"id": 1, "result": big_blob()}, use_bin_type=True)


def test_envelope_never_overwrites_another_lent_view() -> None:
    first = b"\x01" * LARGE_BIN
    request = frame_of({"keep": first, "id": 5, "args": big_blob()})
    kept: list[Any] = []

    def handle(r: Any) -> Any:
        kept.append(r["keep"])
        return {"id": r["id"], "ok": True, "pad": "p" * 40, "result": r["args"]}

    handler = message_handler(MessageCodec(), handle, reject)
    (reply,) = list(handler([request]) or [])
    assert bytes(kept[0]) == first  # still intact: the envelope did not go in place
    assert not isinstance(reply, memoryview)
    assert msgpack.unpackb(bytes(reply))["result"] == big_blob()
