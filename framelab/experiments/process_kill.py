"""What the peer sees when a process dies with a connection open (claim C26).

The notes say the kernel closes a dead process's sockets without waiting for
the peer, which sees FIN. A child Python process connects to our listener and
blocks; then:

1. it is SIGKILLed: we read EOF (FIN from the child's port);
2. it exits without calling close(): the same;
3. it is SIGKILLed with data we sent still unread in its receive buffer:
   the kernel's close sends RST instead (we see ECONNRESET);
4. it forked a grandchild that inherited the socket: killing the child sends
   nothing (our recv times out, the connection stays ESTABLISHED) until the
   grandchild dies too, because the socket is closed with its last descriptor.

Each case is timed from kill() (for exit, from accept()) to what recv()
reports. Every process started here is killed and waited for (the grandchild,
which is not ours to wait for, is killed by its pid and seen gone through the
EOF it causes).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts
from framelab.lab.capture import Capture
from framelab.lab.kernel import endpoint_state
from framelab.lab.sockets import LOOPBACK, Address, address_of, listening_socket, recv_outcome
from framelab.lab.timing import Stopwatch, median_ms
from framelab.lab.traces import fin_rst_sent, maybe_capture, short_trace, titled, wait_for_flag
from framelab.lab.waiting import settled_state, wait_for_queues

NAME = "process_kill"
#: how long to wait for an event that should come at once (seconds)
EVENT_TIMEOUT = 2.0
UNREAD = b"bytes the child never reads" * 10


def child_main(port: int, mode: str, report_fd: int) -> None:
    """Runs in the forked child: connect, report the pid holding the socket, wait.

    mode "block": connect and wait; "exit": connect and exit without close();
    "fork": connect, fork a grandchild that keeps the socket, both wait.
    Never returns: a child must not run on into the parent's code.
    """
    try:
        sock = socket.create_connection((LOOPBACK, port))
        if mode == "exit":
            os._exit(0)
        holder = os.getpid()
        if mode == "fork":
            holder = os.fork()
        if holder:  # the child reports; the grandchild only holds the socket
            os.write(report_fd, f"{holder}\n".encode())
        while sock.fileno() >= 0:
            signal.pause()  # until SIGKILL
    finally:
        os._exit(0)


class Child:
    """A forked child connected to `listener`; `sock` is our end of it.

    fork() rather than exec: the child needs nothing but the socket module,
    and any user can fork (the interpreter's path may not be executable for
    every user). close() kills and reaps the child; in "fork" mode we are a
    child subreaper while the child lives, so the orphaned grandchild becomes
    ours to kill and reap too.
    """

    def __init__(self, listener: socket.socket, mode: str) -> None:
        self.listener = listener
        self.mode = mode
        self.pid: int | None = None
        self.grandchild: int | None = None
        self.server: socket.socket | None = None
        self.forked_at = 0.0
        self._subreaper: ChildSubreaper | None = None
        self.child_address: Address = ("", 0)
        self.server_address: Address = ("", 0)

    def __enter__(self) -> Child:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        port = address_of(self.listener)[1]
        if self.mode == "fork":
            self._subreaper = ChildSubreaper()
            self._subreaper.__enter__()
        report_read, report_write = os.pipe()
        try:
            self.forked_at = time.monotonic()
            self.pid = os.fork()
            if self.pid == 0:
                os.close(report_read)
                child_main(port, self.mode, report_write)
            os.close(report_write)
            self.listener.settimeout(EVENT_TIMEOUT)
            self.server, child_address = self.listener.accept()
            self.server.settimeout(None)
            self.child_address = (str(child_address[0]), int(child_address[1]))
            self.server_address = address_of(self.server)
            if self.mode != "exit":
                holder = int(_read_line(report_read))
                if self.mode == "fork":
                    self.grandchild = holder
        finally:
            os.close(report_read)

    @property
    def port(self) -> int:
        return self.child_address[1]

    @property
    def sock(self) -> socket.socket:
        assert self.server is not None
        return self.server

    def sent(self, cap: Capture | None, since: float) -> dict[str, bool | None]:
        """Did FIN / RST leave the child's port after `since`? (None: not captured)"""
        return fin_rst_sent(cap, self.port, self.server_address[1], since)

    def kill(self) -> None:
        """SIGKILL the child (not the grandchild) and reap it."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None

    def kill_grandchild(self) -> None:
        if self.grandchild is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.grandchild, signal.SIGKILL)

    def close(self) -> None:
        self.kill_grandchild()
        self.kill()  # once the child is reaped, the grandchild is ours (subreaper)
        if self.grandchild is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.grandchild, 0)
            self.grandchild = None
        if self._subreaper is not None:
            self._subreaper.__exit__()
            self._subreaper = None
        if self.server is not None:
            self.server.close()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ChildSubreaper:
    """prctl(PR_SET_CHILD_SUBREAPER) for a while: orphaned descendants are
    reparented to us instead of to init, so we can wait for them."""

    PR_SET_CHILD_SUBREAPER = 36
    PR_GET_CHILD_SUBREAPER = 37

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._previous = ctypes.c_int(0)

    def __enter__(self) -> ChildSubreaper:
        self._libc.prctl(self.PR_GET_CHILD_SUBREAPER, ctypes.byref(self._previous), 0, 0, 0)
        if self._libc.prctl(self.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        return self

    def __exit__(self, *exc: object) -> None:
        self._libc.prctl(self.PR_SET_CHILD_SUBREAPER, self._previous.value, 0, 0, 0)


def _read_line(fd: int) -> str:
    """What the child wrote to its pipe, up to the newline ('' if it died first)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


