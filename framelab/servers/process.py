"""A server in a child process, and what the kernel says about it.

Memory, descriptor and CPU figures only mean something for a server that has
a process of its own, so the soak command and the reliability tests start
`framelab serve` as a child: the same supervisor, workers and options as a
user gets. Figures are those of the serving processes: the workers, not the
supervisor (which serves no connection).
`ServerProcess` starts it, waits for its `listening on HOST:PORT` line,
keeps every stderr line (the server's log) and can wait for one to appear,
sends it signals, and reads /proc for RSS, peak RSS, open descriptors and
CPU time. Linux only (/proc).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import resource
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from framelab.servers.lifetime import tied_to_this_process

_READY = re.compile(r"listening on (\S+):(\d+)")  # an IPv6 host in brackets: [::1]:7091
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessStats:
    rss: int  # bytes resident now
    peak_rss: int  # bytes, the high-water mark since start (VmHWM)
    fds: int  # open descriptors
    user_seconds: float  # CPU time in user space
    system_seconds: float  # CPU time in the kernel on its behalf (syscalls, the TCP stack)

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds


def wait_for_stats(
    pid: int, condition: Callable[[ProcessStats], bool], timeout: float = 10.0
) -> ProcessStats:
    """Poll /proc until `condition(stats)` holds (the kernel sends no event
    for a descriptor count): every 10 ms, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        stats = process_stats(pid)
        if condition(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (one pass over /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                rest = stat.read().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(rest[1]) == pid:
            found.append(int(entry))
    return found


def serving_pids(pid: int) -> list[int]:
    """The processes that serve for the server whose main process is `pid`:
    its workers when it supervises some (`framelab serve`), else itself."""
    return children_of(pid) or [pid]


def process_stats(pid: int) -> ProcessStats:
    """A server's figures: the sum over its serving processes (its workers
    under a supervisor, the supervisor itself left out; or the process)."""
    parts = []
    for serving in serving_pids(pid):
        try:
            parts.append(single_process_stats(serving))
        except (FileNotFoundError, ProcessLookupError):  # a worker exited meanwhile
            continue
    if not parts:
        return single_process_stats(pid)
    return ProcessStats(
        rss=sum(p.rss for p in parts),
        peak_rss=sum(p.peak_rss for p in parts),
        fds=sum(p.fds for p in parts),
        user_seconds=sum(p.user_seconds for p in parts),
        system_seconds=sum(p.system_seconds for p in parts),
    )


def single_process_stats(pid: int) -> ProcessStats:
    """Read /proc/<pid> once."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    with open(f"/proc/{pid}/stat") as stat:
        # the command name may hold spaces: split after its closing parenthesis
        rest = stat.read().rpartition(")")[2].split()
    utime, stime = int(rest[11]), int(rest[12])
    return ProcessStats(
        rss=fields["VmRSS"],
        peak_rss=fields["VmHWM"],
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        user_seconds=utime / _CLOCK_TICKS,
        system_seconds=stime / _CLOCK_TICKS,
    )


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (never past the
    hard limit); children inherit it. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class ServerProcess:
    """`framelab serve ARGS` as a child process; use as a context manager.

    with ServerProcess(["--mode", "msgpack"]) as server:
        connect to server.host, server.port; server.stats(); server.wait_for_log("...")

    `command` replaces `framelab serve` with any program that prints the same
    `listening on HOST:PORT` line (the benchmark's Twisted peer).
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        fd_limit: int | None = None,
        start_timeout: float = 20.0,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        read_log: bool = True,
    ) -> None:
        self.args = list(args)
        self.read_log = read_log  # False: stderr is a pipe nobody reads (a stalled log reader)
        self.command = list(command) if command is not None else None
        self.env = {**os.environ, **env} if env else None
        self.fd_limit = fd_limit
        self.start_timeout = start_timeout
        self.host = ""
        self.port = 0
        self.log: list[str] = []
        self._log_changed = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._tie_to_us = tied_to_this_process()

    # -- life cycle --------------------------------------------------------
    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()

    def start(self) -> None:
        command = self.command or [sys.executable, "-m", "framelab", "serve", "--port", "0"]
        command = [*command, *self.args]
        self._proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            preexec_fn=self._in_child,
        )
        if self.read_log:
            self._reader = threading.Thread(target=self._collect_log, daemon=True)
            self._reader.start()
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # the runner prints it once accepting
        match = _READY.search(line)
        if match is None:
            self.kill()
            raise RuntimeError(f"server did not start: {line!r}; log: {self.log[-20:]}")
        self.host, self.port = match.group(1).strip("[]"), int(match.group(2))

    def _in_child(self) -> None:
        """Before exec: the server dies with us (a benchmark or test killed by a
        signal leaves no server behind) and gets its descriptor limit."""
        self._tie_to_us()
        if self.fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    def _collect_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        try:
            for line in self._proc.stderr:
                with self._log_changed:
                    self.log.append(line.rstrip("\n"))
                    self._log_changed.notify_all()
        except (ValueError, OSError):  # closed by kill() while workers still held it
            pass

    def unread_log_bytes(self) -> int:
        """Bytes waiting in the stderr pipe (with read_log=False: how full it is)."""
        assert self._proc is not None and self._proc.stderr is not None
        raw = fcntl.ioctl(self._proc.stderr.fileno(), termios.FIONREAD, b"\0\0\0\0")
        count: int = struct.unpack("i", raw)[0]
        return count

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def worker_pids(self) -> list[int]:
        """The serving processes now (a supervisor's workers; or the process)."""
        return serving_pids(self.pid)

    def wait_until_workers(
        self, condition: Callable[[list[int]], bool], timeout: float = 10.0
    ) -> list[int]:
        """Poll /proc until the worker pids satisfy `condition` (a worker that
        retires takes a moment to exit): every 10 ms, at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if condition(pids) or time.monotonic() > deadline:
                return pids
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def send_signal(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server. SIGKILL kills it whole: its workers first, then
        the supervisor (killed alone, the supervisor's workers would stop
        gracefully: they die with it by SIGTERM)."""
        assert self._proc is not None
        if sig == signal.SIGKILL:
            self._kill_workers()
        self._proc.send_signal(sig)

    def _kill_workers(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        exits = []
        for pid in children_of(self._proc.pid):
            with contextlib.suppress(ProcessLookupError):
                exits.append(os.pidfd_open(pid))
                os.kill(pid, signal.SIGKILL)
        for pidfd in exits:  # readable once that process has exited
            select.select([pidfd], [], [], 5.0)
            os.close(pidfd)
        # then let the supervisor reap them (a zombie handed to init may linger there)
        deadline = time.monotonic() + 5.0
        while children_of(self._proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def wait(self, timeout: float) -> int:
        """Exit status (negative: killed by that signal); TimeoutExpired if still running."""
        assert self._proc is not None
        code = self._proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._kill_workers()
            self._proc.kill()
            self._proc.wait()
        if self._proc is not None:
            for pipe in (self._proc.stdout, self._proc.stderr):
                if pipe is not None:
                    pipe.close()

    # -- observation -------------------------------------------------------
    def stats(self) -> ProcessStats:
        return process_stats(self.pid)

    def wait_for_log(self, text: str, timeout: float = 10.0, *, start: int = 0) -> str:
        """The first log line (from index `start`) containing `text`, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._log_changed:
            while True:
                for line in self.log[start:]:
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no log line with {text!r}; log: {self.log[-20:]}")
                self._log_changed.wait(remaining)

    def wait_until(
        self, condition: Callable[[ProcessStats], bool], timeout: float = 10.0
    ) -> ProcessStats:
        """Poll /proc until `condition(stats)` holds; see wait_for_stats."""
        return wait_for_stats(self.pid, condition, timeout)
