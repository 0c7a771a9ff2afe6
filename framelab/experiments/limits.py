"""Open-file limits bound how many connections a process can accept (C37).

A child process lowers its RLIMIT_NOFILE to a few dozen descriptors and runs
an accept loop, while this process opens more connections than the child can
hold. What is measured, for several accept loops side by side:

- accept() fails with EMFILE once the descriptor table is full; the highest
  descriptor in use is the limit minus one;
- the kernel does not care: the surplus connections are completed anyway and
  wait in the listener's accept queue (ESTABLISHED rows without an inode), and
  their clients see ESTABLISHED and can even send;
- whether the loop then burns CPU (the child's utime+stime over a window):
  a loop that just retries accept() spins, because the listener stays readable;
- recovery: closing a few accepted connections frees descriptors and the
  queued connections are accepted.

The loops: `selector` (stops watching the listener on EMFILE until a
connection closes), `naive` (retries at once), `asyncio` (3.11's loop reports
the error, removes the reader and retries after a second) and `uvloop`
(libuv's EMFILE handling). The limits themselves (ulimit -n, fs.file-max,
fs.nr_open, fs.file-nr) are read, never changed, outside the child.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import select
import selectors
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.kernel import connections_on_port, errno_name, sysctls, tcp_info
from framelab.lab.sockets import LOOPBACK, address_of, close_all

NAME = "limits"
#: RLIMIT_NOFILE of the child
DESCRIPTOR_LIMIT = 32
#: connections opened beyond the child's limit
EXTRA_CONNECTIONS = 10
#: the child's listen() backlog: room for every surplus connection
CHILD_BACKLOG = 64
#: accepted connections closed by the client to give descriptors back
FREED = 4
FLAVOURS = ("selector", "naive", "asyncio", "uvloop")
#: longest wait for the children to reach a step (each wait ends as soon as they have):
#: on a loaded machine a child may get the CPU late
SETTLE_TIMEOUT = 5.0
#: the folder that holds the framelab package (the source tree, or site-packages)
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the child ---------------------------------------------------------------------


def emit(event: str, **fields: Any) -> None:
    """One JSON line to the parent; timestamps share the parent's monotonic clock."""
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


