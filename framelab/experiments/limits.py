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
from pathlib import Path
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.observe import connections_on_port, errno_name, sysctls, tcp_info
from framelab.experiments.queues import LOOPBACK, address_of, close_all
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, judge, skipped

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
        queued = kernel_view(self.port)["accept_queue"]
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


def kernel_view(port: int) -> dict[str, int]:
    """The listener's accept queue and the connections no process holds a descriptor for."""
    rows = connections_on_port(port)
    listening = [e for e in rows if e.state == "LISTEN"]
    children = [e for e in rows if e.local[1] == port and e.state != "LISTEN"]
    return {
        "accept_queue": listening[0].rx_queue if listening else -1,
        "established_without_descriptor": sum(
            e.state == "ESTABLISHED" and e.inode == 0 for e in children
        ),
        "held_by_child": sum(e.inode != 0 for e in children),
    }


def queued_client_sends(child: Child) -> dict[str, Any] | None:
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
    return {
        "sent_bytes": sent,
        "server_row_rx_queue": rows[0].rx_queue if rows else None,
        "server_row_has_descriptor": bool(rows and rows[0].inode),
    }


def emfile_episodes(child: Child) -> list[list[float]]:
    """EMFILE reports grouped into bursts (a gap of more than 0.5 s starts a new one)."""
    bursts: list[list[float]] = []
    for t in child.times("emfile"):
        if bursts and t - bursts[-1][-1] <= 0.5:
            bursts[-1].append(t)
        else:
            bursts.append([t])
    return bursts


def snapshot(child: Child) -> dict[str, Any]:
    """What the child, the kernel and the clients show once the child hit its limit."""
    error = child.first("emfile")
    fds = [e["fd"] for e in child.events if e["event"] == "accepted"]
    return {
        "accepted": child.count("accepted"),
        "highest_fd": max([*fds, error.get("highest_fd", -1) if error else -1]),
        "accept_error": error["errno"] if error else None,
        "error_message": error.get("message") if error else None,
        "kernel": kernel_view(child.port),
        "client_states": dict(Counter(tcp_info(c).state for c in child.clients)),
        "queued_client_send": queued_client_sends(child),
    }


def close_accepted(child: Child) -> None:
    """The clients of FREED accepted connections close: the child gets descriptors back."""
    close_all(child.clients[:FREED])
    child.clients = child.clients[FREED:]


def recovery(child: Child, accepted: int, freed_at: float) -> dict[str, Any]:
    """Accepts after descriptors were freed: how many, and how soon."""
    resumed = child.times("accepted")[accepted:]
    errors_before = [t for t in child.times("emfile") if t < freed_at]
    first = resumed[0] if resumed else None
    return {
        "descriptors_freed": FREED,
        "accepted_again": len(resumed),
        "first_accept_after_freeing_ms": round((first - freed_at) * 1000, 1) if first else None,
        "first_accept_after_last_emfile_ms": (
            round((first - errors_before[-1]) * 1000, 1) if first and errors_before else None
        ),
    }


def error_reports(child: Child) -> dict[str, Any]:
    bursts = emfile_episodes(child)
    return {
        "emfile_reports": child.count("emfile"),
        "reports_per_burst": [len(burst) for burst in bursts],
        "gaps_between_bursts_ms": [
            round((b[0] - a[0]) * 1000) for a, b in itertools.pairwise(bursts)
        ],
    }


def measure_cpu(children: list[Child], window: float) -> dict[str, dict[str, int]]:
    """Each child's CPU time over the same window, while its events keep being read."""
    before = {c.flavour: c.cpu_ms() for c in children}
    started = time.monotonic()
    pump(children, window)
    elapsed = round((time.monotonic() - started) * 1000)
    return {
        c.flavour: {"cpu_ms_over_window": round(c.cpu_ms() - before[c.flavour])}
        | {"window_ms": elapsed}
        for c in children
    }


def start_children(results: dict[str, dict[str, Any]]) -> list[Child]:
    """Every flavour's child, listening; those that could not start are reported and dropped."""
    children = []
    for flavour in FLAVOURS:
        try:
            children.append(Child(flavour, DESCRIPTOR_LIMIT))
        except OSError as exc:  # e.g. an interpreter this user may not execute
            results[flavour] = {"unavailable": f"could not start a child Python: {exc}"}
    pump(
        children, 5.0, lambda: all(c.first("listening") or c.first("unavailable") for c in children)
    )
    running = []
    for child in children:
        started = child.first("listening")
        if started is None:
            results[child.flavour] = {"unavailable": child.first("unavailable") or "no start"}
            child.stop()
            continue
        child.port = started["port"]
        results[child.flavour] = {"raise_past_nr_open": started["raise_past_nr_open"]}
        running.append(child)
    return running


