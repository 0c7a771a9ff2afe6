"""Writing to a peer that has gone away (claim C25).

The notes say: the first write succeeds, the peer answers with RST, and the
next write fails with "broken pipe". On loopback, plain sockets:

- FIN then write: the peer close()s with nothing unread (FIN); our recv()
  sees EOF and our end sits in CLOSE_WAIT. The first send() is accepted; the
  peer's kernel has no socket to deliver it to and answers RST (seen in a
  capture as root; without root, our end leaving CLOSE_WAIT for CLOSE right
  after the send, and the Tcp.OutRsts counter, say the same). The next send()
  fails: the errno is recorded (Linux turns an RST in CLOSE_WAIT into EPIPE).
- RST without FIN: the peer closes with SO_LINGER(1, 0); the very first
  send() fails, with the errno the kernel chose (ECONNRESET expected), and
  the one after it.
- SIGPIPE: a failing send() also raises SIGPIPE, which kills a process by
  default. Python ignores SIGPIPE at start-up, so it gets BrokenPipeError
  instead; a child process that restores the default is killed, as a C
  program would be.
- asyncio (default loop and uvloop), after the peer's FIN: up to 8 rounds of
  writer.write() + await drain(), recording whether write() raises, what
  drain() raises (type, errno) and when, and what the loop logs ("socket.send()
  raised exception." is logged once a lost connection has been written to
  several times).

Cost: a few loopback connections, one short child process; well under 1 s.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts
from framelab.lab.capture import Capture
from framelab.lab.kernel import errno_name, netstat_counters, selected_delta, tcp_state
from framelab.lab.loops import asyncio_log, close_writer, connect_streams, on_each_loop
from framelab.lab.sockets import connect_to, listening_socket, recv_outcome, send_error, set_linger
from framelab.lab.traces import maybe_capture, short_trace, titled, wait_for_flag
from framelab.lab.waiting import poll, poll_until_async

NAME = "broken_pipe"
DATA = b"x" * 100
EVENT_TIMEOUT = 2.0
ASYNCIO_WRITES = 8
COUNTERS = ("Tcp.OutRsts", "Tcp.EstabResets", "TcpExt.TCPAbortOnData")
CONNLOST_WARNING = "socket.send() raised exception."

#: a process with SIGPIPE at its default action: the second send() should kill it
SIGPIPE_CHILD = """
import signal, sys
from framelab.lab.kernel import tcp_state
from framelab.lab.sockets import connected_pair
from framelab.lab.waiting import poll
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
pair = connected_pair()
pair.server.close()
pair.client.recv(1)
pair.client.send(b"x")
if poll(lambda: tcp_state(pair.client), "CLOSE", timeout=2) != "CLOSE":
    sys.exit(3)
