"""Both adapters as a library over loopback, on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from framelab.servers.runner import run_on_loop
from framing import (
    BytesLike,
    ErrorKind,
    FrameDecoder,
    FramedProtocol,
    FrameReader,
    FrameTimeout,
    FramingError,
    NullObserver,
    Payload,
    encode_frame,
    framed_streams,
    open_framed_connection,
    per_frame,
    serve_frames,
)
from framing.connection import DELIVERY_SLICE

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


class Events(NullObserver):
    """What the adapters report, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.done = asyncio.Event()

    def connection_opened(self, peer: str) -> None:
        self.seen.append("opened")

    def frames_in(self, frames: Sequence[BytesLike]) -> None:
        self.seen.append(f"in {len(frames)} {sum(len(f) for f in frames)}")

    def frames_out(self, frames: Sequence[BytesLike]) -> None:
        self.seen.append(f"out {len(frames)}")

    def error(self, kind: ErrorKind, error: BaseException) -> None:
        self.seen.append(f"error {kind}")

    def connection_closed(self, peer: str, error: BaseException | None) -> None:
        self.seen.append("closed")
        self.done.set()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 5)  # up to the server's FIN


async def start_framed_server(style: str, events: Events, **options: Any) -> asyncio.Server:
    """An echo server in either adapter style, with msgpack-like last words."""

    def last_words(error: FramingError) -> bytes:
        return f"bye: {type(error).__name__}".encode()

    if style == "protocol":
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: FramedProtocol(
                lambda frames: frames, error_reply=last_words, observer=events, **options
            ),
            "127.0.0.1",
            0,
        )

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames, out = framed_streams(
            reader,
            writer,
            options.get("max_frame_length", 8 << 20),
            frame_timeout=options.get("frame_timeout", 30.0),
            error_reply=last_words,
            observer=events,
        )
        await serve_frames(frames, out, lambda batch: batch)

    return await asyncio.start_server(on_connect, "127.0.0.1", 0)


both_styles = pytest.mark.parametrize("style", ["protocol", "streams"])


@on_both_loops
@both_styles
def test_an_oversized_header_gets_the_error_reply_then_fin(loop_name: str, style: str) -> None:
    run_on_loop(loop_name, _test_an_oversized_header_gets_the_error_reply_then_fin(style))


async def _test_an_oversized_header_gets_the_error_reply_then_fin(style: str) -> None:
    events = Events()
    server = await start_framed_server(style, events, max_frame_length=100)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_frame(b"fine") + struct.pack(">I", 101) + b"more")
    wire = await read_all(reader)  # the server's FIN ends it: no reset
    decoder = FrameDecoder()
    assert decoder.feed(wire) == [b"fine", b"bye: FrameTooLarge"]
    writer.close()
    await asyncio.wait_for(events.done.wait(), 5)
    assert events.seen == ["opened", "in 1 4", "out 1", "error oversize", "out 1", "closed"]
    server.close()


@on_both_loops
@both_styles
def test_a_slow_frame_times_out_from_its_first_byte(loop_name: str, style: str) -> None:
    run_on_loop(loop_name, _test_a_slow_frame_times_out_from_its_first_byte(style))


async def _test_a_slow_frame_times_out_from_its_first_byte(style: str) -> None:
    events = Events()
    timeout = 0.3
    server = await start_framed_server(style, events, frame_timeout=timeout)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(encode_frame(b"slow loris")[:6])
    wire = await read_all(reader)
    elapsed = loop.time() - started
    assert FrameDecoder().feed(wire) == [b"bye: FrameTimeout"]
    assert timeout <= elapsed < timeout + 1.0  # one timeout after the first byte, not two
    writer.close()
    await asyncio.wait_for(events.done.wait(), 5)
    assert "error timeout" in events.seen
    server.close()


@on_both_loops
def test_frame_reader_times_out_a_frame_that_never_completes(loop_name: str) -> None:
    run_on_loop(loop_name, _test_frame_reader_times_out_a_frame_that_never_completes())


async def _test_frame_reader_times_out_a_frame_that_never_completes() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame(b"whole") + encode_frame(b"half")[:5])
    frames = FrameReader(reader, frame_timeout=0.05, peer="192.0.2.7:9")
    assert await frames.read_frame() == b"whole"
    with pytest.raises(FrameTimeout, match=r"0.05 s after its first byte.*192\.0\.2\.7:9"):
        await asyncio.wait_for(frames.read_frame(), 5)
    with pytest.raises(FrameTimeout):  # and it stays failed
        await frames.read_frame()


@on_both_loops
def test_frame_writer_closes_with_async_with(loop_name: str) -> None:
    run_on_loop(loop_name, _test_frame_writer_closes_with_async_with())


async def _test_frame_writer_closes_with_async_with() -> None:
    events = Events()
    server = await start_framed_server("streams", events)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await open_framed_connection("127.0.0.1", port)
    async with writer:
        await writer.send(b"ping")
        assert await asyncio.wait_for(reader.read_frame(), 5) == b"ping"
    assert writer.writer.is_closing()
    await asyncio.wait_for(events.done.wait(), 5)  # the server saw our close as a clean end
    assert events.seen[-1] == "closed" and not any(e.startswith("error") for e in events.seen)
    server.close()
