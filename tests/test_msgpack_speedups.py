"""The compiled msgpack calls give what msgpack gives, or leave it to msgpack.

framing/_msgpack_speedups.c must never accept what msgpack refuses, and for
whatever it accepts must return (or pack) exactly what msgpack would; its
batch call must answer a batch exactly as the Python loop does. Each is
checked here against msgpack itself, or against the pure-Python twin.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any
from unittest.mock import patch

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framelab.servers import msgpack_app
from framing import MessageCodec, message_handler
from framing import _msgpack_codec as codec_module
from framing._msgpack_codec import py_pack_envelope, py_unpack_lending
from framing.decoder import Payload
from framing.messages import LARGE_BIN, _unpackb_or_unhandled


def compiled() -> ModuleType:
    try:
        from framing import _msgpack_speedups  # type: ignore[attr-defined]
    except ImportError:
        pytest.skip("the msgpack accelerator is not built here (no compiler at install)")
    return _msgpack_speedups  # type: ignore[no-any-return]


def packb(obj: Any) -> bytes:
    return msgpack.Packer(use_bin_type=True).pack(obj)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=300)
    | st.sampled_from(["op", "id", "args", "echo", "x" * 31, "y" * 32, "z" * 255, "w" * 256])
)
keys = st.text(max_size=30) | st.binary(max_size=8)
objects = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=18)
        | st.dictionaries(keys, inner, max_size=18)
        | st.tuples(inner, inner)
    ),
    max_leaves=60,
)


def same(a: Any, b: Any) -> bool:
    """Equal as msgpack sees them: types and values (NaN equal to itself)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(objects)
def test_pack_is_the_packers(obj: Any) -> None:
    c = compiled()
    assert c.pack(obj) == packb(obj)


@given(objects)
def test_unpack_of_a_packed_object_is_unpackbs(obj: Any) -> None:
    c = compiled()
    data = packb(obj)
    result = c.unpack(data)
    assert result is not c.UNHANDLED  # every shape of `objects` is one it decodes
    assert same(result, msgpack.unpackb(data))
    assert same(c.unpack(bytearray(data)), result)
    assert same(c.unpack(memoryview(data)), result)


def mangled(data: bytes, draw: st.DataObject) -> bytes:
    """Packed bytes cut short, extended, or with a byte replaced."""
    how = draw.draw(st.sampled_from(["cut", "extend", "replace"]))
    if how == "cut" and data:
        return data[: draw.draw(st.integers(0, len(data) - 1))]
    if how == "extend":
        return data + draw.draw(st.binary(min_size=1, max_size=4))
    if not data:
        return data
    at = draw.draw(st.integers(0, len(data) - 1))
    return data[:at] + bytes([draw.draw(st.integers(0, 255))]) + data[at + 1 :]


@given(st.one_of(st.binary(max_size=60), objects.map(packb)), st.data())
@settings(max_examples=400)
def test_unpack_never_accepts_what_unpackb_refuses(data: bytes, draw: st.DataObject) -> None:
    c = compiled()
    data = mangled(data, draw)
    result = c.unpack(data)
    try:
        expected = msgpack.unpackb(data)
    except (ValueError, TypeError):
        assert result is c.UNHANDLED
    else:
        assert result is c.UNHANDLED or same(result, expected)


def test_what_unpack_leaves_to_msgpack() -> None:
    c = compiled()
    unhandled = [
        b"",
        b"\xc1",  # never used
        b"\xd4\x01\x00",  # fixext
        b"\xc7\x01\x05x",  # ext 8
        b"\x81\x01\x02",  # an int map key (msgpack: strict_map_key)
        b"\xa2\xff\xfe",  # not UTF-8
        b"\x01\x02",  # trailing bytes
        b"\xdd\xff\xff\xff\xff",  # an array longer than its input
        b"\x91" * 70 + b"\x01",  # deeper than the compiled limit
    ]
    for data in unhandled:
        assert c.unpack(data) is c.UNHANDLED, data
    assert c.unpack("not bytes") is c.UNHANDLED
    assert c.pack(2**64) is c.UNHANDLED  # the Packer raises OverflowError for it
    assert c.pack(-(2**63) - 1) is c.UNHANDLED
    assert c.pack(object()) is c.UNHANDLED
    assert c.pack("\ud800") is c.UNHANDLED  # a lone surrogate: no UTF-8
    assert c.pack(msgpack.ExtType(1, b"x")) is c.UNHANDLED
    assert c.pack(True) == b"\xc3" and c.pack(1) == b"\x01"  # bool is not packed as int


