"""Helpers shared by the TIME_WAIT, backlog and open-file-limit experiments.

Those experiments open many short connections, sometimes inside a network
namespace of experiments/netns.py, and then wait for something the kernel
offers no event for (a retransmitted SYN, a TIME_WAIT entry). What they share
lives here once: sockets that may belong to a namespace, a deadline poll, and
the few netstat counters each one reports.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from framelab.experiments.netns import socket_in

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
Address = tuple[str, int]

#: how often a condition with no event is re-checked (seconds)
POLL_INTERVAL = 0.01


def poll_until(check: Callable[[], T | None], timeout: float) -> T | None:
    """Re-evaluate `check` until it returns something other than None, or time runs out.

    Only for conditions the kernel gives no event for (a timer firing, a
    /proc row appearing); the last result (None on timeout) is returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if outcome is not None or time.monotonic() >= deadline:
            return outcome
        time.sleep(POLL_INTERVAL)


def listener_in(
    netns: str | None,
    host: str,
    backlog: int,
    *,
    reuse_address: bool = True,
    rcvbuf: int | None = None,
) -> socket.socket:
    """A listening socket of namespace `netns` (ours when None) on an ephemeral port;
    `rcvbuf` is inherited by the sockets it accepts."""
    sock = socket_in(netns)
    try:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((host, 0))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def client_in(netns: str | None, *, blocking: bool = True) -> socket.socket:
    """A TCP socket of namespace `netns`, not yet connected."""
    sock = socket_in(netns)
    sock.setblocking(blocking)
    return sock


def start_connect(netns: str | None, address: Address) -> socket.socket:
    """A non-blocking connect(): the handshake goes on without us (EINPROGRESS)."""
    sock = client_in(netns, blocking=False)
    sock.connect_ex(address)
    return sock


def address_of(sock: socket.socket) -> Address:
    """getsockname() as a (host, port) pair (IPv4 or IPv6 alike)."""
    name = sock.getsockname()
    return str(name[0]), int(name[1])


def close_all(socks: Iterable[socket.socket]) -> None:
    for sock in socks:
        sock.close()
