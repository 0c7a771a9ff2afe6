"""Every server mode on both loops and both I/O styles, and isolation of bad peers."""

from __future__ import annotations

import argparse
import socket
import struct
from collections.abc import Sequence
from typing import get_args

import msgpack
import pytest
from reliability.support import Ending, matrix, read_frames, read_to_end
from reliability.support import connect as connect_to

from framelab.servers.config import IoStyle, LoopName, Mode, ServerConfig, add_server_arguments
from framelab.servers.modes import FRAMED_MODES, MODES, server_mode
from framelab.servers.runner import BackgroundServer
from framing import (
    BytesLike,
    ErrorKind,
    FrameDecoder,
    FrameTimeout,
    NullObserver,
    encode_frame,
    encode_frames,
)


def connect(srv: BackgroundServer) -> socket.socket:
    return connect_to((srv.host, srv.port))


@matrix
def test_raw_echo(loop: LoopName, io: IoStyle) -> None:
    reads: list[int] = []
    config = ServerConfig(
        mode="raw", loop=loop, io=io, log_reads=False, on_read=lambda _p, n: reads.append(n)
    )
    with BackgroundServer(config) as srv, connect(srv) as sock:
        sock.sendall(b"hello " * 1000)
        assert sock.recv(6000, socket.MSG_WAITALL) == b"hello " * 1000
    assert sum(reads) == 6000


@matrix
def test_framed_echo_returns_every_frame(loop: LoopName, io: IoStyle) -> None:
    payloads = [b"", b"x", bytes(range(256)) * 4, b"y" * 300_000, b"z"]
    with BackgroundServer(ServerConfig(mode="framed", loop=loop, io=io)) as srv, connect(srv) as s:
        s.sendall(encode_frames(payloads))
        assert read_frames(s, len(payloads)) == payloads


@matrix
def test_msgpack_ops_and_errors(loop: LoopName, io: IoStyle) -> None:
    requests = [
        msgpack.packb({"op": "echo", "id": 1, "args": {"k": [1, 2]}}),
        msgpack.packb({"op": "sum", "id": 2, "args": [1, 2, 3.5]}),
        b"\xc1not msgpack",
        msgpack.packb({"op": "launch", "id": 3}),
        msgpack.packb({"op": "sum", "id": 4, "args": "nope"}),
        msgpack.packb({"op": "sha256", "id": 5, "args": b"abc"}),
    ]
    with BackgroundServer(ServerConfig(mode="msgpack", loop=loop, io=io)) as srv, connect(srv) as s:
        s.sendall(encode_frames(requests))
        replies = [msgpack.unpackb(f) for f in read_frames(s, len(requests))]
    assert replies[0] == {"id": 1, "ok": True, "result": {"k": [1, 2]}}
    assert replies[1]["result"] == 6.5
    assert replies[2]["error"]["type"] == "bad_message"
    assert replies[3]["error"]["type"] == "unknown_op" and replies[3]["id"] == 3
    assert replies[4]["error"]["type"] == "bad_args"
    assert replies[5]["result"].startswith("ba7816bf")


@matrix
def test_oversized_header_closes_only_the_offender(loop: LoopName, io: IoStyle) -> None:
    config = ServerConfig(mode="framed", loop=loop, io=io, max_frame=1000)
    with BackgroundServer(config) as srv, connect(srv) as good, connect(srv) as bad:
        good.sendall(encode_frame(b"before"))
        assert read_frames(good, 1) == [b"before"]
        bad.sendall(struct.pack(">I", 0xFFFFFFFF) + b"junk")
        assert read_to_end(bad) == Ending(b"", reset=False)  # closed with FIN, nothing echoed
        good.sendall(encode_frame(b"after"))
        assert read_frames(good, 1) == [b"after"]
        bad.close()
        assert srv.wait_for_connections(at_most=1) == 1  # the offender's state is released
        good.sendall(encode_frame(b"still"))
        assert read_frames(good, 1) == [b"still"]


