"""SIGTERM: stop accepting, answer every frame already received, close with
FIN, exit 0; at the deadline abort what is left; a second signal forces exit.
The server runs as a child process (`framelab serve`), as in production."""

from __future__ import annotations

import fcntl
import functools
import logging
import signal
import socket
import struct
import termios
import threading
import time

import msgpack
import pytest

from framelab.servers.config import IoStyle, LoopName, Mode, ServerConfig
from framelab.servers.process import ServerProcess
from framelab.servers.runner import BackgroundServer
from framing import FrameDecoder, encode_frames

from .support import Ending, connect, matrix, read_frames, read_to_end

FRAMES = 2000
FILLER = bytes(range(256)) * 16  # 4 KiB: 8 MiB in all, far more than the buffers hold


def payload(mode: Mode, number: int) -> bytes:
    if mode == "msgpack":
        return bytes(msgpack.packb({"op": "echo", "id": number, "args": FILLER}))
    return struct.pack(">I", number) + FILLER


def sequence_number(mode: Mode, reply: bytes) -> int:
    if mode == "msgpack":
        message = msgpack.unpackb(reply)
        assert message["ok"] and message["result"] == FILLER
        number: int = message["id"]
        return number
    assert reply[4:] == FILLER
    return int(struct.unpack_from(">I", reply)[0])


def unacknowledged(sock: socket.socket) -> int:
    """Bytes sent but not yet acknowledged by the peer's kernel (SIOCOUTQ)."""
    raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    value: int = struct.unpack("i", raw)[0]
    return value


@matrix
@pytest.mark.parametrize("mode", ["framed", "msgpack"])
def test_sigterm_answers_every_frame_received_then_fin_and_exit_0(
    loop: LoopName, io: IoStyle, mode: Mode
) -> None:
    frames = [payload(mode, i) for i in range(FRAMES)]
    wire = encode_frames(frames)
    ends, offset = [], 0
    for frame in frames:
        offset += 4 + len(frame)
        ends.append(offset)
    args = ["--mode", mode, "--loop", loop, "--io", io, "--shutdown-timeout", "10"]
    with ServerProcess(args) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(server.address)
        # 1. send, without reading, until the kernel takes no more: the server
        #    has stopped reading (its replies are stuck), frames are in flight
        sock.setblocking(False)
        sent = 0
        try:
            while sent < len(wire):
                sent += sock.send(wire[sent : sent + 256 * 1024])
        except BlockingIOError:
            pass
        sock.settimeout(10)
        decoder = FrameDecoder()
        replies: list[bytes] = []
        while not replies:  # the server is working on them
            data = sock.recv(64 * 1024)
            assert data, "the server closed before replying"
            replies += [bytes(f) for f in decoder.feed(data)]
        # 2. every frame whose last byte the server's kernel acknowledged was received
        acked = sent - unacknowledged(sock)
        received = sum(1 for end in ends if end <= acked)
        server.send_signal(signal.SIGTERM)
        # 3. send the rest, and more after it, while reading every reply to the end:
        #    input arriving after the server's FIN must not turn its close into RST
        eof = threading.Event()
        more = threading.Thread(target=_keep_sending, args=(sock, wire[sent:], mode, eof))
        more.start()
        ending = read_to_end(sock)
        eof.set()
        more.join()
        sock.close()
        replies += [bytes(f) for f in decoder.feed(ending.data)]
        decoder.end_of_stream()
        assert not ending.reset, "the connection ended with RST, not FIN"
        numbers = [sequence_number(mode, r) for r in replies]
        assert numbers == list(range(len(numbers))), "a reply was lost, duplicated or reordered"
        assert len(numbers) >= received > 0
        assert server.wait(timeout=15) == 0
        assert any("shut down (0 connections aborted" in line for line in server.log)


def _keep_sending(sock: socket.socket, rest: bytes, mode: Mode, eof: threading.Event) -> None:
    """The rest of the frames, then one more every few milliseconds until
    the reader sees the end; the server may answer or drop the late ones."""
    try:
        sock.sendall(rest)
        number = FRAMES
        while not eof.wait(0.002):
            sock.sendall(encode_frames([payload(mode, number)]))
            number += 1
    except OSError:
        pass