def probe_nr_open() -> str:
    """Try to raise RLIMIT_NOFILE past fs.nr_open: the kernel refuses (as root too)."""
    with open("/proc/sys/fs/nr_open") as fh:
        nr_open = int(fh.read())
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nr_open + 1, nr_open + 1))
    except (ValueError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "accepted"


def serve_selector(listener: socket.socket) -> None:
    """Stop watching the listener on EMFILE; watch it again once a connection closes."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    held: dict[int, socket.socket] = {}
    paused = False
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                try:
                    conn, _ = listener.accept()
                except OSError as exc:
                    highest = max([listener.fileno(), *held])
                    emit("emfile", errno=errno_name(exc), highest_fd=highest)
                    selector.unregister(listener)
                    paused = True
                    continue
                held[conn.fileno()] = conn
                selector.register(conn, selectors.EVENT_READ)
                emit("accepted", fd=conn.fileno())
                continue
            conn = held.pop(key.fd)
            selector.unregister(conn)
            conn.close()  # the only reads here are EOFs: clients never send to held ones
            emit("closed")
            if paused:
                selector.register(listener, selectors.EVENT_READ)
                paused = False


def serve_naive(listener: socket.socket) -> None:
    """Retry accept() at once after any error: the listener stays readable, so it spins."""
    held: list[socket.socket] = []
    failures = 0
    while True:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            failures += 1
            if failures == 1:
                highest = max(s.fileno() for s in [listener, *held])
                emit("emfile", errno=errno_name(exc), highest_fd=highest)
            continue
        held.append(conn)
        emit("accepted", fd=conn.fileno())


async def serve_asyncio(listener: socket.socket) -> None:
    """asyncio.start_server on the listener; its exception handler reports EMFILE."""
    loop = asyncio.get_running_loop()

    def report(_: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        emit("emfile", errno=errno_name(exc), message=context.get("message"))

    loop.set_exception_handler(report)

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        emit("accepted", fd=writer.get_extra_info("socket").fileno())
        await reader.read()
        writer.close()
        await writer.wait_closed()  # the descriptor is free once this returns
        emit("closed")

    await asyncio.start_server(hold, sock=listener)
    await asyncio.Event().wait()


def child_main(argv: list[str]) -> None:
    """Entry point of the child: `flavour limit`."""
    flavour, limit = argv[0], int(argv[1])
    nr_open_probe = probe_nr_open()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if flavour == "uvloop":
        try:
            import uvloop
        except ImportError:
            emit("unavailable", reason="uvloop is not installed")
            return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK, 0))
    listener.listen(CHILD_BACKLOG)
    emit("listening", port=listener.getsockname()[1], raise_past_nr_open=nr_open_probe)
    if flavour == "selector":
        serve_selector(listener)
    elif flavour == "naive":
        serve_naive(listener)
    elif flavour == "asyncio":
        asyncio.run(serve_asyncio(listener))
    else:
        uvloop.run(serve_asyncio(listener))


# --- the parent --------------------------------------------------------------------


class Child:
    """A child accept loop with a lowered RLIMIT_NOFILE, and the events it reported."""

    def __init__(self, flavour: str, limit: int) -> None:
        self.flavour = flavour
        self.limit = limit
        self.events: list[dict[str, Any]] = []
        self.clients: list[socket.socket] = []
        self.port = 0
        self._pending = bytearray()
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        code = (
            "import sys; from framelab.experiments.limits import child_main; "
            "child_main(sys.argv[1:])"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, flavour, str(limit)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
        )

    def fileno(self) -> int:
        """The child's stdout, so select() can wait on children directly."""
        assert self.process.stdout is not None
        return self.process.stdout.fileno()

    def feed(self) -> bool:
        """Read what the child wrote (it is readable); False at EOF."""
        chunk = os.read(self.fileno(), 65536)
        self._pending.extend(chunk)
        *lines, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest)
        self.events += [json.loads(line) for line in lines if line]
        return bool(chunk)

    def count(self, event: str) -> int:
        return sum(e["event"] == event for e in self.events)

    def first(self, event: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == event), None)

    def times(self, event: str) -> list[float]:
        return [e["t"] for e in self.events if e["event"] == event]

    def cpu_ms(self) -> float:
        """utime + stime of the child so far (/proc/<pid>/stat, clock ticks)."""
        with open(f"/proc/{self.process.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")

    def connect(self, how_many: int) -> None:
        self.clients += [
            socket.create_connection((LOOPBACK, self.port), timeout=2.0) for _ in range(how_many)
        ]

    def shed(self) -> int:
        """Clients the child's side closed without the application seeing them."""
        return sum(tcp_info(c).state == "CLOSE_WAIT" for c in self.clients)

    def settled(self) -> bool:
        """It hit its limit, and each connection is accepted (event read), shed or queued."""
        shed = self.shed()
        if not (self.count("emfile") or shed):
            return False
        queued = kernel_view(self.port).accept_queue
        return self.count("accepted") + shed + queued >= len(self.clients)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        close_all(self.clients)


def pump(children: list[Child], timeout: float, done: Callable[[], bool] = lambda: False) -> None:
    """Collect every child's events for up to `timeout` seconds, or until `done()`."""
    deadline = time.monotonic() + timeout
    open_pipes = list(children)
    while open_pipes and not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select(open_pipes, [], [], left)
        for child in ready:
            if not child.feed():
                open_pipes.remove(child)


# --- what was observed ------------------------------------------------------------


@dataclass(frozen=True)
class KernelView:
    """The listener's port as /proc/net/tcp shows it."""

    accept_queue: int  # -1: no listener row
    established_without_descriptor: int
    held_by_child: int


@dataclass(frozen=True)
class QueuedClientSend:
    """The last client, still in the accept queue, sends: where do its bytes go?"""

    sent_bytes: int
    server_row_rx_queue: int | None
    server_row_has_descriptor: bool


@dataclass(frozen=True)
class AtLimit:
    """What the child, the kernel and the clients show once the child hit its limit."""

    accepted: int
    highest_fd: int
    accept_error: str | None
    error_message: str | None
    kernel: KernelView
    client_states: dict[str, int]
    queued_client_send: QueuedClientSend | None