@matrix
def test_msgpack_client_learns_why_it_was_dropped(loop: LoopName, io: IoStyle) -> None:
    """Requests complete before the bad header (same write) are answered first."""
    config = ServerConfig(mode="msgpack", loop=loop, io=io, max_frame=1000)
    good = msgpack.packb({"op": "echo", "id": 1, "args": "first"})
    with BackgroundServer(config) as srv, connect(srv) as sock:
        sock.sendall(encode_frame(good) + struct.pack(">I", 5000))
        frames = FrameDecoder().feed(read_to_end(sock).data)
    first, last = [msgpack.unpackb(f) for f in frames]
    assert first == {"id": 1, "ok": True, "result": "first"}
    assert last["ok"] is False and last["error"]["type"] == "frame_too_large"
    assert "5000" in last["error"]["message"] and "1000" in last["error"]["message"]


def test_connections_over_the_cap_are_closed_at_once() -> None:
    config = ServerConfig(mode="msgpack", max_connections=1)
    with BackgroundServer(config) as srv, connect(srv) as first:
        first.sendall(encode_frame(msgpack.packb({"op": "echo", "args": 1})))
        assert read_frames(first, 1)
        with connect(srv) as second:
            frames = FrameDecoder().feed(read_to_end(second).data)
        assert msgpack.unpackb(frames[0])["error"]["type"] == "busy"
        assert srv.connections.refused == 1


class CountingObserver(NullObserver):
    """Counts what a server's connections report (called on the server's thread)."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.frames_in_count = 0
        self.frames_out_count = 0
        self.errors: list[str] = []

    def connection_opened(self, peer: str) -> None:
        self.opened += 1

    def connection_closed(self, peer: str, error: BaseException | None) -> None:
        self.closed += 1

    def frames_in(self, frames: Sequence[BytesLike]) -> None:
        self.frames_in_count += len(frames)

    def frames_out(self, frames: Sequence[BytesLike]) -> None:
        self.frames_out_count += len(frames)

    def error(self, kind: ErrorKind, error: BaseException) -> None:
        self.errors.append(kind)


@matrix
def test_the_config_observer_sees_every_connection(loop: LoopName, io: IoStyle) -> None:
    observer = CountingObserver()
    config = ServerConfig(mode="msgpack", loop=loop, io=io, observer=observer)
    requests = [msgpack.packb({"op": "echo", "id": 1, "args": "x"}), b"\xc1"]
    with BackgroundServer(config) as srv:
        with connect(srv) as sock:
            sock.sendall(encode_frames(requests))
            assert len(read_frames(sock, 2)) == 2
        srv.wait_for_connections(0)
    assert (observer.opened, observer.closed) == (1, 1)
    assert (observer.frames_in_count, observer.frames_out_count) == (2, 2)
    assert observer.errors == ["bad_message"]


def test_modes_are_objects_chosen_once() -> None:
    raw, framed, packed = (server_mode(ServerConfig(mode=m)) for m in ("raw", "framed", "msgpack"))
    assert not raw.framed and framed.framed and packed.framed
    assert raw.error_reply(FrameTimeout(3, 1.0)) is None
    assert framed.busy_reply() is None  # raw frames carry no errors
    reply = packed.error_reply(FrameTimeout(3, 1.0))
    assert reply is not None and msgpack.unpackb(reply)["error"]["type"] == "timeout"
    busy = packed.busy_reply()
    assert busy is not None and msgpack.unpackb(busy)["error"]["type"] == "busy"
    assert sorted(MODES) == sorted(get_args(Mode))  # every --mode has its object


def test_the_idle_timeout_alias_is_gone() -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    assert parser.parse_args(["--frame-timeout", "5"]).frame_timeout == 5
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--idle-timeout", "5"])
    assert exited.value.code == 2


def test_framed_clients_offer_exactly_the_framed_modes() -> None:
    """A mode added once (servers/modes.py) reaches every client's --mode choices."""
    assert FRAMED_MODES == ("framed", "msgpack")
    assert all(server_mode(ServerConfig(mode=m)).framed for m in FRAMED_MODES)
    assert not server_mode(ServerConfig(mode="raw")).framed
