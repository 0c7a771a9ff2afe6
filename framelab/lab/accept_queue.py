"""The accept queue, probed: its length, handshakes completing, and an ACK into a full queue.

Moves that the backlog experiment (C15) and the notes' open question about
"connection reset by peer" under load (Q2) both make: written once here.
TCP_DEFER_ACCEPT keeps a completed handshake in the SYN queue until the
client sends data, which lets the lab time the final ACK against a full
accept queue.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from framelab.lab.capture import Capture
from framelab.lab.kernel import (
    connections_on_port,
    netstat_counters,
    selected_delta,
    sysctl,
    tcp_info,
)
from framelab.lab.sockets import (
    LOOPBACK,
    address_of,
    close_all,
    listening_socket,
    recv_outcome,
    start_connect,
)
from framelab.lab.waiting import poll_until

#: the counters an accept-queue overflow moves
OVERFLOW_COUNTERS = ["TcpExt.ListenOverflows", "TcpExt.ListenDrops"]
#: TCP_DEFER_ACCEPT (seconds): keeps completed handshakes in the SYN queue meanwhile
DEFER_ACCEPT_S = 5


def queue_of(listener: socket.socket) -> dict[str, int]:
    """The accept queue as TCP_INFO tells it for a listener: length and limit."""
    info = tcp_info(listener)
    return {"length": info["unacked"], "limit": info["sacked"]}


def wait_connected(socks: list[socket.socket], timeout: float) -> set[socket.socket]:
    """Clients whose connect() finished (writable) within `timeout`."""
    done: set[socket.socket] = set()
    deadline = time.monotonic() + timeout
    while True:
        pending = [s for s in socks if s not in done]
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            return done
        _, writable, _ = select.select([], pending, [], left)
        done.update(writable)


def deferring_listener(netns: str | None, host: str, backlog: int) -> socket.socket:
    """A listener that keeps a handshake in its SYN queue until the client sends data."""
    listener = listening_socket(host, backlog, netns=netns)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_S)
    return listener


def connect_and_send(netns: str | None, address: tuple[str, int]) -> socket.socket:
    """A client whose data completes its deferred handshake at once."""
    sock = start_connect(netns, address)
    wait_connected([sock], 1.0)
    sock.send(b"x")
    return sock


def ack_into_full_queue(netns: str | None, cap: Capture | None) -> dict[str, Any]:
    """Complete a handshake while the accept queue is full; then make room.

    Two clients fill the queue to the backlog, two more handshake while there
    is still room (held in SYN_RECV by TCP_DEFER_ACCEPT). The first of those
    sends data and fills the queue (backlog+1); the second then sends data:
    its completing segment meets a full queue.
    """
    backlog = 2
    listener = deferring_listener(netns, LOOPBACK, backlog)
    address = address_of(listener)
    if cap is not None:
        cap.add_port(address[1])
    opened = [listener]
    try:
        opened += [connect_and_send(netns, address) for _ in range(backlog)]
        poll_until(lambda: True if queue_of(listener)["length"] == backlog else None, 1.0)
        late = [start_connect(netns, address) for _ in range(2)]
        opened += late
        completed = wait_connected(late, 1.0)
        if len(completed) < len(late):  # e.g. tcp_syncookies=2: no SYN queue holds them
            return {
                "abort_on_overflow": sysctl("net.ipv4.tcp_abort_on_overflow", netns),
                "held_in_syn_queue": False,
                "late_handshakes_completed": len(completed),
                "client_state": tcp_info(late[1]).state,
                "server_state": None,
                "queue": queue_of(listener),
                "client_port": address_of(late[1])[1],
            }
        late[0].send(b"x")
        poll_until(lambda: True if queue_of(listener)["length"] > backlog else None, 1.0)
        victim = late[1]
        victim_address = address_of(victim)
        before = netstat_counters(netns)
        victim.send(b"y")
        server_side = [
            e for e in connections_on_port(address[1], netns) if e.remote == victim_address
        ]
        after = netstat_counters(netns)
        observed: dict[str, Any] = {
            "abort_on_overflow": sysctl("net.ipv4.tcp_abort_on_overflow", netns),
            "held_in_syn_queue": True,
            "queue": queue_of(listener),
            "client_state": tcp_info(victim).state,
            "client_unacked_segments": tcp_info(victim)["unacked"],
            "server_state": server_side[0].state if server_side else None,
            "counters": selected_delta(before, after, OVERFLOW_COUNTERS),
            "client_port": victim_address[1],
        }
        if observed["abort_on_overflow"] == "1":
            observed["client_recv"] = recv_outcome(victim, timeout=1.0)
            return observed
        listener.accept()[0].close()
        made_room = time.monotonic()
        joined = poll_until(lambda: True if tcp_info(victim)["unacked"] == 0 else None, 2.0)
        observed["after_one_accept"] = {
            "client_data_acked": bool(joined),
            "joined_after_ms": round((time.monotonic() - made_room) * 1000, 1),
            "queue": queue_of(listener),
        }
        return observed
    finally:
        close_all(opened)