@dataclass(frozen=True)
class Recovery:
    """Accepts after descriptors were freed: how many, and how soon."""

    descriptors_freed: int
    accepted_again: int
    first_accept_after_freeing_ms: float | None
    first_accept_after_last_emfile_ms: float | None


@dataclass(frozen=True)
class ErrorReports:
    """How often the loop reported EMFILE, in bursts (a gap over 0.5 s starts one)."""

    emfile_reports: int
    reports_per_burst: list[int]
    gaps_between_bursts_ms: list[int]


@dataclass
class LoopRun:
    """One accept loop's run, filled in as the steps happen (None: not reached)."""

    unavailable: str | None = None
    raise_past_nr_open: str | None = None
    at_limit: AtLimit | None = None
    cpu_ms_over_window: int | None = None
    window_ms: int | None = None
    recovery: Recovery | None = None
    errors: ErrorReports | None = None

    def to_json(self) -> dict[str, Any]:
        """One flat record per loop, the steps not reached left out."""
        data: dict[str, Any] = {
            "unavailable": self.unavailable,
            "raise_past_nr_open": self.raise_past_nr_open,
            **(asdict(self.at_limit) if self.at_limit else {}),
            "cpu_ms_over_window": self.cpu_ms_over_window,
            "window_ms": self.window_ms,
            "recovery": asdict(self.recovery) if self.recovery else None,
            **(asdict(self.errors) if self.errors else {}),
        }
        return {key: value for key, value in data.items() if value is not None}


@dataclass(frozen=True)
class LimitsSeen:
    """Everything C37 is judged on: the limits in force and every accept loop's run."""

    limits_in_force: dict[str, Any]
    child_limit: int
    probe_as_root: bool
    loops: dict[str, LoopRun]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.limits_in_force,
            "child_RLIMIT_NOFILE": self.child_limit,
            "nr_open_probe_as_root": self.probe_as_root,
            "accept_loops": {name: run.to_json() for name, run in self.loops.items()},
        }


# --- observing -----------------------------------------------------------------------


def kernel_view(port: int) -> KernelView:
    """The listener's accept queue and the connections no process holds a descriptor for."""
    rows = connections_on_port(port)
    listening = [e for e in rows if e.state == "LISTEN"]
    children = [e for e in rows if e.local[1] == port and e.state != "LISTEN"]
    return KernelView(
        accept_queue=listening[0].rx_queue if listening else -1,
        established_without_descriptor=sum(
            e.state == "ESTABLISHED" and e.inode == 0 for e in children
        ),
        held_by_child=sum(e.inode != 0 for e in children),
    )


def queued_client_sends(child: Child) -> QueuedClientSend | None:
    """The last client is still in the accept queue: can it send, and where do the bytes go?"""
    client = child.clients[-1]
    if tcp_info(client).state != "ESTABLISHED":
        return None
    sent = client.send(b"ping")
    remote = address_of(client)
    rows = [
        e
        for e in connections_on_port(child.port)
        if e.local[1] == child.port and e.remote == remote
    ]
    return QueuedClientSend(
        sent_bytes=sent,
        server_row_rx_queue=rows[0].rx_queue if rows else None,
        server_row_has_descriptor=bool(rows and rows[0].inode),
    )


def emfile_bursts(times: list[float]) -> list[list[float]]:
    """EMFILE report times grouped into bursts (a gap of more than 0.5 s starts a new one)."""
    bursts: list[list[float]] = []
    for t in times:
        if bursts and t - bursts[-1][-1] <= 0.5:
            bursts[-1].append(t)
        else:
            bursts.append([t])
    return bursts


def at_limit(child: Child) -> AtLimit:
    error = child.first("emfile")
    fds = [e["fd"] for e in child.events if e["event"] == "accepted"]
    return AtLimit(
        accepted=child.count("accepted"),
        highest_fd=max([*fds, error.get("highest_fd", -1) if error else -1]),
        accept_error=error["errno"] if error else None,
        error_message=error.get("message") if error else None,
        kernel=kernel_view(child.port),
        client_states=dict(Counter(tcp_info(c).state for c in child.clients)),
        queued_client_send=queued_client_sends(child),
    )


