"""serve --proxy-protocol on loopback: header first, the client it names, refusals; peer, health."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import msgpack
import pytest
from reliability.support import (
    capture_server_logs,
    connect,
    log_lines,
    matrix,
    peer_of,
    read_frames,
    read_to_end,
    request,
)

from framelab.servers.config import IoStyle, LoopName, Mode, ServerConfig
from framelab.servers.runner import BackgroundServer
from framing import encode_frame
from framing.observer import NullObserver
from framing.proxy_protocol import InetAddress, v1_header, v2_header

CLIENT = InetAddress("10.232.0.1", 40000)
FRONTEND = InetAddress("10.232.0.254", 7000)


def proxied(mode: Mode = "msgpack", **options: object) -> ServerConfig:
    return ServerConfig(mode=mode, proxy_protocol=True, **options)  # type: ignore[arg-type]


@contextlib.contextmanager
def one_client(config: ServerConfig) -> Iterator[tuple[BackgroundServer, socket.socket]]:
    with BackgroundServer(config) as srv, connect((srv.host, srv.port)) as sock:
        yield srv, sock


def ask(sock: socket.socket, *ops: str) -> list[dict[str, object]]:
    sock.sendall(b"".join(request(op, None, i) for i, op in enumerate(ops)))
    return [msgpack.unpackb(f) for f in read_frames(sock, len(ops))]


@matrix
def test_the_peer_op_names_the_headers_client(loop: LoopName, io: IoStyle) -> None:
    config = proxied(loop=loop, io=io)
    with BackgroundServer(config) as srv, connect((srv.host, srv.port)) as sock:
        sock.sendall(v2_header("proxy", CLIENT, FRONTEND) + request("peer", None, 1))
        (reply,) = [msgpack.unpackb(f) for f in read_frames(sock, 1)]
        assert reply["ok"], reply
        assert reply["result"] == {
            "address": "10.232.0.1:40000",
            "host": "10.232.0.1",
            "port": 40000,
            "via": "proxy-protocol",
            "proxy": peer_of(sock),
            "server": f"{srv.host}:{srv.port}",
        }
        assert ask(sock, "echo")[0]["ok"]  # the connection goes on as usual


@matrix
def test_a_v1_header_in_one_byte_writes(loop: LoopName, io: IoStyle) -> None:
    wire = v1_header(CLIENT, FRONTEND) + request("peer", None, 1)
    with BackgroundServer(proxied(loop=loop, io=io)) as srv, connect((srv.host, srv.port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(wire)):
            s.send(wire[i : i + 1])
        (reply,) = [msgpack.unpackb(f) for f in read_frames(s, 1)]
    assert reply["result"]["address"] == "10.232.0.1:40000"


@pytest.mark.parametrize("mode", ["framed", "raw"])
def test_the_header_never_reaches_the_echo(mode: Mode) -> None:
    payload = encode_frame(b"after the header")
    with one_client(proxied(mode, log_reads=False)) as (_srv, sock):
        sock.sendall(v2_header("proxy", CLIENT, FRONTEND) + payload)
        sock.shutdown(socket.SHUT_WR)
        assert read_to_end(sock).data == payload


def test_local_health_checks_use_the_sockets_own_address() -> None:
    with BackgroundServer(proxied()) as srv, connect((srv.host, srv.port)) as sock:
        sock.sendall(v2_header("local"))
        peer, health = ask(sock, "peer", "health")
        assert peer["result"]["address"] == peer_of(sock)  # type: ignore[index]
    assert peer["result"]["via"] == "socket"  # type: ignore[index]
    assert health == {"id": 1, "ok": True, "result": "serving"}


@pytest.mark.parametrize(
    ("first_bytes", "reason"),
    [
        (request("peer"), "(garbage): neither a PROXY v1 nor a v2 signature"),
        (b"PROXY TCP4 10.0.0.1 10.0.0.2 99999 1\r\n", "(malformed): v1 port '99999'"),
        (b"PROXY " + b"x" * 200, "(oversized): no CRLF within 107 bytes"),
        (v2_header("proxy", CLIENT, FRONTEND)[:20], "(truncated): the stream ended inside"),
    ],
)
def test_a_connection_without_a_valid_header_never_reaches_the_handler(
    first_bytes: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server_logs(caplog)
    with BackgroundServer(proxied()) as srv:
        with connect((srv.host, srv.port)) as bad, connect((srv.host, srv.port)) as good:
            bad_name = peer_of(bad)
            bad.sendall(first_bytes)
            bad.shutdown(socket.SHUT_WR)
            ending = read_to_end(bad)
            assert ending.data == b""  # no reply: no handler ever saw it
            good.sendall(v1_header(CLIENT, FRONTEND))
            assert ask(good, "echo")[0]["ok"]  # others are still served
        srv.wait_for_connections(0)
    lines = log_lines(caplog, "bad PROXY protocol header", reason, f"peer {bad_name}")
    assert lines, [r.getMessage() for r in caplog.records]


def test_a_header_that_never_comes_times_out(caplog: pytest.LogCaptureFixture) -> None:
    capture_server_logs(caplog)
    with one_client(proxied(frame_timeout=0.3)) as (_srv, sock):
        sock.sendall(b"PROXY TCP4")
        started = time.monotonic()
        assert read_to_end(sock).data == b""
        waited = time.monotonic() - started
    assert 0.25 <= waited < 3
    assert log_lines(caplog, "no complete header 0.3 s after the connection opened", "10 header")


def test_errors_name_the_client_from_the_header(caplog: pytest.LogCaptureFixture) -> None:
    capture_server_logs(caplog)
    with one_client(proxied(max_frame=1000)) as (_srv, sock):
        sock.sendall(v2_header("proxy", CLIENT, FRONTEND) + b"\x00\x10\x00\x00")
        (last,) = read_to_end(sock).messages
    assert last["error"]["type"] == "frame_too_large"
    assert log_lines(caplog, "declares 1048576 bytes", "peer 10.232.0.1:40000")


def test_health_fails_while_draining_and_peer_without_a_proxy() -> None:
    with one_client(ServerConfig(mode="msgpack")) as (srv, sock):
        peer, health = ask(sock, "peer", "health")
        assert peer["result"] == {  # no PROXY protocol: the socket's own peer
            "address": peer_of(sock),
            "host": "127.0.0.1",
            "port": sock.getsockname()[1],
            "via": "socket",
            "proxy": None,
            "server": f"{srv.host}:{srv.port}",
        }
        assert health["result"] == "serving"

        def drain() -> None:
            srv.connections.draining = True

        srv.call(drain)
        (health,) = ask(sock, "health")
        assert health["ok"] is False
        assert health["error"]["type"] == "draining"  # type: ignore[index]
        assert ask(sock, "echo")[0]["ok"]  # draining still serves what comes


@pytest.mark.parametrize("io", ["protocol", "streams"])
def test_metrics_name_the_headers_client(io: IoStyle) -> None:
    class Opened(NullObserver):
        def __init__(self) -> None:
            self.peers: list[str] = []
            self.closed = threading.Event()

        def connection_opened(self, peer: str) -> None:
            self.peers.append(peer)

        def connection_closed(self, peer: str, error: BaseException | None) -> None:
            self.peers.append(peer)
            self.closed.set()

    observer = Opened()
    with one_client(proxied(io=io, observer=observer)) as (_srv, sock):
        sock.sendall(v2_header("proxy", CLIENT, FRONTEND))
        assert ask(sock, "echo")[0]["ok"]
        sock.close()
        assert observer.closed.wait(5)
    assert observer.peers == ["10.232.0.1:40000", "10.232.0.1:40000"]
