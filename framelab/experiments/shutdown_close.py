"""close() versus shutdown(), and closing with unread data (claims C21-C24, C28).

What the notes say, checked on loopback with plain sockets:

- C21: shutdown(SHUT_WR) ends one direction (the peer reads EOF, yet can still
  send to us) and keeps the descriptor; close() releases the descriptor.
- C22: with two descriptors for one socket (dup), close() of one sends nothing;
  shutdown() on one sends FIN for every holder (the other's send then fails).
- C23: send() after shutdown(SHUT_WR) fails with EPIPE ("Broken pipe").
- C24: recv() on a closed Python socket fails (OSError, EBADF).
- C28: close() with unread data in the receive buffer sends RST, not FIN
  (TcpExt.TCPAbortOnClose counts it; the peer's recv fails ECONNRESET).

asyncio changes C28 for its users: it reads eagerly into its own buffer, so
when a handler that never read calls writer.close() the kernel's queue is
already empty and FIN goes out. That is observed on the default loop and on
uvloop, and against a handler that paused reading (data left in the kernel).
"""

from __future__ import annotations

import asyncio
import select
import signal
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any, cast

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts
from framelab.lab.capture import Capture
from framelab.lab.kernel import (
    ProcTcpEntry,
    counter_delta,
    endpoint_state,
    errno_name,
    netstat_counters,
    tcp_entry,
    tcp_state,
)
from framelab.lab.loops import event_loops
from framelab.lab.sockets import (
    LOOPBACK,
    Address,
    address_of,
    connect_to,
    listening_socket,
    recv_outcome,
    send_error,
)
from framelab.lab.traces import (
    TRACE_LIMIT,
    fin_rst_sent,
    maybe_capture,
    short_trace,
    titled,
    wait_for_flag,
)
from framelab.lab.waiting import poll_until_async

NAME = "shutdown_close"
#: how long a recv waits for an event that should come at once (seconds)
EVENT_TIMEOUT = 2.0
UNREAD = b"data the server never reads\n" * 8


# --- what went out on the wire -------------------------------------------------------


@dataclass(frozen=True)
class WireFlags:
    """Did one end send a FIN, an RST? None for both when nothing was captured."""

    fin: bool | None
    rst: bool | None


def flags_on_wire(
    cap: Capture | None, src_port: int, dst_port: int | None = None, since: float = 0.0
) -> WireFlags:
    """The capture's FIN/RST answer as typed fields, for the judges to read."""
    sent = fin_rst_sent(cap, src_port, dst_port, since)
    return WireFlags(fin=sent["fin"], rst=sent["rst"])


# --- C21: half-close, descriptor kept; close releases it ------------------------------


def descriptor_usable(sock: socket.socket) -> tuple[bool, str | None]:
    """(getsockname works, errno name when it does not)."""
    try:
        sock.getsockname()
    except OSError as exc:
        return False, errno_name(exc)
    return True, None


@dataclass(frozen=True)
class HalfClose:
    """shutdown(SHUT_WR), the peer's reply, then close(): what each step left."""

    peer_recv_after_shut_wr: str
    reverse_data_received: bool
    fileno_after_shutdown: int
    getsockname_after_shutdown: bool
    state_after_shutdown: str
    client_sent_after_shutdown: WireFlags
    fileno_after_close: int
    getsockname_after_close: bool
    getsockname_error_after_close: str | None


@dataclass(frozen=True)
class ShutBoth:
    """shutdown(SHUT_RDWR): what each end read, and whether the descriptor stayed."""

    peer_recv: str
    own_recv: str
    fileno: int
    getsockname: bool


