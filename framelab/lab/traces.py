"""What the experiments ask of a packet capture: flags a port sent, short traces.

A capture needs root; without one every question here answers None (or an
empty trace), so "not captured" never looks like "nothing sent", and an
experiment has one code path for both. The capture itself is lab/capture.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator

from framelab.lab.capture import Capture
from framelab.lab.packets import Packet, format_trace

#: longest trace kept in a ClaimResult
TRACE_LIMIT = 30


@contextlib.contextmanager
def maybe_capture(
    enabled: bool, ports: Collection[int], interface: str = "lo"
) -> Iterator[Capture | None]:
    """A Capture on `ports` when `enabled` (root), else None: one code path for both."""
    if not enabled:
        yield None
        return
    with Capture(interface, ports=ports) as cap:
        yield cap


def flags_sent(
    cap: Capture | None, src_port: int, dst_port: int | None = None, since: float = 0.0
) -> list[str] | None:
    """Flags of the TCP segments sent from `src_port` (to `dst_port`) after `since`.

    None without a capture, so "not captured" never looks like "nothing sent".
    """
    if cap is None:
        return None
    return [
        p.flags
        for p in cap.tcp(src_port)
        if p.sport == src_port and (dst_port is None or p.dport == dst_port) and p.time >= since
    ]


def fin_rst_sent(
    cap: Capture | None, src_port: int, dst_port: int | None = None, since: float = 0.0
) -> dict[str, bool | None]:
    """{"fin": ..., "rst": ...}: did `src_port` send a FIN / an RST (None: not captured)?"""
    flags = flags_sent(cap, src_port, dst_port, since)
    if flags is None:
        return {"fin": None, "rst": None}
    return {"fin": any("F" in f for f in flags), "rst": any("R" in f for f in flags)}


def wait_for_flag(
    cap: Capture | None,
    src_port: int,
    letters: str,
    timeout: float = 1.0,
    since: float = 0.0,
) -> Packet | None:
    """The first segment from `src_port` carrying any flag of `letters` ("F", "R", "FR").

    Wait for it before reading flags: the capture thread runs slightly behind
    the kernel. (Packet times are when the capture saw them, so `since` is a
    coarse filter: use it to exclude packets, not to order them.)
    """
    if cap is None:
        return None
    return cap.wait_for(
        lambda p: (
            p.proto == "tcp"
            and p.sport == src_port
            and any(p.has(letter) for letter in letters)
            and p.time >= since
        ),
        timeout,
    )


def short_trace(
    cap: Capture | None, port: int, since: float = 0.0, limit: int = TRACE_LIMIT
) -> list[str]:
    """tcpdump-like lines of one port's traffic after `since`, at most `limit` of them."""
    if cap is None:
        return []
    packets = [p for p in list(cap.packets) if port in (p.sport, p.dport) and p.time >= since]
    return truncate_lines(format_trace(packets, cap.started), limit)


def truncate_lines(lines: list[str], limit: int) -> list[str]:
    """At most `limit` lines, the last saying how many were left out."""
    if len(lines) <= limit:
        return lines
    return [*lines[: limit - 1], f"... {len(lines) - limit + 1} more lines"]


def titled(title: str, lines: list[str]) -> list[str]:
    """A trace section: '# title' then the lines; nothing when there are none."""
    return [f"# {title}", *lines] if lines else []
