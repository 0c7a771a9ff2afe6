"""Client-side helpers for the reliability tests: blocking sockets that say
how a connection ended (FIN or RST), frame and msgpack shorthands, log search."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest

from framelab.servers.config import IoStyle, LoopName, ServerConfig
from framelab.servers.runner import BackgroundServer
from framing import FrameDecoder, encode_frame

LOOPS: list[LoopName] = ["uvloop", "asyncio"]
STYLES: list[IoStyle] = ["protocol", "streams"]
#: every test marked with it runs on both loops in both I/O styles
matrix = pytest.mark.parametrize(("loop", "io"), [(lp, io) for lp in LOOPS for io in STYLES])

Address = tuple[str, int]


def connect(address: Address, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def peer_of(sock: socket.socket) -> str:
    """The name the server's log gives this client."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def read_frames(sock: socket.socket, count: int) -> list[bytes]:
    """Exactly `count` frames (fewer only if the server closed first)."""
    decoder = FrameDecoder()
    frames: list[bytes] = []
    while len(frames) < count:
        data = sock.recv(1 << 20)
        if not data:
            break
        frames += [bytes(f) for f in decoder.feed(data)]
    return frames


@dataclass
class Ending:
    """Everything read until the server ended the connection, and how it did."""

    data: bytes
    reset: bool  # RST (ECONNRESET) rather than FIN

    @property
    def frames(self) -> list[bytes]:
        decoder = FrameDecoder()
        frames = [bytes(f) for f in decoder.feed(self.data)]
        decoder.end_of_stream()  # the server never cuts its own frames
        return frames

    @property
    def messages(self) -> list[Any]:
        return [msgpack.unpackb(f) for f in self.frames]


def read_to_end(sock: socket.socket) -> Ending:
    chunks = []
    try:
        while data := sock.recv(1 << 16):
            chunks.append(data)
    except ConnectionResetError:
        return Ending(b"".join(chunks), reset=True)
    return Ending(b"".join(chunks), reset=False)


def close_with_reset(sock: socket.socket) -> None:
    """close() that sends RST instead of FIN (SO_LINGER on, zero seconds)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def request(op: str, args: Any = None, request_id: Any = None) -> bytes:
    """One msgpack request as a frame."""
    return encode_frame(msgpack.packb({"op": op, "id": request_id, "args": args}))


def echo_works(sock: socket.socket, payload: bytes = b"still served") -> bool:
    sock.sendall(encode_frame(payload))
    return read_frames(sock, 1) == [payload]


def msgpack_echo_works(sock: socket.socket) -> bool:
    sock.sendall(request("echo", "still served", 99))
    (reply,) = [msgpack.unpackb(f) for f in read_frames(sock, 1)]
    return bool(reply == {"id": 99, "ok": True, "result": "still served"})


def log_lines(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    """Captured log messages containing every one of `parts`."""
    messages = [r.getMessage() for r in caplog.records]
    return [m for m in messages if all(p in m for p in parts)]


def capture_server_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The server logs refusals at INFO and bad framing at WARNING."""
    caplog.set_level(logging.INFO, logger="framelab.server")
    caplog.set_level(logging.INFO, logger="framing")


@contextlib.contextmanager
def serving(
    config: ServerConfig, clients: int = 1
) -> Iterator[tuple[BackgroundServer, list[socket.socket]]]:
    """An in-process server and `clients` sockets connected to it; all closed after."""
    with BackgroundServer(config) as srv, contextlib.ExitStack() as stack:
        yield srv, [stack.enter_context(connect((srv.host, srv.port))) for _ in range(clients)]


class Stream:
    """New connections one after another, each one request and its answer,
    in a thread until stopped; counts attempts and failures."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.attempts = 0
        self.failures: list[str] = []
        self._progress = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_for(self, attempts: int, timeout: float = 10.0) -> None:
        with self._progress:
            self._progress.wait_for(lambda: self.attempts >= attempts, timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._progress:
                self.attempts += 1
                self._progress.notify_all()
            payload = b"request %d" % self.attempts
            try:
                with connect(self.address) as sock:
                    sock.sendall(encode_frame(payload))
                    sock.shutdown(socket.SHUT_WR)
                    ending = read_to_end(sock)
                if ending.reset or ending.frames != [payload]:
                    self.failures.append(f"{payload!r}: {ending}")
            except OSError as error:
                self.failures.append(f"{payload!r}: {error!r}")
