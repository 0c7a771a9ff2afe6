"""The supervisor: rolling restart under a stream of new connections, a
worker killed under load, the supervisor killed, exit statuses; and its
back-off, without processes."""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys

import pytest

from framelab.servers.process import ServerProcess
from framelab.servers.supervision import BackOff, describe_status
from framing import encode_frames

from .support import Stream, connect, echo_works, read_frames, read_to_end

Address = tuple[str, int]


def test_back_off_doubles_in_a_crash_loop_and_resets_after_a_healthy_run() -> None:
    backoff = BackOff(first=0.1, limit=1.0, healthy_after=10.0)
    assert [backoff.after_death(ran_for=0.5) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.after_death(ran_for=60.0) == 0.1


def test_exit_statuses_in_words() -> None:
    assert describe_status(0) == "exit status 0"
    assert describe_status(3) == "exit status 3"
    assert describe_status(-signal.SIGKILL) == "killed by SIGKILL"


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_replaces_every_worker_with_no_failed_connection(workers: int) -> None:
    with ServerProcess(["--workers", str(workers), "--log-level", "INFO"]) as server:
        before = set(server.worker_pids())
        assert len(before) == workers
        in_flight = connect(server.address)  # frames in flight at an old worker
        frames = [b"in flight %d" % i + bytes(4096) for i in range(300)]
        with Stream(server.address) as stream:
            server.wait_for_log("2 workers" if workers == 2 else "1 worker")
            in_flight.sendall(encode_frames(frames))
            mark = len(server.log)
            server.send_signal(signal.SIGHUP)
            server.wait_for_log("rolling restart done", timeout=30, start=mark)
            stream.wait_for(stream.attempts + 20)  # a few more, to the new workers only
        assert stream.failures == []
        assert stream.attempts > 40
        ending = read_to_end(in_flight)
        assert ending.frames == frames, "an old worker answered everything before exiting"
        assert not ending.reset
        after = set(server.wait_until_workers(lambda pids: len(pids) == workers))
        assert after.isdisjoint(before), "every worker is a new process"
        assert echo_works(connect(server.address)), "the same port"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0


def _tcp_rows(port: int) -> dict[int, int]:
    """Established connections to `port` seen by the kernel: peer port -> inode."""
    rows = {}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            if local_port == port and fields[3] == "01":
                rows[int(fields[2].split(":")[1], 16)] = int(fields[9])
    return rows


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def test_a_worker_killed_under_load_is_restarted_and_only_its_connections_are_lost() -> None:
    with ServerProcess(["--workers", "2"]) as server:
        victim, survivor = server.worker_pids()
        clients: list[socket.socket] = []
        mine: list[socket.socket] = []
        while len(clients) < 200 and not (mine and len(mine) < len(clients)):
            batch = [connect(server.address) for _ in range(10)]
            assert all(echo_works(c) for c in batch)  # each one accepted by some worker
            clients += batch
            rows, owned = _tcp_rows(server.port), _socket_inodes(victim)
            mine = [c for c in clients if rows[c.getsockname()[1]] in owned]
        theirs = [c for c in clients if c not in mine]
        assert mine and theirs, "both workers had connections"
        mark = len(server.log)
        os.kill(victim, signal.SIGKILL)
        line = server.wait_for_log("died unexpectedly", start=mark)
        assert f"pid {victim}" in line and "killed by SIGKILL" in line
        restarted = server.wait_for_log("restarted: pid", start=mark)
        for sock in mine:
            sock.settimeout(5)
            assert read_to_end(sock).data == b""  # gone with its worker
        assert all(echo_works(c) for c in theirs), "the other worker's connections live on"
        new_pid = int(restarted.rsplit("pid ", 1)[1])
        assert sorted(server.worker_pids()) == sorted([survivor, new_pid])
        assert all(echo_works(connect(server.address)) for _ in range(10))
        for sock in clients:
            sock.close()


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait (on pidfds: an event per exit) until the processes are gone; returns the rest."""
    left = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not select.select([fd], [], [], timeout)[0]:
                left.append(pid)
        finally:
            os.close(fd)
    return left


def test_killing_the_supervisor_takes_its_workers_with_it() -> None:
    with ServerProcess(["--workers", "2"]) as server:
        workers = server.worker_pids()
        assert len(workers) == 2 and server.pid not in workers
        sock = connect(server.address)
        assert echo_works(sock)
        os.kill(server.pid, signal.SIGKILL)  # the supervisor alone
        assert server.wait(timeout=5) == -signal.SIGKILL
        assert _wait_gone(workers, timeout=15) == []
        assert read_to_end(sock).data == b""
        with pytest.raises(ConnectionRefusedError):
            connect(server.address)


def test_the_exit_status_says_a_worker_did_not_stop_cleanly() -> None:
    args = ["--workers", "2", "--shutdown-timeout", "30", "--frame-timeout", "0"]
    with ServerProcess(args) as server:
        stalled = [connect(server.address) for _ in range(8)]
        for sock in stalled:
            sock.sendall(struct.pack(">I", 100) + b"half")  # keeps its worker stopping
        assert read_frames(connect(server.address), 0) == []
        server.send_signal(signal.SIGTERM)
        server.wait_for_log("shutting down")
        busy = next(p for p in server.worker_pids() if _socket_inodes(p))
        os.kill(busy, signal.SIGKILL)
        for sock in stalled:
            sock.close()
        assert server.wait(timeout=40) == 1
        line = server.wait_for_log("did not stop cleanly")
        assert f"pid {busy} killed by SIGKILL" in line


OWNER = """
import signal, sys
from framelab.servers.process import ServerProcess
server = ServerProcess(["--workers", "1"])
server.start()
print(server.pid, *server.worker_pids(), flush=True)
signal.pause()
"""


def test_a_server_started_by_a_killed_process_goes_with_it() -> None:
    """A benchmark or test killed by a signal runs no cleanup: its servers must
    still not outlive it (PR_SET_PDEATHSIG on every ServerProcess)."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2, pids  # the server and its one worker
        owner.kill()
        owner.wait(timeout=5)
        assert _wait_gone(pids, timeout=15) == []
    finally:
        owner.kill()