def half_close(listener: socket.socket, cap: Capture | None) -> tuple[HalfClose, list[str]]:
    """shutdown(SHUT_WR): the peer reads EOF and still sends; close() frees the fd."""
    pair = connect_to(listener)
    try:
        started = time.monotonic()
        pair.client.shutdown(socket.SHUT_WR)
        wait_for_flag(cap, pair.client_port, "F", EVENT_TIMEOUT, started)
        peer_recv = recv_outcome(pair.server, EVENT_TIMEOUT)
        reply = b"sent after reading EOF"
        pair.server.sendall(reply)
        pair.client.settimeout(EVENT_TIMEOUT)
        got = pair.client.recv(len(reply) * 2)
        usable, _ = descriptor_usable(pair.client)
        fileno_after_shutdown = pair.client.fileno()
        state = tcp_state(pair.client)
        sent = flags_on_wire(cap, pair.client_port, pair.server_port, started)
        pair.client.close()
        usable_after_close, error = descriptor_usable(pair.client)
        seen = HalfClose(
            peer_recv_after_shut_wr=peer_recv,
            reverse_data_received=got == reply,
            fileno_after_shutdown=fileno_after_shutdown,
            getsockname_after_shutdown=usable,
            state_after_shutdown=state,
            client_sent_after_shutdown=sent,
            fileno_after_close=pair.client.fileno(),
            getsockname_after_close=usable_after_close,
            getsockname_error_after_close=error,
        )
        return seen, short_trace(cap, pair.client_port, started, 8)
    finally:
        pair.close()


def shutdown_both(listener: socket.socket) -> ShutBoth:
    """shutdown(SHUT_RDWR): both directions end, the descriptor stays."""
    pair = connect_to(listener)
    try:
        pair.client.shutdown(socket.SHUT_RDWR)
        usable, _ = descriptor_usable(pair.client)
        return ShutBoth(
            peer_recv=recv_outcome(pair.server, EVENT_TIMEOUT),
            own_recv=recv_outcome(pair.client, EVENT_TIMEOUT),
            fileno=pair.client.fileno(),
            getsockname=usable,
        )
    finally:
        pair.close()


def check_c21(listener: socket.socket, cap: Capture | None) -> ClaimResult:
    half, trace = half_close(listener, cap)
    both = shutdown_both(listener)
    return judge_c21(half, both, titled("shutdown(SHUT_WR), peer replies, close()", trace))


def judge_c21(half: HalfClose, both: ShutBoth, trace: list[str]) -> ClaimResult:
    """C21 in four parts: one direction, or both, the descriptor kept; close() frees it."""
    parts = [
        Part(
            "shutdown() acts on one direction: SHUT_WR ends ours, the peer's still flows",
            half.peer_recv_after_shut_wr == "EOF" and half.reverse_data_received,
            f"after shutdown(SHUT_WR) the peer read {half.peer_recv_after_shut_wr} and its "
            f"reply {'reached us' if half.reverse_data_received else 'did not reach us'} "
            f"(we were {half.state_after_shutdown})",
        ),
        Part(
            "or on both: SHUT_RDWR",
            both.peer_recv == "EOF" and both.own_recv == "EOF",
            f"after shutdown(SHUT_RDWR) the peer read {both.peer_recv}, our own recv() "
            f"{both.own_recv}",
        ),
        Part(
            "without releasing the descriptor",
            half.fileno_after_shutdown >= 0
            and half.getsockname_after_shutdown
            and both.getsockname,
            f"fileno() {half.fileno_after_shutdown} after SHUT_WR and {both.fileno} after "
            f"SHUT_RDWR; getsockname() "
            f"{'worked' if half.getsockname_after_shutdown else 'failed'}",
        ),
        Part(
            "close() releases the socket",
            half.fileno_after_close == -1 and not half.getsockname_after_close,
            f"after close() fileno() is {half.fileno_after_close} and getsockname() "
            + (
                f"fails {half.getsockname_error_after_close}"
                if not half.getsockname_after_close
                else "still works"
            ),
        ),
    ]
    observed = {"shut_wr_then_close": asdict(half), "shut_rdwr": asdict(both)}
    return judge_parts(NAME, "C21", parts, observed, trace=trace)


# --- C22: two descriptors, one socket ------------------------------------------------


