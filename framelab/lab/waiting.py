"""Waiting for what the kernel sends no event for: one deadline loop, one interval.

A TCP state change, a /proc row appearing, a timer firing: none of them can
be awaited, so the lab re-checks them. The loop is written once here
(`poll_until`, and `poll_until_async` for code inside an event loop) with
one re-check interval; every other wait in the lab is a predicate handed to
it. Where an event does exist (a readable socket, a captured packet), wait
for the event instead: select(), Capture.wait_for().
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import TypeVar

from framelab.lab.kernel import ProcTcpEntry, endpoint_state, proc_net_tcp
from framelab.lab.sockets import Address

T = TypeVar("T")

#: how often a condition with no event is re-checked (seconds): short next to
#: the 200 ms kernel timers the lab watches, long enough not to load the CPU
POLL_INTERVAL = 0.005


def poll_until(check: Callable[[], T | None], timeout: float) -> T | None:
    """Re-evaluate `check` until it returns something other than None, or time runs out.

    `check` is called at least once; an OSError from it counts as None (the
    socket or namespace it reads may be going away). The last result (None
    on timeout) is returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            outcome = check()
        except OSError:
            outcome = None
        if outcome is not None or time.monotonic() >= deadline:
            return outcome
        time.sleep(POLL_INTERVAL)


async def poll_until_async(check: Callable[[], T | None], timeout: float) -> T | None:
    """poll_until() for a coroutine: the event loop runs while the condition is re-checked."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            outcome = check()
        except OSError:
            outcome = None
        if outcome is not None or time.monotonic() >= deadline:
            return outcome
        await asyncio.sleep(POLL_INTERVAL)


def poll(read: Callable[[], str | None], want: str, timeout: float = 1.0) -> str | None:
    """Read a state until it is `want` or the time is up; the last value read."""
    last: list[str | None] = [None]

    def reached() -> str | None:
        try:
            last[0] = read()
        except OSError:
            last[0] = None
        return last[0] if last[0] == want else None

    return poll_until(reached, timeout) or last[0]


#: states a socket passes through while waiting for the peer's next segment
TRANSIENT_STATES = frozenset({"SYN_SENT", "SYN_RECV", "FIN_WAIT1", "CLOSING", "LAST_ACK"})


def settled_state(
    local: Address, remote: Address, timeout: float = 0.5, netns: str | None = None
) -> str | None:
    """One end's state once it left the states that wait for an ACK (None: gone).

    Right after a FIN the closer may still be FIN_WAIT1 or already FIN_WAIT2,
    depending on when the ACK was processed; this reads past that race.
    """
    last: list[str | None] = [None]

    def settled() -> bool | None:
        last[0] = endpoint_state(local, remote, netns)
        return True if last[0] not in TRANSIENT_STATES else None

    poll_until(settled, timeout)
    return last[0]


def wait_for_entry(
    predicate: Callable[[ProcTcpEntry], bool], timeout: float = 1.0, netns: str | None = None
) -> ProcTcpEntry | None:
    """The first /proc/net/tcp row matching `predicate`, within `timeout`."""
    return poll_until(lambda: next(filter(predicate, proc_net_tcp(netns)), None), timeout)


def wait_for_state(
    port: int,
    states: Collection[str],
    timeout: float = 1.0,
    *,
    local_port: int | None = None,
    netns: str | None = None,
) -> ProcTcpEntry | None:
    """A socket on `port` (either end) in one of `states`, within `timeout`.

    With `local_port`, only the end bound to that port counts, which on
    loopback picks one side of a connection.
    """

    def matches(entry: ProcTcpEntry) -> bool:
        if port not in (entry.local[1], entry.remote[1]):
            return False
        if local_port is not None and entry.local[1] != local_port:
            return False
        return entry.state in states

    return wait_for_entry(matches, timeout, netns)


def wait_for_queues(
    local: Address,
    remote: Address,
    predicate: Callable[[ProcTcpEntry], bool],
    timeout: float = 1.0,
    netns: str | None = None,
) -> ProcTcpEntry | None:
    """Wait until one end's entry (tx_queue, rx_queue, state...) satisfies `predicate`."""
    return wait_for_entry(
        lambda e: e.local == local and e.remote == remote and predicate(e), timeout, netns
    )
