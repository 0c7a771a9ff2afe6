"""Bad input: only the offending connection (or message) suffers, the error is
logged with the peer, the client learns why where the mode allows, and the
server closes with FIN (never RST) while everyone else keeps being served.
Every test runs on both loops in both I/O styles."""

from __future__ import annotations

import random
import socket
import struct

import msgpack
import pytest

from framelab.servers.config import IoStyle, LoopName, Mode, ServerConfig
from framelab.servers.modes import RefusalLog
from framing import encode_frame, encode_frames
from framing.decoder import DEFAULT_MAX_FRAME_LENGTH

from .support import (
    capture_server_logs,
    close_with_reset,
    connect,
    echo_works,
    log_lines,
    matrix,
    msgpack_echo_works,
    peer_of,
    read_frames,
    read_to_end,
    request,
    serving,
)

modes = pytest.mark.parametrize("mode", ["framed", "msgpack"])


def still_served(sock: socket.socket, mode: Mode) -> bool:
    return msgpack_echo_works(sock) if mode == "msgpack" else echo_works(sock)


@matrix
@modes
@pytest.mark.parametrize("declared", [1001, 0xFFFF_FFFF])
def test_a_header_over_the_limit_drops_only_that_client(
    loop: LoopName, io: IoStyle, mode: Mode, declared: int, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server_logs(caplog)
    config = ServerConfig(mode=mode, loop=loop, io=io, max_frame=1000)
    with serving(config, 2) as (_srv, (good, bad)):
        assert still_served(good, mode)
        # more input follows the bad header: the server must read and drop it, not RST
        bad.sendall(struct.pack(">I", declared) + bytes(300_000))
        ending = read_to_end(bad)
        assert not ending.reset
        if mode == "msgpack":
            (reply,) = ending.messages
            assert reply["ok"] is False and reply["error"]["type"] == "frame_too_large"
            assert str(declared) in reply["error"]["message"]
        else:
            assert ending.data == b""
        assert log_lines(caplog, peer_of(bad), f"declares {declared} bytes", "limit of 1000")
        assert still_served(good, mode)


@matrix
@modes
def test_random_garbage_drops_only_that_client(
    loop: LoopName, io: IoStyle, mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server_logs(caplog)
    garbage = random.Random(5).randbytes(64 * 1024)
    assert struct.unpack_from(">I", garbage)[0] > DEFAULT_MAX_FRAME_LENGTH  # reads as a huge header
    with serving(ServerConfig(mode=mode, loop=loop, io=io), 2) as (_srv, (good, bad)):
        bad.sendall(garbage)
        ending = read_to_end(bad)
        assert not ending.reset
        if mode == "msgpack":
            assert [m["error"]["type"] for m in ending.messages] == ["frame_too_large"]
        else:
            assert ending.data == b""
        assert log_lines(caplog, peer_of(bad), "over the limit")
        assert still_served(good, mode)


@matrix
@modes
@pytest.mark.parametrize(
    ("partial", "described"),
    [
        (b"\x00\x00", "2 of 4 header bytes"),
        (struct.pack(">I", 100) + bytes(10), "10 of 100 payload bytes"),
    ],
    ids=["in-header", "in-payload"],
)
def test_a_truncated_frame_then_eof(
    loop: LoopName,
    io: IoStyle,
    mode: Mode,
    partial: bytes,
    described: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture_server_logs(caplog)
    first = request("echo", "complete", 1) if mode == "msgpack" else encode_frame(b"complete")
    with serving(ServerConfig(mode=mode, loop=loop, io=io), 2) as (_srv, (good, bad)):
        bad.sendall(first + partial)
        bad.shutdown(socket.SHUT_WR)
        ending = read_to_end(bad)
        assert not ending.reset
        if mode == "msgpack":
            answered, last_words = ending.messages
            assert answered == {"id": 1, "ok": True, "result": "complete"}
            assert last_words["error"]["type"] == "truncated"
            assert described in last_words["error"]["message"]
        else:
            assert ending.frames == [b"complete"]  # what came before is still answered
        assert log_lines(caplog, peer_of(bad), "stream ended inside a frame", described)
        assert still_served(good, mode)


@matrix
def test_a_truncated_frame_then_reset(
    loop: LoopName, io: IoStyle, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server_logs(caplog)
    with serving(ServerConfig(mode="framed", loop=loop, io=io), 1) as (srv, (good,)):
        bad = connect((srv.host, srv.port))
        bad_peer = peer_of(bad)
        # one segment: once its first frame is echoed, the server has read the partial one too
        bad.sendall(encode_frame(b"complete") + struct.pack(">I", 100) + bytes(10))
        assert read_frames(bad, 1) == [b"complete"]
        close_with_reset(bad)
        assert srv.wait_for_connections(at_most=1) == 1
        assert log_lines(caplog, bad_peer, "connection lost inside a frame", "14 bytes")
        assert echo_works(good)


@matrix
def test_a_header_split_across_one_byte_writes(loop: LoopName, io: IoStyle) -> None:
    wire = encode_frame(b"slowly")
    with serving(ServerConfig(mode="framed", loop=loop, io=io), 1) as (_srv, (sock,)):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(wire)):
            sock.sendall(wire[i : i + 1])
        assert read_frames(sock, 1) == [b"slowly"]
        assert echo_works(sock)


@matrix
def test_thousands_of_empty_frames_are_echoed(loop: LoopName, io: IoStyle) -> None:
    count = 20_000
    with serving(ServerConfig(mode="framed", loop=loop, io=io), 1) as (_srv, (sock,)):
        sock.sendall(encode_frames([b""] * count))
        assert read_frames(sock, count) == [b""] * count
        assert echo_works(sock)


@matrix
def test_thousands_of_empty_messages_are_refused_and_the_log_stays_short(
    loop: LoopName, io: IoStyle, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server_logs(caplog)
    count = 5_000
    with serving(ServerConfig(mode="msgpack", loop=loop, io=io), 1) as (_srv, (sock,)):
        sock.sendall(encode_frames([b""] * count))
        replies = [msgpack.unpackb(f) for f in read_frames(sock, count)]
        assert {r["error"]["type"] for r in replies} == {"bad_message"}
        assert len(replies) == count
        assert msgpack_echo_works(sock)
        assert len(log_lines(caplog, peer_of(sock))) == RefusalLog.LIMIT + 1


NESTED = b"\x91" * 5000 + b"\x01"
BAD_MESSAGES: list[tuple[bytes, str, str]] = [
    (b"\xc1", "bad_message", "not msgpack"),
    (msgpack.packb({"op": "echo"}) + b"\x00", "bad_message", "trailing bytes"),
    (NESTED, "bad_message", "nested too deeply"),
    (b"\xdb\xff\xff\xff\xff", "bad_message", "bad message in a 5-byte frame"),  # str32 of 4 GiB
    (b"\xdd\xff\xff\xff\xff\x01", "bad_message", "bad message in a 6-byte frame"),  # array32
    (b"\xc6\x7f\xff\xff\xff", "bad_message", "bad message"),  # bin32 of 2 GiB
    (b"\xa2\xff\xfe", "bad_message", "not valid UTF-8"),
    (msgpack.packb({1: 2}), "bad_message", "bad message"),  # int key (strict_map_key)
    (msgpack.packb([1, 2]), "bad_message", 'string "op"'),
    (msgpack.packb({"op": 5}), "bad_message", 'string "op"'),
    (msgpack.packb({"op": "launch", "id": 7}), "unknown_op", "launch"),
    (msgpack.packb({"op": "sum", "id": 8, "args": "12"}), "bad_args", "list of numbers"),
    (msgpack.packb({"op": "sum", "id": 9, "args": [True]}), "bad_args", "list of numbers"),
    (msgpack.packb({"op": "sum", "args": [2**63, 2**63]}), "bad_args", "64-bit"),
    (msgpack.packb({"op": "sha256", "args": 5}), "bad_args", "bytes or a string"),
    (msgpack.packb({"op": "reverse", "args": {"a": 1}}), "bad_args", "reverse takes"),
]


@matrix
def test_bad_msgpack_messages_get_an_error_reply_and_the_connection_stays(
    loop: LoopName, io: IoStyle, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server_logs(caplog)
    payloads = [payload for payload, _, _ in BAD_MESSAGES]
    with serving(ServerConfig(mode="msgpack", loop=loop, io=io), 1) as (_srv, (sock,)):
        sock.sendall(encode_frames(payloads))
        replies = [msgpack.unpackb(f) for f in read_frames(sock, len(payloads))]
        for (payload, kind, text), reply in zip(BAD_MESSAGES, replies, strict=True):
            assert reply["ok"] is False, payload[:20]
            assert reply["error"]["type"] == kind, (payload[:20], reply)
            assert text in reply["error"]["message"], (payload[:20], reply)
        assert [r["id"] for r in replies[10:13]] == [7, 8, 9]  # request ids are echoed
        assert msgpack_echo_works(sock)
        refused = log_lines(caplog, peer_of(sock), "request refused")
        assert len(refused) == RefusalLog.LIMIT


@matrix
def test_a_reply_over_the_frame_limit_is_refused_not_fatal(loop: LoopName, io: IoStyle) -> None:
    config = ServerConfig(mode="msgpack", loop=loop, io=io, max_frame=1000)
    with serving(config) as (_srv, (sock,)):
        payload = msgpack.packb({"op": "echo", "args": b"x" * 983})
        assert len(payload) == 1000  # fits; its reply ({"id": nil, "ok": true, ...}) does not
        sock.sendall(encode_frame(payload))
        (reply,) = [msgpack.unpackb(f) for f in read_frames(sock, 1)]
        assert reply["error"]["type"] == "bad_message"
        assert "reply cannot be sent" in reply["error"]["message"]
        assert msgpack_echo_works(sock)
