"""Sticky packets observed: TCP keeps bytes, not message boundaries; framing restores them.

Self-contained on loopback: the raw and framed echo servers run in-process
(servers.runner.BackgroundServer) on ephemeral ports. Two patterns go through
both:
- merged: N small sends while the raw server is busy (its first read's
  observer waits until the client has sent everything, at most a second),
  so the sends pile up in the kernel and come out in fewer reads than sends;
- split: one send larger than a read, which the server reads in pieces.
The raw echo server reports its own read sizes (ServerConfig.on_read); the
client logs its reads of each echo. Through the framed server the same
payloads come back, decoded with framing.FrameDecoder, as exactly N messages,
compared byte for byte.

`observe_sticky()` returns a StickyReport (plain data, JSON-ready through
`to_json()`) and `render()` shows it as a table; `framelab sticky`
(sticky_cli.py) and `framelab demo` use both, sticky_plot.py draws it. Cost: about
2 x (N x size + large) bytes each way, bounded by the socket timeouts.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from framelab.clients.harness import (
    IoLog,
    Sender,
    ServerReads,
    connect,
    make_messages,
    read_frames,
    record_reads,
    send_burst,
)
from framelab.common.words import plural
from framelab.servers.config import LoopName, ServerConfig, default_loop
from framelab.servers.runner import BackgroundServer
from framing.decoder import DEFAULT_MAX_FRAME_LENGTH
from framing.encoder import encode_frame

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_MESSAGES = 20
DEFAULT_SIZE = 30
DEFAULT_LARGE = 1024 * 1024
#: longest time the raw server is kept busy while the burst piles up
HOLD_LIMIT = 1.0
#: the chart's file name inside --plot DIR
CHART_NAME = "sticky.png"


@dataclass
class Observation:
    """One pattern of sends, through the raw echo and through the framed echo."""

    pattern: str
    sends: list[int]  # size of each send, in order
    raw_server_reads: list[int]  # the raw echo server's recv sizes
    raw_client_reads: list[int]  # the client's recv sizes of the raw echo
    raw_bytes_intact: bool  # the raw echo returned every byte, in order
    framed_client_reads: list[int]  # the client's recv sizes of the framed echo
    framed_messages: int  # messages the client decoded from the framed echo
    framed_identical: bool  # and each equals the payload sent at its position

    @property
    def boundaries_kept(self) -> bool:
        """Did the raw server's reads happen to match the sends one to one?"""
        return self.raw_server_reads == self.sends

    @property
    def framing_restored(self) -> bool:
        return self.framed_messages == len(self.sends) and self.framed_identical


@dataclass
class StickyReport:
    loop: str
    merged: Observation
    split: Observation

    @property
    def observations(self) -> tuple[Observation, Observation]:
        return self.merged, self.split

    @property
    def framing_restored(self) -> bool:
        return all(o.framing_restored for o in self.observations)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name, obs in (("merged", self.merged), ("split", self.split)):
            data[name]["boundaries_kept"] = obs.boundaries_kept
            data[name]["framing_restored"] = obs.framing_restored
        data["framing_restored"] = self.framing_restored
        return data


# -- observing -------------------------------------------------------------------
def observe_sticky(
    messages: int = DEFAULT_MESSAGES,
    size: int = DEFAULT_SIZE,
    large: int = DEFAULT_LARGE,
    loop: LoopName | None = None,
    timeout: float = 10.0,
) -> StickyReport:
    """Send `messages` x `size` bytes, then one `large` send, through both echoes."""
    if messages < 1 or size < 1 or large < 1:
        raise ValueError("messages, size and large must be at least 1")
    loop = loop or default_loop()
    max_frame = max(DEFAULT_MAX_FRAME_LENGTH, size, large)
    burst = make_messages(messages, size)
    (big,) = make_messages(1, large)
    reads = ServerReads(hold_limit=HOLD_LIMIT)
    raw_config = ServerConfig(mode="raw", loop=loop, log_reads=False, on_read=reads)
    framed_config = ServerConfig(mode="framed", loop=loop, max_frame=max_frame)
    with BackgroundServer(raw_config) as raw, BackgroundServer(framed_config) as framed:
        merged_raw = _through_raw(raw, reads, burst, timeout, busy_server=True)
        split_raw = _through_raw(raw, reads, [big], timeout, busy_server=False)
        merged_framed = _through_framed(framed, burst, max_frame, timeout)
        split_framed = _through_framed(framed, [big], max_frame, timeout)
    pattern = f"{messages} sends of {_size(size)}"
    return StickyReport(
        loop=loop,
        merged=_observation(pattern, burst, merged_raw, merged_framed),
        split=_observation(f"1 send of {_size(large)}", [big], split_raw, split_framed),
    )


_RawResult = tuple[IoLog, IoLog]  # (server's reads, client's reads with data)
_FramedResult = tuple[IoLog, list[bytes]]  # (client's reads, decoded messages)