@dataclass(frozen=True)
class Ending:
    """How our end of the connection ended when the child died (one round)."""

    our_recv: str
    child_sent: dict[str, bool | None]  # {"fin": ..., "rst": ...}; None: not captured
    child_end_after: str | None


@dataclass(frozen=True)
class Repeated:
    """An ending over its rounds: the first one, the median time to recv's answer."""

    ending: Ending
    ms_to_recv_result_median: float
    rounds: int
    same_every_round: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.ending), **{k: v for k, v in asdict(self).items() if k != "ending"}}


@dataclass(frozen=True)
class ForkedHolder:
    """The child killed while a grandchild holds the socket, then the grandchild."""

    our_recv_after_child_killed: str
    child_end_after_child_killed: str | None
    sent_after_child_killed: dict[str, bool | None]
    our_recv_after_grandchild_killed: str
    ms_to_recv_result_after_grandchild_killed: float
    sent_after_grandchild_killed: dict[str, bool | None]
    quiet_window_s: float


def killed_or_exited(
    listener: socket.socket, cap: Capture | None, mode: str, unread: bool
) -> tuple[Ending, float, list[str]]:
    """One round: (what we saw, seconds from kill/start to recv's answer, trace)."""
    with Child(listener, mode) as child:
        if unread:
            child.sock.sendall(UNREAD)
            wait_for_queues(
                child.child_address,
                child.server_address,
                lambda e: e.rx_queue >= len(UNREAD),
                EVENT_TIMEOUT,
            )
        # an exiting child may be gone before accept() returns: watch from the fork
        started = child.forked_at if mode == "exit" else time.monotonic()
        with Stopwatch() as sw:
            if mode != "exit":
                child.kill()
            outcome = recv_outcome(child.sock, EVENT_TIMEOUT)
        wait_for_flag(cap, child.port, "FR", EVENT_TIMEOUT, started)
        seen = Ending(
            outcome,
            child.sent(cap, started),
            settled_state(child.child_address, child.server_address),
        )
        return seen, sw.seconds, short_trace(cap, child.port, started, 5)


def repeated(
    listener: socket.socket, cap: Capture | None, mode: str, unread: bool, rounds: int
) -> tuple[Repeated, list[str]]:
    runs = [killed_or_exited(listener, cap, mode, unread) for _ in range(rounds)]
    first = runs[0][0]
    seen = Repeated(
        first,
        median_ms([seconds for _, seconds, _ in runs]),
        rounds,
        all(ending == first for ending, _, _ in runs),
    )
    return seen, runs[0][2]


