"""Logging never blocks the loop: a bounded queue to a writer thread, drops
counted and reported, peer warnings limited per kind; and a server whose
stderr nobody reads keeps serving thousands of bad peers."""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import threading
import time

from framelab.servers.logsetup import PeerWarningLimiter, install
from framelab.servers.process import ServerProcess

from .support import connect, read_to_end, request

PIPE_BYTES = 64 * 1024  # Linux's default pipe capacity


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def warning(name: str, template: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, template, args, None)


def test_warnings_of_one_kind_are_limited_per_window_and_summed_up() -> None:
    clock = FakeClock()
    limiter = PeerWarningLimiter(burst=5, window=10.0, clock=clock)
    passed = [limiter.filter(warning("framing", "peer %s sent junk", f"p{i}")) for i in range(100)]
    assert passed.count(True) == 5 and passed[:5] == [True] * 5
    assert limiter.filter(warning("framing", "another kind %s", "x")), "kinds are apart"
    info = logging.LogRecord("framing", logging.INFO, __file__, 1, "read %d", (1,), None)
    error = logging.LogRecord("framing", logging.ERROR, __file__, 1, "bug %d", (1,), None)
    assert all(limiter.filter(info) for _ in range(50)), "only warnings are limited"
    assert all(limiter.filter(error) for _ in range(50))
    assert limiter.due() == [], "the window has not ended"
    clock.now += 10.0
    (summary,) = limiter.due()
    assert summary.getMessage().startswith("95 more like this in the last 10 s")
    assert "peer p5 sent junk" in summary.getMessage()  # the first one not written
    assert limiter.filter(warning("framing", "peer %s sent junk", "again")), "a new window"
    assert limiter.due() == []


def test_a_window_that_ends_while_warnings_keep_coming_is_still_summed_up() -> None:
    clock = FakeClock()
    limiter = PeerWarningLimiter(burst=1, window=10.0, clock=clock)
    for _ in range(3):
        limiter.filter(warning("framing", "junk"))
    clock.now += 11
    assert limiter.filter(warning("framing", "junk"))  # the next window's first
    assert not limiter.filter(warning("framing", "junk"))
    (ended,) = limiter.due()
    assert ended.getMessage().startswith("2 more like this")
    (rest,) = limiter.flush()
    assert rest.getMessage().startswith("1 more like this")


def test_warnings_built_without_a_template_share_one_budget() -> None:
    limiter = PeerWarningLimiter(burst=2, max_kinds=10, clock=FakeClock())
    passed = [limiter.filter(warning("framing", f"peer {i} sent junk")) for i in range(1000)]
    assert passed.count(True) == 10 + 2  # one per kind up to the limit, then a shared budget


def test_a_pipe_nobody_reads_neither_blocks_logging_nor_loses_count() -> None:
    read_end, write_end = os.pipe()
    logger = logging.getLogger("framelab.test.stalled")
    logger.propagate = False
    pipeline = install(logging.INFO, stream=write_end, capacity=100, logger=logger)
    try:
        started = time.monotonic()
        for number in range(20_000):  # about 2 MB of log: 30 times the pipe
            logger.info("record %d %s", number, "x" * 60)
        assert time.monotonic() - started < 5.0, "logging waited for the pipe"
        dropped = pipeline.dropped
        assert dropped > 10_000
        # the reader wakes up: the writer thread resumes and tells what was lost,
        # as it goes (at the latest on its next tick)
        reported, pending = 0, b""
        while reported < dropped:
            pending += os.read(read_end, PIPE_BYTES)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.endswith(b" log records dropped (queue full)"):
                    reported += int(line.split()[0])
        assert reported == dropped
    finally:
        reader = threading.Thread(target=_drain, args=(read_end,), daemon=True)
        reader.start()
        pipeline.close()
        os.close(write_end)
        reader.join(5)
        logger.propagate = True


def _drain(fd: int) -> None:
    while os.read(fd, PIPE_BYTES):
        pass
    os.close(fd)


def _bad_peer(address: tuple[str, int]) -> None:
    """Refused requests (logged at INFO), then a truncated frame (a warning)."""
    with connect(address) as sock:
        sock.sendall(b"".join(request("no-such-op", None, i) for i in range(12)))
        sock.sendall(struct.pack(">I", 100) + b"only ten b")
        sock.shutdown(socket.SHUT_WR)
        read_to_end(sock)


def test_a_server_whose_stderr_nobody_reads_serves_thousands_of_bad_peers() -> None:
    args = ["--mode", "msgpack", "--log-level", "INFO", "--shutdown-timeout", "5"]
    with ServerProcess(args, read_log=False) as server:
        for _ in range(3000):
            _bad_peer(server.address)
        assert server.unread_log_bytes() >= PIPE_BYTES - 4096, "stderr is full"
        with connect(server.address) as sock:
            sock.sendall(request("echo", "still served", 1))
            sock.shutdown(socket.SHUT_WR)
            assert read_to_end(sock).messages == [{"id": 1, "ok": True, "result": "still served"}]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0, "a full stderr must not hold the exit"