def _through_raw(
    server: BackgroundServer,
    reads: ServerReads,
    payloads: Sequence[bytes],
    timeout: float,
    *,
    busy_server: bool,
) -> _RawResult:
    """One send per payload to the raw echo; the client reads the echo meanwhile
    (so a large echo cannot fill both sides' buffers)."""
    total = sum(map(len, payloads))
    with connect(server.host, server.port, timeout=timeout) as sock:
        busy = reads.holding() if busy_server else contextlib.nullcontext()
        with busy, Sender(lambda: send_burst(sock, payloads), timeout) as sender:
            if busy_server:
                sender.done.wait(HOLD_LIMIT)
                reads.release()
            echo = record_reads(sock, total)
        return reads.of(sock), echo


def _through_framed(
    server: BackgroundServer, payloads: Sequence[bytes], max_frame: int, timeout: float
) -> _FramedResult:
    """One send per frame to the framed echo; decode the replies as they come."""
    frames = [encode_frame(p, max_frame) for p in payloads]
    log = IoLog()
    with connect(server.host, server.port, timeout=timeout) as sock:
        with Sender(lambda: send_burst(sock, frames), timeout):
            decoded = read_frames(sock, len(payloads), max_frame_length=max_frame, log=log)
        sock.shutdown(socket.SHUT_WR)
        # nothing more may come back than what was sent: drain to the server's FIN
        decoded += read_frames(sock, 1, max_frame_length=max_frame, log=log)
    return log, [bytes(p) for p in decoded]


def _observation(
    pattern: str, payloads: list[bytes], raw: _RawResult, framed: _FramedResult
) -> Observation:
    server_reads, client_echo = raw
    framed_reads, decoded = framed
    return Observation(
        pattern=pattern,
        sends=[len(p) for p in payloads],
        raw_server_reads=server_reads.sizes,
        raw_client_reads=client_echo.sizes,
        raw_bytes_intact=bytes(client_echo.data) == b"".join(payloads),
        framed_client_reads=framed_reads.sizes,
        framed_messages=len(decoded),
        framed_identical=decoded == payloads,
    )


# -- rendering -------------------------------------------------------------------
def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:g} {unit}" if unit == "B" or n == int(n) else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _reads(sizes: list[int]) -> str:
    if len(sizes) <= 4:
        return f"{len(sizes)}: " + " + ".join(_size(s) for s in sizes)
    return f"{len(sizes)}: {_size(min(sizes))} to {_size(max(sizes))}"


def _sends(sizes: list[int]) -> str:
    if len(set(sizes)) == 1:
        return f"{len(sizes)} × {_size(sizes[0])}"
    return _reads(sizes)


def _outcome(obs: Observation) -> str:
    sends, reads = len(obs.sends), len(obs.raw_server_reads)
    counts = f"{plural(sends, 'send')} -> {plural(reads, 'read')}"
    if obs.boundaries_kept:
        return f"{counts} (the boundaries survived this time)"
    return f"{counts} ({'merged' if reads < sends else 'split'})"


def summary(report: StickyReport) -> str:
    """What the table shows, computed from the observations."""
    raw = "; ".join(_outcome(o) for o in report.observations)
    intact = all(o.raw_bytes_intact for o in report.observations)
    counts = "; ".join(f"{o.framed_messages} of {len(o.sends)}" for o in report.observations)
    if report.framing_restored:
        framed = f"every send came back as exactly one message, byte for byte ({counts})"
    else:
        framed = f"messages decoded did NOT match the sends ({counts}): a framing bug"
    return (
        f"Raw TCP delivered {'every byte in order' if intact else 'CORRUPTED bytes'} but not "
        f"the boundaries: {raw}. With a 4-byte length prefix, {framed}."
    )


def render(report: StickyReport, console: Console) -> None:
    """The sticky-packet table (one column per pattern), then what it shows."""
    from rich.table import Table

    table = Table(title=f"Sticky packets on loopback ({report.loop} servers)", title_justify="left")
    table.add_column("")
    for label in ("merged", "split"):
        table.add_column(label, overflow="fold")
    merged, split = report.observations

    def row(label: str, cell: Callable[[Observation], str]) -> None:
        table.add_row(label, cell(merged), cell(split))

    row("sends", lambda o: _sends(o.sends))
    row("raw echo: server's reads", lambda o: _reads(o.raw_server_reads))
    row("raw echo: client's reads", lambda o: _reads(o.raw_client_reads))
    row("framed echo: client's reads", lambda o: _reads(o.framed_client_reads))
    row(
        "framed echo: messages",
        lambda o: (
            f"{o.framed_messages}, "
            + ("[green]identical[/]" if o.framing_restored else "[red]NOT identical[/]")
        ),
    )
    console.print(table)
    console.print(summary(report))
    console.print(
        f"[dim]merged: the raw server was kept busy (at most {HOLD_LIMIT:g} s) while the "
        "burst was sent, as a loaded server would be. split: one recv() returns at most "
        "what it asks for (and what has arrived).[/]"
    )


# -- command line ----------------------------------------------------------------