pair.client.send(b"x")
sys.exit(0)
"""


def send_outcome(sock: socket.socket) -> str:
    """'sent N' or the errno name the send() failed with."""
    error = send_error(sock, DATA)
    return f"sent {len(DATA)}" if error is None else error


@dataclass(frozen=True)
class AfterFin:
    """The peer close()d (FIN) and is gone; we wrote three times."""

    recv_after_peer_close: str
    state_before_write: str | None
    first_send: str
    state_after_first_send: str | None
    #: None: no capture (not root)
    peer_rst_captured: bool | None
    second_send: str
    third_send: str
    counters: dict[str, int]


@dataclass(frozen=True)
class AfterRst:
    """The peer aborted (RST, no FIN); we wrote twice."""

    state_before_write: str | None
    first_send: str
    second_send: str


@dataclass(frozen=True)
class SigPipe:
    python_sigpipe: str
    child_with_default_sigpipe: str


def fin_then_write(listener: socket.socket, cap: Capture | None) -> tuple[AfterFin, list[str]]:
    """The peer sent FIN and is gone; we write twice."""
    with connect_to(listener) as pair:
        pair.server.close()  # nothing unread: FIN
        eof = recv_outcome(pair.client, EVENT_TIMEOUT)
        state_before = tcp_state(pair.client)
        counters = netstat_counters()
        started = time.monotonic()
        first = send_outcome(pair.client)
        state_after = poll(lambda: tcp_state(pair.client), "CLOSE", EVENT_TIMEOUT)
        rst = wait_for_flag(cap, pair.server_port, "R", EVENT_TIMEOUT, started)
        second = send_outcome(pair.client)
        third = send_outcome(pair.client)
        observed = AfterFin(
            recv_after_peer_close=eof,
            state_before_write=state_before,
            first_send=first,
            state_after_first_send=state_after,
            peer_rst_captured=None if cap is None else rst is not None,
            second_send=second,
            third_send=third,
            counters=selected_delta(counters, netstat_counters(), COUNTERS),
        )
        return observed, short_trace(cap, pair.client_port, limit=10)


def rst_then_write(listener: socket.socket, cap: Capture | None) -> tuple[AfterRst, list[str]]:
    """The peer aborted (SO_LINGER 0: RST, no FIN); we write twice."""
    with connect_to(listener) as pair:
        set_linger(pair.server, True, 0)
        started = time.monotonic()
        pair.server.close()
        state = poll(lambda: tcp_state(pair.client), "CLOSE", EVENT_TIMEOUT)
        wait_for_flag(cap, pair.server_port, "R", EVENT_TIMEOUT, started)
        first = send_outcome(pair.client)
        return AfterRst(state, first, send_outcome(pair.client)), short_trace(
            cap, pair.client_port, limit=8
        )


def sigpipe() -> SigPipe:
    """Python's own SIGPIPE disposition, and what the default does to a child."""
    disposition = signal.getsignal(signal.SIGPIPE)
    child = subprocess.run(
        [sys.executable, "-c", SIGPIPE_CHILD], capture_output=True, timeout=10, check=False
    )
    if child.returncode < 0:
        outcome = f"killed by {signal.Signals(-child.returncode).name}"
    else:
        outcome = f"exit status {child.returncode}"
    return SigPipe(getattr(disposition, "name", str(disposition)), outcome)


# -- asyncio and uvloop ---------------------------------------------------------------------
def describe(exc: BaseException) -> str:
    """'BrokenPipeError EPIPE' or "ConnectionResetError 'Connection lost'"."""
    code = errno_name(exc)
    if code:
        return f"{type(exc).__name__} {code}"
    text = re.sub(r"0x[0-9a-f]+", "0x...", str(exc))  # object addresses vary by run
    return f"{type(exc).__name__} {text!r}"


async def wait_for_reset(sock: socket.socket) -> str:
    """Our end's state once it leaves CLOSE_WAIT (an RST arrived), or after a deadline."""

    def left_close_wait() -> str | None:
        state = tcp_state(sock)
        return None if state == "CLOSE_WAIT" else state

    return await poll_until_async(left_close_wait, EVENT_TIMEOUT) or tcp_state(sock)


async def asyncio_broken_pipe() -> dict[str, Any]:
    listener = listening_socket()
    try:
        reader, writer, peer = await connect_streams(listener)
        sock = writer.get_extra_info("socket")  # read-only view: TCP_INFO still works
        peer.close()  # FIN
        eof = await asyncio.wait_for(reader.read(), EVENT_TIMEOUT)
        rounds: list[dict[str, Any]] = []
        with asyncio_log() as messages:
            for _ in range(ASYNCIO_WRITES):
                rounds.append(await write_and_drain(writer, messages))
                if rounds[-1] == {"write": None, "drain": None, "logged": 0}:
                    rounds[-1]["state_after"] = await wait_for_reset(sock)
            logged = list(messages)
        await close_writer(writer)
    finally:
        listener.close()
    return summarize_rounds(eof == b"", rounds, logged)


async def write_and_drain(writer: asyncio.StreamWriter, messages: list[str]) -> dict[str, Any]:
    """One write() + drain(): what each raised, and how many log lines it caused."""
    logged = len(messages)
    write_error = drain_error = None
    try:
        writer.write(DATA)
    except Exception as exc:  # uvloop raises from write() on a closed transport
        write_error = describe(exc)
    try:
        await writer.drain()
    except Exception as exc:
        drain_error = describe(exc)
    return {"write": write_error, "drain": drain_error, "logged": len(messages) - logged}


def first_index(rounds: list[dict[str, Any]], key: str) -> int | None:
    """1-based number of the first write whose `key` is set."""
    return next((i for i, r in enumerate(rounds, 1) if r[key]), None)