def close_accepted(child: Child) -> None:
    """The clients of FREED accepted connections close: the child gets descriptors back."""
    close_all(child.clients[:FREED])
    child.clients = child.clients[FREED:]


def recovery(child: Child, accepted: int, freed_at: float) -> Recovery:
    resumed = child.times("accepted")[accepted:]
    errors_before = [t for t in child.times("emfile") if t < freed_at]
    first = resumed[0] if resumed else None
    return Recovery(
        descriptors_freed=FREED,
        accepted_again=len(resumed),
        first_accept_after_freeing_ms=round((first - freed_at) * 1000, 1) if first else None,
        first_accept_after_last_emfile_ms=(
            round((first - errors_before[-1]) * 1000, 1) if first and errors_before else None
        ),
    )


def error_reports(child: Child) -> ErrorReports:
    bursts = emfile_bursts(child.times("emfile"))
    return ErrorReports(
        emfile_reports=child.count("emfile"),
        reports_per_burst=[len(burst) for burst in bursts],
        gaps_between_bursts_ms=[round((b[0] - a[0]) * 1000) for a, b in itertools.pairwise(bursts)],
    )


def measure_cpu(children: list[Child], window: float) -> tuple[dict[str, int], int]:
    """Each child's CPU ms over the same window (its events kept being read); the window ms."""
    before = {c.flavour: c.cpu_ms() for c in children}
    started = time.monotonic()
    pump(children, window)
    elapsed = round((time.monotonic() - started) * 1000)
    return {c.flavour: round(c.cpu_ms() - before[c.flavour]) for c in children}, elapsed


def start_children(runs: dict[str, LoopRun]) -> list[Child]:
    """Every flavour's child, listening; those that could not start are reported and dropped."""
    children = []
    for flavour in FLAVOURS:
        try:
            children.append(Child(flavour, DESCRIPTOR_LIMIT))
        except OSError as exc:  # e.g. an interpreter this user may not execute
            runs[flavour] = LoopRun(unavailable=f"could not start a child Python: {exc}")
    pump(
        children, 5.0, lambda: all(c.first("listening") or c.first("unavailable") for c in children)
    )
    running = []
    for child in children:
        started = child.first("listening")
        if started is None:
            reason = child.first("unavailable")
            runs[child.flavour] = LoopRun(
                unavailable=str(reason["reason"] if reason else "no start")
            )
            child.stop()
            continue
        child.port = started["port"]
        runs[child.flavour] = LoopRun(raise_past_nr_open=started["raise_past_nr_open"])
        running.append(child)
    return running


def run_children(ctx: RunContext) -> dict[str, LoopRun]:
    """All accept loops side by side, so the slow steps (asyncio's 1 s retry) overlap."""
    runs: dict[str, LoopRun] = {}
    running = start_children(runs)
    try:
        for child in running:
            child.connect(DESCRIPTOR_LIMIT + EXTRA_CONNECTIONS)
        pump(running, SETTLE_TIMEOUT, lambda: all(c.settled() for c in running))
        for child in running:
            runs[child.flavour].at_limit = at_limit(child)
        cpu, window = measure_cpu(running, 0.3 if ctx.quick else 0.5)
        for flavour, cpu_ms in cpu.items():
            runs[flavour].cpu_ms_over_window, runs[flavour].window_ms = cpu_ms, window
        for child in [c for c in running if c.flavour == "naive"]:
            child.stop()  # it spins: measured, done
            running.remove(child)
        accepted = {c.flavour: c.count("accepted") for c in running}
        closed = {c.flavour: c.count("closed") for c in running}
        freed_at = time.monotonic()
        for child in running:
            close_accepted(child)
        pump(
            running,
            SETTLE_TIMEOUT,
            lambda: all(c.count("closed") >= closed[c.flavour] + FREED for c in running),
        )
        for child in running:  # newcomers, for a loop that dropped its queue
            child.connect(FREED)
        pump(
            running,
            SETTLE_TIMEOUT,
            lambda: all(c.count("accepted") >= accepted[c.flavour] + FREED for c in running),
        )
        for child in running:
            runs[child.flavour].recovery = recovery(child, accepted[child.flavour], freed_at)
            runs[child.flavour].errors = error_reports(child)
    finally:
        for child in running:
            child.stop()
    return runs