@dataclass(frozen=True)
class SharedSocket:
    """One socket behind several descriptors: close() of one, then shutdown() of another."""

    peer_recv_after_one_close: str
    client_state_after_one_close: str | None  # None: the kernel forgot the connection
    client_sent_after_one_close: WireFlags
    peer_recv_after_shutdown_via_another_fd: str
    send_error_on_other_fd: str | None  # None: the send went through
    client_sent_after_shutdown: WireFlags
    quiet_window_s: float  # how long the peer waited for something after the close


def shared_socket(
    listener: socket.socket, cap: Capture | None, quiet: float
) -> tuple[SharedSocket, list[str]]:
    """close() one of two dup'ed descriptors, then shutdown() through another."""
    pair = connect_to(listener)
    other = pair.client.dup()
    third: socket.socket | None = None
    try:
        started = time.monotonic()
        pair.client.close()
        peer_after_close = recv_outcome(pair.server, quiet)
        state_after_close = endpoint_state(pair.client_address, pair.server_address)
        sent_after_close = flags_on_wire(cap, pair.client_port, pair.server_port, started)
        third = other.dup()
        shut = time.monotonic()
        third.shutdown(socket.SHUT_WR)
        wait_for_flag(cap, pair.client_port, "F", EVENT_TIMEOUT, shut)
        seen = SharedSocket(
            peer_recv_after_one_close=peer_after_close,
            client_state_after_one_close=state_after_close,
            client_sent_after_one_close=sent_after_close,
            peer_recv_after_shutdown_via_another_fd=recv_outcome(pair.server, EVENT_TIMEOUT),
            send_error_on_other_fd=send_error(other),
            client_sent_after_shutdown=flags_on_wire(cap, pair.client_port, pair.server_port, shut),
            quiet_window_s=quiet,
        )
        return seen, short_trace(cap, pair.client_port, started, 8)
    finally:
        other.close()
        if third is not None:
            third.close()
        pair.close()


def check_c22(listener: socket.socket, cap: Capture | None, quiet: float) -> ClaimResult:
    seen, trace = shared_socket(listener, cap, quiet)
    return judge_c22(seen, titled("dup(); close() one; shutdown() another", trace))


def judge_c22(seen: SharedSocket, trace: list[str]) -> ClaimResult:
    """C22 in two parts: closing one descriptor is silent, shutdown() reaches every one."""
    silent = seen.client_sent_after_one_close
    wire = (
        "not captured (needs root)"
        if silent.fin is None
        else f"{'a FIN' if silent.fin else 'no FIN'}, {'an RST' if silent.rst else 'no RST'}"
    )
    parts = [
        Part(
            "close() of one of several descriptors sends nothing",
            seen.peer_recv_after_one_close == "timeout"
            and seen.client_state_after_one_close == "ESTABLISHED"
            and silent.fin in (False, None)
            and silent.rst in (False, None),
            f"after closing one of two descriptors the peer's recv() gave "
            f"{seen.peer_recv_after_one_close} within {seen.quiet_window_s} s; our end "
            f"was {seen.client_state_after_one_close}; on the wire: {wire}",
        ),
        Part(
            "shutdown() affects every holder",
            seen.peer_recv_after_shutdown_via_another_fd == "EOF"
            and seen.send_error_on_other_fd == "EPIPE",
            f"shutdown(SHUT_WR) through a third descriptor: the peer read "
            f"{seen.peer_recv_after_shutdown_via_another_fd}, and send() on the second "
            f"failed {seen.send_error_on_other_fd}",
        ),
    ]
    return judge_parts(NAME, "C22", parts, asdict(seen), trace=trace)


# --- C23, C24: errors after shutdown and close ----------------------------------------


@dataclass(frozen=True)
class SendAfterShutdown:
    """What send() after shutdown(SHUT_WR) raised, and how SIGPIPE is handled."""

    exception: str | None  # the exception's class name; None: send() went through
    errno: str | None
    strerror: str | None
    sigpipe_disposition: str


