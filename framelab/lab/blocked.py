"""A reader already blocked in recv(), and a poll() already waiting, when the peer resets.

What the notes ask ("would a blocking read get an event too?") and what C30
needs beside the selector case: both calls must be inside the kernel before
the RST is sent, so the probe waits for that as an event: each thread's
/proc/self/task/TID/syscall names the system call it sleeps in (the first
field is its number; "running" while it runs), and its state is S (asleep).
The recv() runs on a blocking socket with no timeout, so CPython calls
recvfrom() at once instead of polling first. A reader the RST does not wake
is woken with shutdown(SHUT_RD) so the probe always ends.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framelab.lab.kernel import errno_name
from framelab.lab.sockets import connect_to, listening_socket, set_linger
from framelab.lab.waiting import poll_until

POLL_NAMES = {select.POLLIN: "POLLIN", select.POLLERR: "POLLERR", select.POLLHUP: "POLLHUP",
              select.POLLRDHUP: "POLLRDHUP", select.POLLOUT: "POLLOUT"}  # fmt: skip
#: how long each blocked call may wait for the RST (seconds)
WAKE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class BlockedOnReset:
    """What the two blocked calls returned, and how long after the RST was sent."""

    #: both threads were asleep in a system call when the RST was sent
    both_blocked_first: bool
    #: recv()'s outcome: an errno name, "EOF", "N bytes"; None if it never returned
    recv: str | None
    recv_woke_ms: float | None
    poll_revents: list[str] = field(default_factory=list)
    poll_woke_ms: float | None = None
    woken_by_shutdown: bool = False


def asleep_in_syscall(native_id: int) -> bool:
    """The thread sleeps inside a system call (not running, not between calls)."""
    task = Path(f"/proc/self/task/{native_id}")
    try:
        stat = (task / "stat").read_text()
        syscall = (task / "syscall").read_text().split()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state == "S" and bool(syscall) and syscall[0].isdigit()


def blocked_reader_on_reset() -> BlockedOnReset:
    """recv() and poll() asleep in their threads on the server side; then the client resets."""
    with listening_socket() as listener, connect_to(listener) as pair:
        ids: dict[str, int] = {}
        seen: dict[str, Any] = {}
        reset_at = [0.0]

        def read() -> None:
            ids["recv"] = threading.get_native_id()
            try:
                data = pair.server.recv(16)
                seen["recv"] = "EOF" if not data else f"{len(data)} bytes"
            except OSError as exc:
                seen["recv"] = errno_name(exc) or type(exc).__name__
            seen["recv_ms"] = (time.monotonic() - reset_at[0]) * 1000

        def wait() -> None:
            ids["poll"] = threading.get_native_id()
            poller = select.poll()
            poller.register(pair.server, select.POLLIN | select.POLLRDHUP)
            events = poller.poll(int(WAKE_TIMEOUT_S * 1000))
            mask = events[0][1] if events else 0
            seen["revents"] = [name for bit, name in POLL_NAMES.items() if mask & bit]
            seen["poll_ms"] = (time.monotonic() - reset_at[0]) * 1000

        pair.server.settimeout(None)  # recvfrom() itself blocks (no poll() first)
        threads = [threading.Thread(target=f, daemon=True) for f in (read, wait)]
        for thread in threads:
            thread.start()
        blocked = poll_until(
            lambda: (
                True if len(ids) == 2 and all(asleep_in_syscall(i) for i in ids.values()) else None
            ),
            WAKE_TIMEOUT_S,
        )
        reset_at[0] = time.monotonic()
        set_linger(pair.client, True, 0)
        pair.client.close()
        threads[0].join(WAKE_TIMEOUT_S)
        shutdown = threads[0].is_alive()
        if shutdown:  # the RST did not wake it: end the probe anyway
            pair.server.shutdown(socket.SHUT_RD)
            threads[0].join(WAKE_TIMEOUT_S)
        threads[1].join(WAKE_TIMEOUT_S + 1)
        recv = seen.get("recv")
        return BlockedOnReset(
            both_blocked_first=bool(blocked),
            recv=None if shutdown else (str(recv) if recv is not None else None),
            recv_woke_ms=None if shutdown else _ms(seen.get("recv_ms")),
            poll_revents=list(seen.get("revents", [])),
            poll_woke_ms=_ms(seen.get("poll_ms")),
            woken_by_shutdown=shutdown,
        )


def _ms(value: object) -> float | None:
    return round(value, 2) if isinstance(value, float) else None
