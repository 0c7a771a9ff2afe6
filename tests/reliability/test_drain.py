"""What the graceful stop relies on, checked on this kernel: a filter that
drops new SYNs keeps the queued connections and lets no new one in, while
listen(0) does let one in; accept until EAGAIN takes the whole queue."""

from __future__ import annotations

import asyncio
import socket

import pytest

from framelab.servers.drain import (
    accept_new_handshakes,
    accept_queued,
    handshakes_settled,
    pending_handshakes,
    refuse_new_handshakes,
)

from .support import connect

QUEUED = 3


def _listener(backlog: int = 16) -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    listener.setblocking(False)
    return listener


def _handshake_completes(address: tuple[str, int], within: float = 0.3) -> bool:
    """Whether a new connect() completes (a dropped SYN is resent only after 1 s)."""
    sock = socket.socket()
    sock.settimeout(within)
    try:
        sock.connect(address)
    except TimeoutError:
        return False
    finally:
        sock.close()
    return True


def test_refusing_new_handshakes_keeps_the_queue_and_lets_none_in() -> None:
    with _listener() as listener:
        address = listener.getsockname()
        queued = [connect(address) for _ in range(QUEUED)]
        refuse_new_handshakes(listener)
        assert not _handshake_completes(address)
        accepted = accept_queued(listener)
        assert len(accepted) == QUEUED
        for sock in accepted:
            sock.sendall(b"served")
        assert [c.recv(16) for c in queued] == [b"served"] * QUEUED
        assert accept_queued(listener) == []  # the new SYN never made it in
        accept_new_handshakes(listener)
        assert _handshake_completes(address)
        for sock in [*accepted, *queued]:
            sock.close()


def test_accept_new_handshakes_without_a_filter_is_harmless() -> None:
    with _listener() as listener:
        accept_new_handshakes(listener)
        assert _handshake_completes(listener.getsockname())


def test_listen_0_does_not_stop_new_handshakes_once_the_queue_is_empty() -> None:
    """Why the stop uses a filter: with backlog 0 the queue counts as full only
    while it holds a connection, so after accepting, the next SYN gets in."""
    with _listener() as listener:
        listener.listen(0)
        assert _handshake_completes(listener.getsockname())
        assert len(accept_queued(listener)) == 1


def test_shutdown_of_a_listener_resets_its_queue() -> None:
    """The other tempting way to stop accepting, and why it is not used."""
    with _listener() as listener:
        queued = connect(listener.getsockname())
        listener.shutdown(socket.SHUT_RD)
        with pytest.raises(ConnectionResetError):
            queued.recv(1)
        with pytest.raises(OSError):
            listener.accept()
        queued.close()


async def test_a_stop_waits_for_handshakes_under_way_then_accepts_them() -> None:
    """The window the SYN filter leaves: a handshake begun before it, completed
    after. TCP_DEFER_ACCEPT holds one in the SYN queue until its client sends."""
    with _listener() as listener:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
        address = listener.getsockname()
        client = connect(address)  # connected, as far as the client knows
        try:
            assert pending_handshakes(listener) == 1
            refuse_new_handshakes(listener)
            settled = asyncio.ensure_future(handshakes_settled(listener, grace=5.0))
            client.sendall(b"request")  # its handshake completes now, after the filter
            assert await settled == 0
            [served] = accept_queued(listener)
            with served:
                served.sendall(b"answered")
                assert client.recv(16) == b"answered"
            assert pending_handshakes(listener) == 0
        finally:
            client.close()


async def test_handshakes_settled_gives_up_after_its_grace() -> None:
    with _listener() as listener:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
        client = connect(listener.getsockname())
        try:
            # the client never sends: its handshake stays under way
            assert await handshakes_settled(listener, grace=0.05) == 1
        finally:
            client.close()