def send_after_shutdown(listener: socket.socket) -> SendAfterShutdown:
    """send() after shutdown(SHUT_WR): EPIPE, not a signal (Python ignores SIGPIPE)."""
    pair = connect_to(listener)
    try:
        pair.client.shutdown(socket.SHUT_WR)
        error: OSError | None = None
        try:
            pair.client.send(b"too late")
        except OSError as exc:
            error = exc
    finally:
        pair.close()
    sigpipe = signal.getsignal(signal.SIGPIPE)
    return SendAfterShutdown(
        exception=type(error).__name__ if error else None,
        errno=errno_name(error),
        strerror=error.strerror if error else None,
        sigpipe_disposition=getattr(sigpipe, "name", str(sigpipe)),
    )


def check_c23(listener: socket.socket) -> ClaimResult:
    return judge_c23(send_after_shutdown(listener))


def judge_c23(seen: SendAfterShutdown) -> ClaimResult:
    """C23: the write after shutting down output fails with EPIPE."""
    part = Part(
        'writing after shutting down output fails with "broken pipe"',
        seen.errno == "EPIPE",
        f"send() after shutdown(SHUT_WR) raised {seen.exception} ({seen.errno}, "
        f"'{seen.strerror}'); SIGPIPE is {seen.sigpipe_disposition} in Python",
    )
    return judge_parts(NAME, "C23", [part], asdict(seen))


@dataclass(frozen=True)
class RecvAfterClose:
    """What recv() on a closed Python socket raised."""

    exception: str | None  # the exception's class name; None: recv() returned
    errno: str | None
    message: str | None
    fileno_after_close: int


def recv_after_close(listener: socket.socket) -> RecvAfterClose:
    """recv() on a closed Python socket."""
    pair = connect_to(listener)
    try:
        pair.client.close()
        error: OSError | None = None
        try:
            pair.client.recv(1)
        except OSError as exc:
            error = exc
    finally:
        pair.close()
    return RecvAfterClose(
        exception=type(error).__name__ if error else None,
        errno=errno_name(error),
        message=str(error) if error else None,
        fileno_after_close=pair.client.fileno(),
    )


def check_c24(listener: socket.socket) -> ClaimResult:
    return judge_c24(recv_after_close(listener))


def judge_c24(seen: RecvAfterClose) -> ClaimResult:
    """C24: reading after close() fails (with which error, the evidence says)."""
    failed = seen.exception is not None
    part = Part(
        "reading from a socket after close() fails",
        failed,
        f"recv() after close() raised {seen.exception} {seen.errno} "
        f"('{seen.message}'); fileno() was {seen.fileno_after_close}"
        if failed
        else "recv() after close() returned without an error",
    )
    return judge_parts(NAME, "C24", [part], asdict(seen))


# --- C28: close() with unread data ---------------------------------------------------


@dataclass(frozen=True)
class CloseWithData:
    """The server closed with the client's data unread (or read, as a control)."""

    server_readable_before_close: bool
    unread_bytes_at_close: int | None  # None: the connection's row was not found
    client_recv: str
    server_state_after_close: str | None  # None: the kernel forgot the server's end
    abort_on_close_delta: int  # TcpExt.TCPAbortOnClose
    server_sent: WireFlags


@dataclass(frozen=True)
class AsyncioClose:
    """An asyncio streams handler that never read the data called writer.close()."""

    kernel_unread_bytes_at_close: int | None  # None: the handler never got to look
    client_recv: str
    server_sent: WireFlags