lending_maps = st.dictionaries(
    st.text(max_size=8) | st.binary(max_size=4),
    st.one_of(
        st.none(),
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=20),
        st.binary(max_size=40),
        st.integers(LARGE_BIN - 8, LARGE_BIN + 8).map(lambda n: b"\x07" * n),
        st.integers(60_000, 70_000).map(lambda n: b"\x08" * n),
    ),
    max_size=5,
)


def lent_shape(result: Any) -> Any:
    """(map with views marked, offsets) to compare two lendings."""
    if result is codec_module.UNHANDLED:
        return "unhandled"
    obj, loans = result
    marked = {k: ("view", bytes(v)) if isinstance(v, memoryview) else v for k, v in obj.items()}
    return marked, [(bytes(view), start) for view, start in loans]


@given(lending_maps, st.data())
@settings(max_examples=150)
def test_lending_twins_agree(obj: dict[Any, Any], draw: st.DataObject) -> None:
    c = compiled()
    data = packb(obj)
    if draw.draw(st.booleans()):
        data = mangled(data, draw)
    view = memoryview(bytearray(data)).toreadonly()
    compiled_result = c.unpack_lending(view, LARGE_BIN)
    assert lent_shape(compiled_result) == lent_shape(py_unpack_lending(view, LARGE_BIN))
    if compiled_result is not c.UNHANDLED:
        lent_obj, loans = compiled_result
        assert lent_obj == msgpack.unpackb(data)
        for lent, start in loans:
            assert lent.readonly and bytes(view[start : start + len(lent)]) == bytes(lent)


@given(
    st.dictionaries(st.text(max_size=8), objects, min_size=0, max_size=4),
    st.text(max_size=8),
    st.integers(0, 70_000),
)
@settings(max_examples=100)
def test_envelope_twins_agree_and_complete_the_reply(
    head: dict[str, Any], last_key: str, length: int
) -> None:
    c = compiled()
    reply = {**{k: v for k, v in head.items() if k != last_key}, last_key: b"\x05" * length}
    envelope = c.pack_envelope(reply, length)
    assert envelope == py_pack_envelope(reply, length)
    assert envelope + reply[last_key] == packb(reply)


# -- the batch call against the Python loop --------------------------------


def requests_handler(pure: bool, by_fields: bool, limit: int = 4096) -> Any:
    """The msgpack server's batch handler: compiled batch or Python loop."""
    codec = MessageCodec(limit)
    requests = msgpack_app.Requests()
    kwargs: dict[str, Any] = {}
    if by_fields:
        kwargs = {
            "fields": requests.FIELDS,
            "handle_fields": requests.handle_fields,
            "reply_fields": requests.REPLY_FIELDS,
        }
    if pure:
        codec._unpack, codec._pack = _unpackb_or_unhandled, codec._packer_pack
        with patch.object(codec_module, "answer", None):
            return message_handler(
                codec, requests.handle, msgpack_app.reply_to_bad_message, **kwargs
            )
    return message_handler(codec, requests.handle, msgpack_app.reply_to_bad_message, **kwargs)


request_ids = st.one_of(
    st.none(), st.integers(-5, 2**40), st.text(max_size=5), st.binary(max_size=3)
)
requests_strategy = st.one_of(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["echo", "sum", "reverse", "sha256", "nope", "peer", "health"])},
        optional={"id": request_ids, "args": objects},
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("sum"),
            "id": request_ids,
            "args": st.lists(st.integers(-(2**63), 2**64 - 1), max_size=3),
        }
    ),
    st.fixed_dictionaries(
        {"op": st.just("echo"), "id": request_ids, "args": objects, "extra": st.none()}
    ),
    st.fixed_dictionaries({"op": st.integers(-9, 9) | st.none() | st.lists(st.none())}),
    objects,
)
frames_strategy = st.one_of(
    requests_strategy.map(packb),
    requests_strategy.map(lambda obj: bytearray(packb(obj))),  # frames received in pieces
    st.binary(max_size=20),
    st.just(
        b"\x83\xa2op\xa4echo\xa2id\x01\xa4args" + b"\xc5\x10\x00" + b"a" * 4096
    ),  # over the limit
)


@given(st.lists(frames_strategy, max_size=12))
@settings(max_examples=300)
def test_compiled_batch_answers_as_the_python_loop(frames: list[bytes | bytearray]) -> None:
    compiled()
    expected = [bytes(r) for r in requests_handler(pure=True, by_fields=False)(copies(frames))]
    for by_fields in (False, True):
        got = requests_handler(pure=False, by_fields=by_fields)(copies(frames))
        assert [bytes(r) for r in got] == expected


