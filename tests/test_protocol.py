"""FramedProtocol as a library, on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from framelab.servers.runner import run_on_loop
from framing import FramedProtocol, FrameReader, Payload, encode_frame, per_frame
from framing.connection import DELIVERY_SLICE
from framing.streams import framed_streams

on_both_loops = pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])


class Collector(FramedProtocol):
    """A client that queues what it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: asyncio.Queue[Payload] = asyncio.Queue()

    def frames_received(self, frames: list[Payload]) -> None:
        for frame in frames:
            self.inbox.put_nowait(frame)


async def echo_server(handler: Callable[[], FramedProtocol]) -> tuple[asyncio.Server, int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@on_both_loops
def test_client_and_server_exchange_frames(loop_name: str) -> None:
    run_on_loop(loop_name, _test_client_and_server_exchange_frames())


async def _test_client_and_server_exchange_frames() -> None:
    server, port = await echo_server(lambda: FramedProtocol(per_frame(lambda p: bytes(p)[::-1])))
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(Collector, "127.0.0.1", port)
    payloads = [b"abc", b"", b"x" * 200_000]
    client.send_frames(payloads)
    got = [await asyncio.wait_for(client.inbox.get(), 5) for _ in payloads]
    assert got == [p[::-1] for p in payloads]
    assert client.transport is not None
    client.transport.close()
    await client.closed
    server.close()


class PauseRecorder(FramedProtocol):
    def __init__(self) -> None:
        super().__init__(lambda frames: [b"r" * 100_000 for _ in frames], high_water=256 * 1024)
        self.paused = asyncio.Event()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused.set()


@on_both_loops
def test_reading_pauses_while_the_peer_does_not_read(loop_name: str) -> None:
    run_on_loop(loop_name, _test_reading_pauses_while_the_peer_does_not_read())


async def _test_reading_pauses_while_the_peer_does_not_read() -> None:
    """Backpressure: replies pile up, so the server stops reading requests."""
    accepted: asyncio.Future[PauseRecorder] = asyncio.get_running_loop().create_future()

    def recorder() -> PauseRecorder:
        proto = PauseRecorder()
        accepted.set_result(proto)
        return proto

    server, port = await echo_server(recorder)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    async def flood() -> None:  # blocks for good once the server stops reading
        while True:
            await loop.sock_sendall(sock, encode_frame(b"q") * 10)

    sender = asyncio.ensure_future(flood())
    try:
        proto = await asyncio.wait_for(accepted, 5)
        await asyncio.wait_for(proto.paused.wait(), 5)
        assert proto.transport is not None
        assert not proto.transport.is_reading()
        buffered = proto.transport.get_write_buffer_size()
        assert buffered <= 256 * 1024 + DELIVERY_SLICE * 100_000  # high water + one slice
    finally:
        sender.cancel()
        sock.close()
        server.close()


@on_both_loops
def test_drain_waits_for_the_peer_then_returns(loop_name: str) -> None:
    run_on_loop(loop_name, _test_drain_waits_for_the_peer_then_returns())


async def _test_drain_waits_for_the_peer_then_returns() -> None:
    loop = asyncio.get_running_loop()
    received = asyncio.Queue[bytes]()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames, _ = framed_streams(reader, writer)
        async for frame in frames:
            received.put_nowait(bytes(frame))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await loop.create_connection(
        lambda: FramedProtocol(high_water=64 * 1024), "127.0.0.1", port
    )
    for _ in range(100):
        client.send_frame(b"z" * 10_000)
        await client.drain()
    assert sum([len(await received.get()) for _ in range(100)]) == 1_000_000
    assert client.transport is not None
    client.transport.close()
    server.close()


@on_both_loops
def test_stream_reader_yields_none_at_a_clean_end(loop_name: str) -> None:
    run_on_loop(loop_name, _test_stream_reader_yields_none_at_a_clean_end())


async def _test_stream_reader_yields_none_at_a_clean_end() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame(b"one") + encode_frame(b"two"))
    reader.feed_eof()
    frames = FrameReader(reader)
    assert [f async for f in frames] == [b"one", b"two"]