def close_with_unread(
    listener: socket.socket, cap: Capture | None, read_first: bool
) -> tuple[CloseWithData, list[str]]:
    """The server closes with our data unread (or, as a control, after reading it)."""
    pair = connect_to(listener)
    try:
        pair.client.sendall(UNREAD)
        readable, _, _ = select.select([pair.server], [], [], EVENT_TIMEOUT)
        if read_first:
            pair.server.recv(len(UNREAD) * 2)
        queued = tcp_entry(pair.server_address, pair.client_address)
        before = netstat_counters()
        started = time.monotonic()
        pair.server.close()
        after = netstat_counters()
        wait_for_flag(cap, pair.server_port, "F" if read_first else "R", EVENT_TIMEOUT, started)
        delta = counter_delta(before, after)
        seen = CloseWithData(
            server_readable_before_close=bool(readable),
            unread_bytes_at_close=queued.rx_queue if queued else None,
            client_recv=recv_outcome(pair.client, EVENT_TIMEOUT),
            server_state_after_close=endpoint_state(pair.server_address, pair.client_address),
            abort_on_close_delta=delta.get("TcpExt.TCPAbortOnClose", 0),
            server_sent=flags_on_wire(cap, pair.server_port, pair.client_port, started),
        )
        return seen, short_trace(cap, pair.client_port, started, 4)
    finally:
        pair.close()