def run_children(ctx: RunContext) -> dict[str, dict[str, Any]]:
    """All accept loops side by side, so the slow steps (asyncio's 1 s retry) overlap."""
    results: dict[str, dict[str, Any]] = {}
    running = start_children(results)
    try:
        for child in running:
            child.connect(DESCRIPTOR_LIMIT + EXTRA_CONNECTIONS)
        pump(running, 2.0, lambda: all(c.settled() for c in running))
        for child in running:
            results[child.flavour].update(snapshot(child))
        for flavour, cpu in measure_cpu(running, 0.3 if ctx.quick else 0.5).items():
            results[flavour].update(cpu)
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
            2.0,
            lambda: all(c.count("closed") >= closed[c.flavour] + FREED for c in running),
        )
        for child in running:  # newcomers, for a loop that dropped its queue
            child.connect(FREED)
        pump(
            running,
            2.5,
            lambda: all(c.count("accepted") >= accepted[c.flavour] + FREED for c in running),
        )
        for child in running:
            results[child.flavour]["recovery"] = recovery(child, accepted[child.flavour], freed_at)
            results[child.flavour].update(error_reports(child))
    finally:
        for child in running:
            child.stop()
    return results


def limits_in_force() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    file_nr = (sysctls(["fs.file-nr"])["fs.file-nr"] or "").split()
    return {
        "ulimit -n (RLIMIT_NOFILE soft, hard)": [soft, hard],
        **sysctls(["fs.file-max", "fs.nr_open"]),
        "fs.file-nr (allocated, free, max)": [int(x) for x in file_nr],
    }


def check_c37(ctx: RunContext) -> ClaimResult:
    limits = limits_in_force()
    loops = run_children(ctx)
    selector = loops["selector"]
    if "accepted" not in selector:
        return skipped(NAME, "C37", f"the accept loop did not run: {selector.get('unavailable')}")
    observed = {
        **limits,
        "child_RLIMIT_NOFILE": DESCRIPTOR_LIMIT,
        "nr_open_probe_as_root": ctx.root,
        "accept_loops": loops,
    }
    kernel = selector.get("kernel", {})
    holds = (
        selector.get("accept_error") == "EMFILE"
        and selector.get("highest_fd") == DESCRIPTOR_LIMIT - 1
        and kernel.get("established_without_descriptor", 0) > 0
    )
    asyncio_result = loops.get("asyncio", {})
    uvloop_result = loops.get("uvloop", {})
    asyncio_recovery = asyncio_result.get("recovery", {})
    uvloop_shed = uvloop_result.get("client_states", {}).get("CLOSE_WAIT", 0)
    summary = (
        f"with RLIMIT_NOFILE={DESCRIPTOR_LIMIT} the child accepted"
        f" {selector.get('accepted')} connections (highest fd {selector.get('highest_fd')}),"
        f" then accept() failed with {selector.get('accept_error')}; the kernel still"
        f" completed {kernel.get('established_without_descriptor')} more, which sat in the"
        f" accept queue with ESTABLISHED clients; a naive retry loop burned"
        f" {loops.get('naive', {}).get('cpu_ms_over_window')} ms CPU in"
        f" {loops.get('naive', {}).get('window_ms')} ms, the selector loop"
        f" {selector.get('cpu_ms_over_window')} ms; closing {FREED} connections let"
        f" {selector.get('recovery', {}).get('accepted_again')} more in; asyncio reported"
        f" '{asyncio_result.get('error_message')}'"
        f" {asyncio_result.get('reports_per_burst')} times per burst, paused and accepted"
        f" again {asyncio_recovery.get('first_accept_after_last_emfile_ms')} ms after"
        f" its last EMFILE; uvloop reported"
        f" {uvloop_result.get('emfile_reports')} errors and closed {uvloop_shed} queued"
        f" connections instead. ulimit -n here: {limits['ulimit -n (RLIMIT_NOFILE soft, hard)']},"
        f" fs.file-max={limits['fs.file-max']}, fs.nr_open={limits['fs.nr_open']}"
    )
    return judge(
        NAME,
        "C37",
        holds,
        observed,
        confirmed=summary,
        differs=f"the open-file limit did not bound accepted connections as claimed: {summary}",
    )


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
