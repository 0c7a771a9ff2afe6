"""Hostile or broken clients: slow loris, clients that never read, connection
floods, running out of descriptors, clients killed mid-frame. The server must
keep serving everyone else within bounded memory, CPU and descriptors."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

import msgpack
import pytest

from framelab.servers.config import IoStyle, LoopName, Mode, ServerConfig
from framelab.servers.process import ServerProcess
from framelab.servers.runner import BackgroundServer
from framing import encode_frame

from .support import (
    LOOPS,
    STYLES,
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
)

MiB = 1024 * 1024
TIMER_GRANULARITY = 0.002  # seconds; libuv's clock ticks in milliseconds


# -- slow loris ----------------------------------------------------------------
@matrix
@pytest.mark.parametrize("mode", ["framed", "msgpack"])
@pytest.mark.parametrize("how", ["stall", "trickle"])
def test_a_frame_that_never_completes_is_dropped_after_the_timeout(
    loop: LoopName, io: IoStyle, mode: Mode, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stalling in the header, or trickling a byte at a time: the timer runs
    from a frame's first byte, so neither keeps the connection."""
    capture_server_logs(caplog)
    timeout = 0.3
    config = ServerConfig(mode=mode, loop=loop, io=io, frame_timeout=timeout)
    with BackgroundServer(config) as srv, connect((srv.host, srv.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        wire = struct.pack(">I", 1000) + bytes(999)
        started = time.monotonic()
        step = 2 if how == "stall" else 1
        for i in range(0, len(wire), step):
            sock.sendall(wire[i : i + step])
            if how == "stall" or select.select([sock], [], [], timeout / 4)[0]:
                break  # stalled for good, or the server closed on the trickler
        ending = read_to_end(sock)
        elapsed = time.monotonic() - started
        # libuv keeps time in whole milliseconds, so its timer may fire up
        # to 1 ms before time.monotonic() says the timeout has passed.
        assert elapsed >= timeout - TIMER_GRANULARITY
        assert not ending.reset
        if mode == "msgpack":
            (last_words,) = ending.messages
            assert last_words["error"]["type"] == "timeout"
        else:
            assert ending.data == b""
        assert log_lines(caplog, peer_of(sock), "frame incomplete 0.3 s after its first byte")


@matrix
def test_a_rejected_connection_gets_one_last_word_only(
    loop: LoopName, io: IoStyle, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame timer armed before the connection was rejected must not fire a
    second rejection (a write after our FIN) while the connection lingers."""
    timeout = 0.2
    config = ServerConfig(mode="msgpack", loop=loop, io=io, frame_timeout=timeout)
    with BackgroundServer(config) as srv, connect((srv.host, srv.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"\xff\xff")  # half a header: the frame timer starts
        assert not select.select([sock], [], [], timeout / 2)[0]
        sock.sendall(b"\xff\xff")  # the header completes, over the limit
        ending = read_to_end(sock)
        assert [m["error"]["type"] for m in ending.messages] == ["frame_too_large"]
        time.sleep(2 * timeout)  # the armed timer's moment passes while we linger
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


@matrix
def test_idle_time_between_frames_is_allowed(loop: LoopName, io: IoStyle) -> None:
    timeout = 0.2
    config = ServerConfig(mode="framed", loop=loop, io=io, frame_timeout=timeout)
    with BackgroundServer(config) as srv, connect((srv.host, srv.port)) as sock:
        assert echo_works(sock, b"first")
        time.sleep(3 * timeout)  # idle (keep-alive): the behaviour under test is nothing happening
        assert echo_works(sock, b"second")


# -- clients that never read ---------------------------------------------------
@matrix
def test_a_client_that_never_reads_cannot_grow_server_memory(loop: LoopName, io: IoStyle) -> None:
    """Replies pile up, the server stops reading at the high-water mark, and
    the kernel's buffers fill: the client's sends block. The server's RSS
    stays within a generous bound while another client is still served."""
    with ServerProcess(["--mode", "framed", "--loop", loop, "--io", io]) as server:
        with connect(server.address) as warm:
            assert echo_works(warm, bytes(1 * MiB))  # first use of the buffers, not growth
        baseline = server.stats().rss
        flood = socket.socket()
        flood.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        flood.connect(server.address)
        flood.settimeout(0.5)
        frames = encode_frame(bytes(64 * 1024)) * 16
        sent = 0
        try:
            while sent < 512 * MiB:
                flood.sendall(frames)
                sent += len(frames)
        except TimeoutError:
            pass  # blocked for half a second: the server stopped reading
        assert sent < 128 * MiB
        growth = server.stats().peak_rss - baseline
        assert growth < 64 * MiB, f"server RSS grew {growth / MiB:.1f} MiB"
        with connect(server.address) as other:
            assert echo_works(other)
        close_with_reset(flood)


# -- connection floods ---------------------------------------------------------
@matrix
@pytest.mark.parametrize("mode", ["framed", "msgpack"])
def test_connections_over_the_cap_are_accepted_and_closed(
    loop: LoopName, io: IoStyle, mode: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    capture_server_logs(caplog)
    config = ServerConfig(mode=mode, loop=loop, io=io, max_connections=2)
    served = msgpack_echo_works if mode == "msgpack" else echo_works
    with BackgroundServer(config) as srv:
        address = (srv.host, srv.port)
        with connect(address) as first, connect(address) as second:
            assert served(first) and served(second)
            with connect(address) as third:
                ending = read_to_end(third)
                assert not ending.reset
                if mode == "msgpack":
                    (busy,) = ending.messages
                    assert busy["ok"] is False and busy["error"]["type"] == "busy"
                else:
                    assert ending.data == b""
                assert log_lines(caplog, "refusing", peer_of(third), "limit 2")
            assert served(first)
            second.close()
            assert srv.wait_for_connections(at_most=1) == 1
            with connect(address) as fourth:
                assert served(fourth)
        assert srv.connections.refused == 1


@pytest.mark.parametrize("loop", LOOPS)
def test_out_of_descriptors_neither_spins_nor_stops_the_server(loop: LoopName) -> None:
    """RLIMIT_NOFILE far below the connection cap: accept() meets EMFILE.
    asyncio leaves the rest waiting in the backlog and retries each second;
    uvloop (libuv) accepts and closes them. Neither may burn CPU, and both
    serve new clients once descriptors are free again."""
    limit, clients = 48, 80
    with ServerProcess(["--mode", "framed", "--loop", loop], fd_limit=limit) as server:
        server.wait_for_log(f"RLIMIT_NOFILE is {limit}")
        socks = [connect(server.address) for _ in range(clients)]
        for sock in socks:
            sock.sendall(encode_frame(b"hello"))
        served: list[socket.socket] = []
        closed: list[socket.socket] = []
        waiting = set(socks)
        while waiting:  # until every client has an answer or nothing moves for 0.5 s
            readable, _, _ = select.select(list(waiting), [], [], 0.5)
            if not readable:
                break
            for sock in readable:
                waiting.discard(sock)
                ending = read_frames(sock, 1) if _alive(sock) else []
                (served if ending == [b"hello"] else closed).append(sock)
        assert served and (closed or waiting), "the descriptor limit was never reached"
        assert server.stats().fds <= limit

        before = server.stats().cpu_seconds
        time.sleep(1.0)  # a window at the limit: CPU time, not wall time, is the measure
        busy = server.stats().cpu_seconds - before
        assert busy < 0.25, f"{busy:.2f} s of CPU in 1 s while out of descriptors"
        if loop == "asyncio":  # one back-off (and one log entry) per second, not a burst
            assert len([x for x in server.log if "out of system resource" in x]) <= 4

        for sock in served + closed:
            sock.close()
        freed = server.wait_until(lambda stats: stats.fds < limit - len(served) // 2)
        assert freed.fds < limit - len(served) // 2, "the server kept the closed connections"
        with connect(server.address) as fresh:
            assert echo_works(fresh)
        if loop == "uvloop":
            assert not waiting  # libuv closed what it could not accept
        else:
            assert waiting and not closed  # asyncio left them in the backlog
        for sock in waiting:  # asyncio: they waited in the backlog and are served now
            assert read_frames(sock, 1) == [b"hello"]
            sock.close()
        assert server.running


def _alive(sock: socket.socket) -> bool:
    """False if the server closed this connection without answering."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except ConnectionResetError:
        return False


# -- clients that die mid-frame ------------------------------------------------
KILLED_CLIENT = """
import socket, struct, sys, time
sock = socket.create_connection(("{host}", {port}))
sock.sendall(struct.pack(">I", 5) + b"hello")
assert sock.recv(9) == struct.pack(">I", 5) + b"hello"
sock.sendall(struct.pack(">I", 1000) + bytes(100))
print("mid-frame", flush=True)
time.sleep(60)
"""


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("io", STYLES)
@pytest.mark.parametrize("how", ["killed", "reset", "fin"])
def test_a_client_gone_mid_frame_leaves_nothing_behind(
    loop: LoopName, io: IoStyle, how: str
) -> None:
    """Descriptors and tasks are back to their count before the client came."""
    with BackgroundServer(ServerConfig(mode="framed", loop=loop, io=io)) as srv:
        fds_before = _open_fds()
        tasks_before = srv.call(lambda: len(asyncio.all_tasks()))
        if how == "killed":
            script = KILLED_CLIENT.format(host=srv.host, port=srv.port)
            with subprocess.Popen(
                [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
            ) as client:
                assert client.stdout is not None
                assert client.stdout.readline() == "mid-frame\n"
                assert len(srv.connections.live) == 1
                client.send_signal(signal.SIGKILL)
                client.wait()
        else:
            sock = connect((srv.host, srv.port))
            assert echo_works(sock)
            sock.sendall(struct.pack(">I", 1000) + bytes(100))
            assert len(srv.connections.live) == 1
            if how == "reset":
                close_with_reset(sock)
            else:
                sock.close()
        assert srv.wait_for_connections(at_most=0) == 0
        assert srv.call(lambda: len(asyncio.all_tasks())) == tasks_before
        assert _open_fds() == fds_before


def test_msgpack_connections_stay_usable_next_to_a_flood_of_bad_ones() -> None:
    """Many bad clients at once (garbage, oversized, truncated) while a good
    client keeps asking: every good request is answered."""
    config = ServerConfig(mode="msgpack", max_frame=4096)
    with BackgroundServer(config) as srv, connect((srv.host, srv.port)) as good:
        address = (srv.host, srv.port)
        for round_ in range(20):
            bad = [connect(address) for _ in range(10)]
            offences = [b"\xff" * 64, struct.pack(">I", 10_000), b"\x00\x00\x00\x09ab"]
            for i, sock in enumerate(bad):
                sock.sendall(offences[i % 3])
                sock.shutdown(socket.SHUT_WR)
            assert msgpack_echo_works(good), round_
            for sock in bad:
                ending = read_to_end(sock)
                assert not ending.reset
                assert msgpack.unpackb(ending.frames[-1])["ok"] is False
                sock.close()
        assert srv.wait_for_connections(at_most=1) == 1