def copies(frames: list[bytes | bytearray]) -> list[bytes | bytearray]:
    """Frames of their own: an in-place reply writes into its request."""
    return [bytearray(f) if isinstance(f, bytearray) else f for f in frames]


BIG = 64 * 1024
big_bins = st.integers(BIG, BIG + 4000).map(lambda n: b"\x09" * n)
large_requests = st.one_of(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["echo", "reverse", "sha256", "nope"]), "args": big_bins},
        optional={"id": request_ids},
    ),
    st.fixed_dictionaries({"args": big_bins, "id": request_ids, "op": st.just("echo")}),
    st.fixed_dictionaries({"op": st.just("echo"), "id": big_bins, "args": big_bins}),
    st.fixed_dictionaries({"op": st.just("echo"), "args": big_bins, "extra": st.none()}),
    st.fixed_dictionaries({"op": st.just("echo"), "args": st.lists(st.none()), "id": big_bins}),
)


@given(
    st.lists(large_requests.map(lambda obj: bytearray(packb(obj))) | frames_strategy, max_size=4)
)
@settings(max_examples=60, deadline=None)
def test_large_requests_are_answered_as_the_python_loop_and_in_place(
    frames: list[bytes | bytearray],
) -> None:
    compiled()
    limit = BIG + 10_000
    expected = [bytes(r) for r in requests_handler(True, False, limit)(copies(frames))]
    mine = copies(frames)
    got = requests_handler(False, True, limit)(mine)
    assert [bytes(r) for r in got] == expected
    for reply in got:  # an echo of a large bin is a view of its request: no copy
        if isinstance(reply, memoryview):
            assert any(reply.obj is frame for frame in mine)


def test_compiled_batch_skips_none_replies_and_propagates_handler_errors() -> None:
    compiled()
    seen: list[Any] = []

    def handle(obj: Any) -> Any:
        seen.append(obj)
        if obj == "boom":
            raise RuntimeError("handler failed")
        return None if obj == "quiet" else obj

    handler = message_handler(MessageCodec(), handle, msgpack_app.reply_to_bad_message)
    frames: list[Payload] = [packb("quiet"), packb([1, 2])]
    assert handler(frames) == [packb([1, 2])]
    with pytest.raises(RuntimeError, match="handler failed"):
        handler([packb("boom"), packb(1)])
    assert seen == ["quiet", [1, 2], "boom"]  # nothing after the failure ran


def test_a_tuple_reply_is_the_map_of_reply_fields_and_other_tuples_are_arrays() -> None:
    compiled()
    handler = message_handler(
        MessageCodec(),
        lambda obj: (1, 2, 3),
        msgpack_app.reply_to_bad_message,
        fields=("a",),
        handle_fields=lambda a: (a, "x") if a != "arr" else (a,),
        reply_fields=("v", "w"),
    )
    frames: list[Payload] = [packb({"a": 7}), packb({"a": "arr"}), packb({"b": 1})]
    assert handler(frames) == [packb({"v": 7, "w": "x"}), packb(["arr"]), packb([1, 2, 3])]


def test_answer_refuses_fields_it_cannot_match() -> None:
    c = compiled()
    with pytest.raises(TypeError, match="ASCII"):
        c.answer([], 0, ("é",), print, None, 10, 10, 10, [])
    with pytest.raises(TypeError, match="at most"):
        c.answer([], 0, tuple(f"k{i}" for i in range(17)), print, None, 10, 10, 10, [])


def test_a_reply_over_the_limit_is_left_to_the_caller_with_its_frame() -> None:
    c = compiled()
    out: list[bytes] = []
    frames = [packb(1), packb(2)]
    stop, reply = c.answer(frames, 0, None, lambda obj: "x" * (obj * 10), None, 100, 15, 10, out)
    assert (stop, reply, out) == (1, "x" * 20, [packb("x" * 10)])


def test_a_repeated_key_counts_once_with_its_last_value_as_in_a_dict() -> None:
    c = compiled()
    repeated = b"\x83\xa2op\xa4echo\xa2op\xa3sum\xa4args\x92\x01\x02"  # "op" twice
    assert c.unpack(repeated) == msgpack.unpackb(repeated) == {"op": "sum", "args": [1, 2]}
    for by_fields in (False, True):
        reply = requests_handler(pure=False, by_fields=by_fields)([repeated])
        assert reply == [packb({"id": None, "ok": True, "result": 3})]