def limits_in_force() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    file_nr = (sysctls(["fs.file-nr"])["fs.file-nr"] or "").split()
    return {
        "ulimit -n (RLIMIT_NOFILE soft, hard)": [soft, hard],
        **sysctls(["fs.file-max", "fs.nr_open"]),
        "fs.file-nr (allocated, free, max)": [int(x) for x in file_nr],
    }


# --- judging -------------------------------------------------------------------------


def judge_c37(seen: LimitsSeen) -> ClaimResult:
    """C37 from the observations alone: EMFILE at the limit while the kernel keeps completing."""
    selector = seen.loops.get("selector", LoopRun(unavailable="not run"))
    edge = selector.at_limit
    if edge is None:
        return skipped(NAME, "C37", f"the accept loop did not run: {selector.unavailable}")
    limits = seen.limits_in_force
    parts = [
        Part(
            "the number of connections is bounded by the open-file limit (ulimit -n)",
            edge.accept_error == "EMFILE" and edge.highest_fd == seen.child_limit - 1,
            f"with RLIMIT_NOFILE={seen.child_limit} the child accepted {edge.accepted} connections"
            f" (highest fd {edge.highest_fd}), then accept() failed with {edge.accept_error};"
            f" the kernel still completed {edge.kernel.established_without_descriptor} more,"
            f" which waited in the accept queue with ESTABLISHED clients"
            f"{loop_sentences(seen.loops)}",
        ),
        Part(
            "and by the system-wide limit (fs.file-max)",
            None,
            f"not exercised: fs.file-max is {limits.get('fs.file-max')} and not per namespace, "
            "so reaching it would starve every process on this machine (ulimit -n here: "
            f"{limits.get('ulimit -n (RLIMIT_NOFILE soft, hard)')}, fs.nr_open="
            f"{limits.get('fs.nr_open')})",
        ),
    ]
    return judge_parts(NAME, "C37", parts, seen.to_json())


def loop_sentences(loops: dict[str, LoopRun]) -> str:
    """'; a naive retry loop burned ...': one clause per loop that got that far."""
    clauses = []
    naive, selector = loops.get("naive"), loops.get("selector")
    if naive and naive.cpu_ms_over_window is not None and selector:
        clauses.append(
            f"a naive retry loop burned {naive.cpu_ms_over_window} ms CPU in"
            f" {naive.window_ms} ms, the selector loop {selector.cpu_ms_over_window} ms"
        )
    if selector and selector.recovery:
        clauses.append(
            f"closing {FREED} connections let {selector.recovery.accepted_again} more in"
        )
    asyncio_run = loops.get("asyncio")
    if asyncio_run and asyncio_run.at_limit and asyncio_run.errors and asyncio_run.recovery:
        clauses.append(
            f"asyncio reported '{asyncio_run.at_limit.error_message}'"
            f" {asyncio_run.errors.reports_per_burst} times per burst, paused and accepted again"
            f" {asyncio_run.recovery.first_accept_after_last_emfile_ms} ms after its last EMFILE"
        )
    uv = loops.get("uvloop")
    if uv and uv.at_limit and uv.errors:
        shed = uv.at_limit.client_states.get("CLOSE_WAIT", 0)
        clauses.append(
            f"uvloop reported {uv.errors.emfile_reports} errors and closed {shed} queued"
            " connections instead"
        )
    return "".join(f"; {clause}" for clause in clauses)


def check_c37(ctx: RunContext) -> ClaimResult:
    seen = LimitsSeen(limits_in_force(), DESCRIPTOR_LIMIT, ctx.root, run_children(ctx))
    return judge_c37(seen)


def run(ctx: RunContext) -> list[ClaimResult]:
    return [check_c37(ctx)]


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C37",),
    needs_root="no",
    description=(
        "RLIMIT_NOFILE in a child: accept() gets EMFILE while the kernel keeps completing"
        " connections; CPU, recovery, and what asyncio and uvloop do"
    ),
    run=run,
)
