"""Interop with an independent implementation (Twisted's Int32StringReceiver),
in both directions: our client against its echo (the benchmark's peer), its
client against our server."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from framelab.servers.config import IoStyle, ServerConfig
from framelab.servers.runner import BackgroundServer
from framing import open_framed_connection

PEER_CLIENT = Path(__file__).parent / "peers" / "twisted_int32.py"
COUNT = 40  # frames of 0 .. 57 KiB
pytest.importorskip("twisted")


def payload(i: int) -> bytes:
    return bytes((i + j) % 251 for j in range(i * i * 37))


async def test_our_client_against_twisted_server() -> None:
    peer = subprocess.Popen(
        [sys.executable, "-m", "framelab.benchmarks.twisted_echo", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None
        port = int(peer.stdout.readline().rsplit(":", 1)[-1])
        reader, writer = await open_framed_connection("127.0.0.1", port)
        writer.write_frames(payload(i) for i in range(COUNT))
        await writer.drain()
        echoed = [await reader.read_frame() for _ in range(COUNT)]
        writer.writer.close()
        assert echoed == [payload(i) for i in range(COUNT)]
    finally:
        peer.kill()
        peer.wait()


@pytest.mark.parametrize("io", ["protocol", "streams"])
def test_twisted_client_against_our_server(io: IoStyle) -> None:
    with BackgroundServer(ServerConfig(mode="framed", io=io)) as srv:
        result = subprocess.run(
            [sys.executable, str(PEER_CLIENT), str(srv.port), str(COUNT)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = result.stdout.split("\n")[:COUNT]
    expected = [f"{hashlib.sha256(payload(i)).hexdigest()} {i * i * 37}" for i in range(COUNT)]
    assert lines == expected, result.stderr