def forked_holder(
    listener: socket.socket, cap: Capture | None, quiet: float
) -> tuple[ForkedHolder, list[str]]:
    """Kill the child while a grandchild holds the socket, then the grandchild."""
    with Child(listener, "fork") as child:
        started = time.monotonic()
        child.kill()
        after_child = recv_outcome(child.sock, quiet)
        state = endpoint_state(child.child_address, child.server_address)
        silent = child.sent(cap, started)
        second = time.monotonic()
        with Stopwatch() as sw:
            child.kill_grandchild()
            after_grandchild = recv_outcome(child.sock, EVENT_TIMEOUT)
        wait_for_flag(cap, child.port, "FR", EVENT_TIMEOUT, second)
        seen = ForkedHolder(
            after_child, state, silent, after_grandchild, sw.ms, child.sent(cap, second), quiet
        )
        return seen, short_trace(cap, child.port, started, 4)


def run(ctx: RunContext) -> list[ClaimResult]:
    rounds = ctx.timing_rounds()
    listener = listening_socket()
    try:
        with maybe_capture(ctx.can_capture, [address_of(listener)[1]]) as cap:
            killed, t_killed = repeated(listener, cap, "block", False, rounds)
            exited, t_exited = repeated(listener, cap, "exit", False, rounds)
            unread, t_unread = repeated(listener, cap, "block", True, rounds)
            forked, t_forked = forked_holder(listener, cap, ctx.quiet)
    finally:
        listener.close()
    trace = [
        *titled("SIGKILL", t_killed),
        *titled("exit without close()", t_exited),
        *titled("SIGKILL, unread data in the child", t_unread),
        *titled("SIGKILL the child, then the grandchild holding the socket", t_forked),
    ]
    return [judge_c26(killed, exited, unread, forked, ctx.can_capture, trace)]


def flags_text(sent: dict[str, bool | None]) -> str:
    if sent["fin"] is None:
        return "not captured"
    return f"{'FIN' if sent['fin'] else 'no FIN'}, {'RST' if sent['rst'] else 'no RST'}"


def judge_c26(
    killed: Repeated,
    exited: Repeated,
    unread: Repeated,
    forked: ForkedHolder,
    captured: bool,
    trace: list[str],
) -> ClaimResult:
    """C26 part by part: closed at a kill, at an exit, at once, and with a FIN."""
    endings = [case.ending for case in (killed, exited)]
    fin_seen = all(e.child_sent["fin"] is True and e.child_sent["rst"] is False for e in endings)
    parts = [
        Part(
            "when a process is killed, the kernel closes its sockets",
            killed.ending.our_recv == "EOF",
            f"SIGKILL: our recv() got {killed.ending.our_recv} "
            f"{killed.ms_to_recv_result_median} ms after kill() (median of {killed.rounds})",
        ),
        Part(
            "when it exits without close(), likewise",
            exited.ending.our_recv == "EOF",
            f"exit: our recv() got {exited.ending.our_recv} "
            f"{exited.ms_to_recv_result_median} ms after the exit began",
        ),
        Part(
            "without waiting for the peer: the peer sees FIN",
            fin_seen if captured else None,
            (
                f"the dying end sent: at SIGKILL {flags_text(killed.ending.child_sent)}, at exit "
                f"{flags_text(exited.ending.child_sent)}"
                if captured
                else "not captured (needs root); our recv()'s EOF says a FIN arrived"
            )
            + f". Unless data was unread: then {unread.ending.our_recv} "
            f"({flags_text(unread.ending.child_sent)}); and a socket a forked child still holds "
            f"is not closed: killing the parent gave {forked.our_recv_after_child_killed} until "
            f"the holder died ({forked.our_recv_after_grandchild_killed})",
        ),
    ]
    observed = {
        "sigkill": killed.to_json(),
        "exit_without_close": exited.to_json(),
        "sigkill_with_unread_data": unread.to_json(),
        "sigkill_with_forked_holder": asdict(forked),
        "captured": captured,
    }
    return judge_parts(NAME, "C26", parts, observed, trace=trace)


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C26",),
    needs_root="no",
    description="SIGKILL/exit with a connection open: FIN, RST with unread data, forked holder",
    run=run,
)