def _stalled_client(server: ServerProcess) -> socket.socket:
    """A client with an answered frame and then half a frame, stalled."""
    sock = connect(server.address)
    sock.sendall(encode_frames([b"answered"]))
    assert read_frames(sock, 1) == [b"answered"]
    sock.sendall(struct.pack(">I", 100) + b"half")
    return sock


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_stalled_frame_is_aborted_at_the_deadline_and_exit_is_0(loop: LoopName) -> None:
    args = ["--mode", "framed", "--loop", loop, "--shutdown-timeout", "0.5"]
    args += ["--frame-timeout", "0"]
    with ServerProcess(args) as server:
        sock = _stalled_client(server)
        idle = connect(server.address)  # between frames: closed with FIN at once
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait_for_log("shutting down")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=5)
        assert read_to_end(idle) == Ending(b"", reset=False)
        assert read_to_end(sock).data == b""  # closed at the deadline, no reply for half a frame
        assert server.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert any("still open at the shutdown deadline" in line for line in server.log)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("io", ["protocol", "streams"])
def test_a_second_signal_forces_exit(loop: LoopName, io: IoStyle) -> None:
    args = ["--mode", "framed", "--loop", loop, "--io", io, "--shutdown-timeout", "60"]
    with ServerProcess(args) as server:
        sock = _stalled_client(server)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait_for_log("shutting down")
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 1
        assert time.monotonic() - started < 10  # far before the 60 s deadline
        assert any("second signal" in line for line in server.log)
        sock.close()


BURST = 120


def _burst(address: tuple[str, int], count: int = BURST) -> list[socket.socket]:
    """`count` clients, each connected (handshake done) with one frame sent."""
    clients = []
    for number in range(count):
        sock = connect(address)
        sock.sendall(encode_frames([b"burst %d" % number]))
        clients.append(sock)
    return clients


def _unanswered(clients: list[socket.socket]) -> list[int]:
    """The clients that did not get exactly their reply and then a FIN."""
    missing = []
    for number, sock in enumerate(clients):
        ending = read_to_end(sock)
        sock.close()
        if ending.reset or ending.frames != [b"burst %d" % number]:
            missing.append(number)
    return missing


def _hold_then_stop(srv: BackgroundServer, held: threading.Event, release: threading.Event) -> None:
    """Run on the server's loop: block it until released, then stop."""
    held.set()
    release.wait(10)
    srv.server.request_stop()


@matrix
def test_a_stop_right_after_a_burst_serves_every_queued_connection(
    loop: LoopName, io: IoStyle, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop is held busy while a burst connects, so every connection is
    still in the kernel's accept queue when the stop begins: each must be
    taken from the queue, answered and closed with FIN, and counted."""
    caplog.set_level(logging.INFO, logger="framelab.server")
    for _ in range(4):
        caplog.clear()
        config = ServerConfig(mode="framed", loop=loop, io=io, backlog=4 * BURST)
        with BackgroundServer(config) as srv:
            held, release = threading.Event(), threading.Event()
            hold = functools.partial(_hold_then_stop, srv, held, release)
            holder = threading.Thread(target=srv.call, args=(hold, 15))
            holder.start()
            held.wait(5)
            clients = _burst((srv.host, srv.port))
            release.set()
            assert _unanswered(clients) == []
            holder.join()
            drained = srv.server.drained
        assert srv.exit_code == 0
        # the loop may accept a few in its first tick after the hold, before the stop runs
        assert drained > BURST // 2, "the connections were in the accept queue at the stop"
        (line,) = [m for m in caplog.messages if "shutting down" in m]
        assert f"({drained} connections taken from the accept queue" in line
        assert f"finishing {BURST} connections" in line


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_sigterm_right_after_bursts_of_connects_leaves_none_unanswered(loop: LoopName) -> None:
    for _ in range(3):
        with ServerProcess(["--loop", loop, "--backlog", str(4 * BURST)]) as server:
            clients = _burst(server.address)
            server.send_signal(signal.SIGTERM)
            assert _unanswered(clients) == []
            assert server.wait(timeout=15) == 0
            line = server.wait_for_log("shutting down")
            assert f"finishing {BURST} connections" in line
