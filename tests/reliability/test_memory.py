"""Memory per connection: the receive buffer costs only the pages data reaches."""

from __future__ import annotations

import socket
import struct

import pytest

from framelab.servers.process import ServerProcess
from framing import ACCELERATED

CONNECTIONS = 300


@pytest.mark.skipif(not ACCELERATED, reason="the pure-Python decoder zero-fills its buffer")
def test_connections_with_small_frames_cost_kilobytes_not_the_whole_buffer() -> None:
    args = ["--mode", "framed", "--quiet", "--log-level", "WARNING", "--max-connections", "1000"]
    with ServerProcess(args) as server:
        before = server.stats().rss
        socks = [socket.create_connection(server.address, timeout=5) for _ in range(CONNECTIONS)]
        try:
            frame = struct.pack(">I", 5) + b"hello"
            for sock in socks:
                sock.sendall(frame)
            for sock in socks:
                assert sock.recv(len(frame)) == frame
            per_connection = (server.stats().rss - before) / CONNECTIONS
        finally:
            for sock in socks:
                sock.close()
    # each decoder reserves 256 KiB; a zero-filled one would make all of it resident
    assert per_connection < 64 * 1024, f"{per_connection / 1024:.1f} KiB per connection"