async def asyncio_close_unread(
    can_capture: bool, pause_reading: bool
) -> tuple[AsyncioClose, list[str]]:
    """An asyncio streams server that never reads our data calls writer.close()."""
    loop = asyncio.get_running_loop()
    server_ready = asyncio.Event()
    client_sent = asyncio.Event()
    kernel_unread: list[int | None] = []  # what the handler saw, once it looked

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if pause_reading:
            cast(asyncio.Transport, writer.transport).pause_reading()
        server_ready.set()
        await client_sent.wait()
        local = _address(writer.get_extra_info("sockname"))
        remote = _address(writer.get_extra_info("peername"))
        entry = await _kernel_queues_settled(local, remote, len(UNREAD) if pause_reading else 0)
        kernel_unread.append(entry.rx_queue if entry else None)
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    port = address_of(server.sockets[0])[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    try:
        with maybe_capture(can_capture, [port]) as cap:
            await loop.sock_connect(client, (LOOPBACK, port))
            await asyncio.wait_for(server_ready.wait(), EVENT_TIMEOUT)
            started = time.monotonic()
            await loop.sock_sendall(client, UNREAD)
            client_sent.set()
            # longer than the handler may wait for the queues, so its close is seen
            client_recv = await _async_recv_outcome(client, 2 * EVENT_TIMEOUT)
            client_port = address_of(client)[1]
            await asyncio.to_thread(wait_for_flag, cap, port, "FR", EVENT_TIMEOUT, started)
            server_sent = flags_on_wire(cap, port, client_port, started)
            trace = short_trace(cap, client_port, started, limit=100)[-3:]  # data, ack, close
    finally:
        client.close()
        server.close()
        await server.wait_closed()
    seen = AsyncioClose(
        kernel_unread_bytes_at_close=kernel_unread[0] if kernel_unread else None,
        client_recv=client_recv,
        server_sent=server_sent,
    )
    return seen, trace


def _address(name: Any) -> Address:
    return str(name[0]), int(name[1])


async def _kernel_queues_settled(
    local: Address, remote: Address, unread: int
) -> ProcTcpEntry | None:
    """Poll /proc until our data left the client's queue and `unread` bytes stay in
    the kernel's receive queue (0: the event loop has read it all into its buffer)."""

    def settled() -> ProcTcpEntry | None:
        server_end = tcp_entry(local, remote)
        client_end = tcp_entry(remote, local)
        drained = client_end is not None and client_end.tx_queue == 0
        if server_end is not None and server_end.rx_queue == unread and drained:
            return server_end
        return None

    return await poll_until_async(settled, EVENT_TIMEOUT) or tcp_entry(local, remote)


async def _async_recv_outcome(sock: socket.socket, timeout: float) -> str:
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno_name(exc) or type(exc).__name__
    return "data" if data else "EOF"


def asyncio_observations(can_capture: bool) -> tuple[dict[str, AsyncioClose], list[str]]:
    """Every event loop, reading and paused: keyed "<loop>_reading", "<loop>_paused_reading"."""
    observed: dict[str, AsyncioClose] = {}
    trace: list[str] = []
    for name, factory in event_loops().items():
        for paused in (False, True):
            with asyncio.Runner(loop_factory=factory) as runner:
                seen, lines = runner.run(asyncio_close_unread(can_capture, paused))
            label = f"{name}_{'paused_reading' if paused else 'reading'}"
            observed[label] = seen
            trace += titled(f"{label}: writer.close() with data never read by the app", lines)
    return observed, trace


def asyncio_meaning(reading: set[str], paused: set[str]) -> str:
    """What the asyncio outcomes say, worded from what they were."""
    said = (
        f"with the loop reading, the client saw {', '.join(sorted(reading))}; with reading "
        f"paused, {', '.join(sorted(paused))}"
    )
    if reading == {"EOF"} and paused == {"ECONNRESET"}:
        return said + (
            ": the loop had already read the data into its buffer, so writer.close() sent FIN;"
            " paused, the data stayed in the kernel and close() sent RST"
        )
    return said


def check_c28(listener: socket.socket, cap: Capture | None, can_capture: bool) -> ClaimResult:
    unread, t_unread = close_with_unread(listener, cap, read_first=False)
    control, t_control = close_with_unread(listener, cap, read_first=True)
    streams, t_streams = asyncio_observations(can_capture)
    trace = [
        *titled("close() with unread data", t_unread),
        *titled("read, then close()", t_control),
        *t_streams,
    ][:TRACE_LIMIT]
    return judge_c28(unread, control, streams, trace)


def judge_c28(
    unread: CloseWithData,
    control: CloseWithData,
    streams: dict[str, AsyncioClose],
    trace: list[str],
) -> ClaimResult:
    """C28 in two parts: close() with unread data sends RST, and not FIN (a read-first
    close and the asyncio runs are the contrast)."""
    sent, control_sent = unread.server_sent, control.server_sent

    def wire(flags: WireFlags) -> str:
        if flags.fin is None:
            return "not captured"
        return f"{'FIN' if flags.fin else 'no FIN'}, {'RST' if flags.rst else 'no RST'}"

    loops = ", ".join(f"{k}: client {v.client_recv}" for k, v in streams.items())
    reading = {v.client_recv for k, v in streams.items() if "paused" not in k}
    paused = {v.client_recv for k, v in streams.items() if k.endswith("_paused_reading")}
    parts = [
        Part(
            "close() with unread data in the receive buffer sends RST",
            unread.client_recv == "ECONNRESET"
            and unread.server_state_after_close is None
            and unread.abort_on_close_delta >= 1
            and sent.rst in (True, None),
            f"close() with {unread.unread_bytes_at_close} unread bytes: client "
            f"{unread.client_recv}, server end {unread.server_state_after_close or 'gone'}"
            f", TCPAbortOnClose +{unread.abort_on_close_delta}, on the wire: {wire(sent)}",
        ),
        Part(
            "instead of FIN",
            sent.fin in (False, None)
            and control.client_recv == "EOF"
            and control_sent.rst in (False, None),
            f"with unread data the closer sent {wire(sent)}; after reading it first, close() "
            f"gave the client {control.client_recv} ({wire(control_sent)}). asyncio streams "
            f"({loops}): {asyncio_meaning(reading, paused)}",
        ),
    ]
    observed = {
        "unread_close": asdict(unread),
        "read_then_close": asdict(control),
        "asyncio_streams": {label: asdict(seen) for label, seen in streams.items()},
    }
    return judge_parts(NAME, "C28", parts, observed, trace=trace)


def run(ctx: RunContext) -> list[ClaimResult]:
    listener = listening_socket()
    try:
        with maybe_capture(ctx.can_capture, [address_of(listener)[1]]) as cap:
            results = [
                check_c21(listener, cap),
                check_c22(listener, cap, ctx.quiet),
                check_c23(listener),
                check_c24(listener),
                check_c28(listener, cap, ctx.can_capture),
            ]
    finally:
        listener.close()
    return results


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C21", "C22", "C23", "C24", "C28"),
    needs_root="no",
    description="shutdown vs close, dup'ed descriptors, EPIPE/EBADF, close with unread data",
    run=run,
)