def summarize_rounds(eof: bool, rounds: list[dict[str, Any]], logged: list[str]) -> dict[str, Any]:
    first_drain = first_index(rounds, "drain")
    first_write = first_index(rounds, "write")
    warned = first_index(rounds, "logged")
    return {
        "saw_eof": eof,
        "writes": len(rounds),
        "state_after_first_write": rounds[0].get("state_after"),
        "write_raised_first_at": first_write,
        "write_raised": rounds[first_write - 1]["write"] if first_write else None,
        "drain_raised_first_at": first_drain,
        "drain_raised": rounds[first_drain - 1]["drain"] if first_drain else None,
        "drain_raised_later": sorted({r["drain"] for r in rounds[first_drain or len(rounds) :]}),
        "warning_first_at": warned,
        "warnings": sum(1 for m in logged if CONNLOST_WARNING in m),
        "log": sorted(set(logged)),
    }


# -- the claim ------------------------------------------------------------------------------
def run(ctx: RunContext) -> list[ClaimResult]:
    listener = listening_socket()
    try:
        with maybe_capture(ctx.can_capture, ports=[listener.getsockname()[1]]) as cap:
            after_fin, fin_trace = fin_then_write(listener, cap)
            after_rst, rst_trace = rst_then_write(listener, cap)
    finally:
        listener.close()
    loops: dict[str, dict[str, Any]] = on_each_loop(asyncio_broken_pipe)
    trace = [
        *titled("peer closed (FIN); we send twice", fin_trace),
        *titled("peer aborted (RST, SO_LINGER 0); we send twice", rst_trace),
    ]
    return [judge_c25(after_fin, after_rst, sigpipe(), loops, trace)]


def judge_c25(
    after_fin: AfterFin,
    after_rst: AfterRst,
    pipe_signal: SigPipe,
    loops: dict[str, dict[str, Any]],
    trace: list[str],
) -> ClaimResult:
    """C25 part by part, from the plain sockets; RST-only, SIGPIPE and the loops are context."""
    if after_fin.peer_rst_captured is None:  # no capture: only an RST moves CLOSE_WAIT to CLOSE
        answered = after_fin.state_after_first_send == "CLOSE"
        how = (
            f"not captured (needs root); our end went {after_fin.state_before_write} -> "
            f"{after_fin.state_after_first_send} after the send, Tcp.OutRsts "
            f"+{after_fin.counters.get('Tcp.OutRsts', 0)}"
        )
    else:
        answered = after_fin.peer_rst_captured
        how = f"RST {'captured' if answered else 'not captured'} from the peer's port"
    parts = [
        Part(
            "the first write to a peer that has gone away succeeds",
            after_fin.first_send.startswith("sent"),
            f"after the peer's FIN (recv: {after_fin.recv_after_peer_close}, our end "
            f"{after_fin.state_before_write}) the first send(): {after_fin.first_send}",
        ),
        Part("the peer answers it with RST", answered, how),
        Part(
            'the next write fails with "broken pipe"',
            after_fin.second_send == "EPIPE",
            f"second send(): {after_fin.second_send}, third: {after_fin.third_send}; after an "
            f"RST without FIN the first send() already failed with {after_rst.first_send}. "
            f"Python's SIGPIPE is {pipe_signal.python_sigpipe} (a child with the default was "
            f"{pipe_signal.child_with_default_sigpipe}). {loop_notes(loops)}",
        ),
    ]
    observed = {
        "after_fin": asdict(after_fin),
        "after_rst_without_fin": asdict(after_rst),
        "sigpipe": asdict(pipe_signal),
        "event_loops": loops,
    }
    return judge_parts(NAME, "C25", parts, observed, trace=trace)


def loop_notes(loops: dict[str, dict[str, Any]]) -> str:
    """What asyncio and uvloop raised and logged, one clause per loop."""
    return "; ".join(
        f"{name}: write() "
        + (
            f"raised {seen['write_raised'].split()[0]} from write {seen['write_raised_first_at']}"
            if seen["write_raised"]
            else "never raised"
        )
        + f", drain() raised {seen['drain_raised']} at write {seen['drain_raised_first_at']}"
        + f" then {', '.join(seen['drain_raised_later'])}"
        + (
            f", '{CONNLOST_WARNING}' logged from write {seen['warning_first_at']}"
            if seen["warnings"]
            else ", nothing logged"
        )
        for name, seen in loops.items()
    )


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C25",),
    needs_root="no",
    description=(
        "write to a closed peer: first send ok, RST back, then EPIPE (ECONNRESET after a bare"
        " RST); SIGPIPE; what asyncio and uvloop write()/drain() raise and log"
    ),
    run=run,
)
