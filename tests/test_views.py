"""Payloads lent as views (views=True): the same payloads as copies, never
changed by later input whoever keeps them, and the receive buffer reused
when nobody does.

Each property runs on the compiled loops (where built) and on their Python
twins, which must agree.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import pytest
from codec_support import CODEC_IDS, CODECS, on_codec, read_through_buffer
from hypothesis import given, settings
from hypothesis import strategies as st

from framelab.servers.runner import run_on_loop
from framing import (
    FrameDecoder,
    FramedProtocol,
    encode_frames,
    framed_streams,
    open_framed_connection,
    serve_frames,
    write_frames,
)
from framing._codec import PURE, SELECTED, Codec
from framing.decoder import DEFAULT_BUFFER_SIZE, VIEW_MIN
from framing.observer import NullObserver

payloads_strategy = st.lists(
    st.one_of(st.binary(max_size=900), st.binary(min_size=2040, max_size=2100)), max_size=60
)


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
@given(payloads_strategy, st.lists(st.integers(1, 9000), max_size=40), st.booleans())
@settings(max_examples=100, deadline=None)
def test_kept_views_never_change_whatever_the_chunking(
    codec: Codec, payloads: list[bytes], sizes: list[int], by_feed: bool
) -> None:
    """Every payload is kept until the end; a buffer reused under a live view
    would show up as a changed payload here."""
    wire = bytes(encode_frames(payloads))
    with on_codec(codec):
        decoder = FrameDecoder(large_frame=2048, buffer_size=32 * 1024 + 2048, views=True)
        if by_feed:
            kept: list[Any] = []
            pos = 0
            for size in [*sizes, len(wire)]:
                kept += decoder.feed(wire[pos : pos + size])
                pos += size
        else:
            kept = read_through_buffer(decoder, wire, sizes)
        decoder.end_of_stream()
    assert [bytes(p) for p in kept] == payloads
    for payload, original in zip(kept, payloads, strict=True):
        if len(original) < VIEW_MIN:
            assert type(payload) is bytes
        elif len(original) < 2048:
            assert isinstance(payload, memoryview) and payload.readonly
        else:
            assert isinstance(payload, bytearray)


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_the_buffer_is_reused_while_no_view_is_kept(codec: Codec) -> None:
    wire = bytes(encode_frames([bytes([n]) * 1000 for n in range(32)]))
    with on_codec(codec):
        decoder = FrameDecoder(views=True)
        for _ in range(200):
            got = read_through_buffer(decoder, wire, [len(wire)])
            assert [p[0] for p in got] == list(range(32))
            del got
        assert decoder.buffers_left_to_views == 0


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_a_kept_slice_of_a_view_keeps_its_buffer(codec: Codec) -> None:
    """The handler's own slice of a payload pins the buffer as the payload would."""
    first = bytes(encode_frames([b"keep me" * 100, b"drop" * 200]))
    other = bytes(encode_frames([b"X" * 1000] * 4))
    with on_codec(codec):
        decoder = FrameDecoder(views=True)
        frames = read_through_buffer(decoder, first, [len(first)])
        kept = frames[0][:4]
        del frames
        read_through_buffer(decoder, other, [len(other)])
        assert bytes(kept) == b"keep" and decoder.buffers_left_to_views == 1
        del kept
        gc.collect()
        read_through_buffer(decoder, other, [len(other)])
        assert decoder.buffers_left_to_views == 1  # the fresh buffer is free again


@pytest.mark.parametrize("codec", CODECS, ids=CODEC_IDS)
def test_views_of_a_bytearray_fed_in_are_of_our_copy(codec: Codec) -> None:
    """feed() lends views of `data` only when it is bytes: a caller's bytearray may change."""
    original = b"abc" * 300
    data = bytearray(encode_frames([original]))
    with on_codec(codec):
        (payload,) = FrameDecoder(views=True).feed(data)
        data[4:7] = b"zzz"
        assert isinstance(payload, memoryview)
        assert bytes(payload) == original and payload.obj is not data
        wire = bytes(encode_frames([original]))
        (payload,) = FrameDecoder(views=True).feed(wire)
        assert isinstance(payload, memoryview)
        assert payload.obj is wire  # bytes cannot change: lent as they are


@given(
    st.lists(st.binary(max_size=60), max_size=20),
    st.binary(max_size=8),
    st.integers(0, 70),
    st.integers(0, 70),
    st.data(),
)
def test_split_views_twins_agree(
    payloads: list[bytes], tail: bytes, limit: int, min_view: int, data: st.DataObject
) -> None:
    wire = bytes(encode_frames(payloads)) + tail
    start = data.draw(st.integers(0, len(wire)))
    end = data.draw(st.integers(start, len(wire)))
    results = [codec.split_views(wire, start, end, limit, min_view) for codec in CODECS]
    for frames, pos in results:
        assert [type(f) for f in frames] == [
            memoryview if len(f) >= min_view else bytes for f in frames
        ]
        assert all(f.obj is wire for f in frames if isinstance(f, memoryview))
        assert (frames, pos) == (results[0][0], results[0][1])
    from_bytes = PURE.split_frames(wire, start, end, limit)
    assert (results[0][0], results[0][1]) == from_bytes


def test_split_views_lends_read_only_views_and_checks_its_arguments() -> None:
    wire = bytearray(encode_frames([b"a", b"", b"bcd"]))
    for codec in CODECS:
        frames, _ = codec.split_views(wire, 0, len(wire), 100, 0)
        assert all(isinstance(f, memoryview) and f.readonly for f in frames)
        assert codec.buffer_exported(wire)
        del frames
        assert not codec.buffer_exported(wire)
        codec.split_views(wire, 0, len(wire), 100, 10)  # all copied: nothing left exported
        assert not codec.buffer_exported(wire)
        with pytest.raises(TypeError, match="bytes or a bytearray"):
            codec.split_views(memoryview(wire), 0, len(wire), 100, 0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="out of range"):
            codec.split_views(wire, 0, len(wire) + 1, 100, 0)


def test_buffer_exported_twins_agree() -> None:
    for codec in CODECS:
        buffer = bytearray(b"0123")
        assert codec.buffer_exported(buffer) is False
        view = memoryview(buffer)[1:2]
        assert codec.buffer_exported(buffer) is True
        view.release()
        assert codec.buffer_exported(buffer) is False and buffer == bytearray(b"0123")
        assert codec.buffer_exported(bytearray()) is False
        with pytest.raises(TypeError):
            codec.buffer_exported(b"bytes")  # type: ignore[arg-type]


def test_pack_frames_refuses_a_released_view() -> None:
    view = memoryview(b"abc")
    view.release()
    for codec in CODECS:
        with pytest.raises(ValueError):
            codec.pack_frames([b"ok", view], 0, 100, 50)


async def test_protocol_with_views_echoes_and_kept_views_stay_intact() -> None:
    """A server whose handler keeps every payload it was lent: after 1200
    pipelined frames (900 KB, more than one receive buffer) over loopback,
    each kept payload is still what was sent."""
    kept: list[Any] = []
    left: list[int] = []  # what the observer was told: each buffer left's size
    served: list[FramedProtocol] = []

    def keep_and_echo(frames: list[Any]) -> list[Any]:
        kept.extend(frames)
        return frames

    class BuffersLeft(NullObserver):
        def buffer_left_to_views(self, size: int) -> None:
            left.append(size)

    def serve_one() -> FramedProtocol:
        served.append(FramedProtocol(keep_and_echo, views=True, observer=BuffersLeft()))
        return served[-1]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(serve_one, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sent = [bytes([n % 251]) * (n * 7 % 1500) for n in range(1200)]
    async with server:
        frames, out = await open_framed_connection("127.0.0.1", port)
        out.write_frames(sent)
        await out.drain()
        echoed = [await frames.read_frame() for _ in sent]
        out.close()
    assert echoed == sent
    assert [bytes(p) for p in kept] == sent
    assert [type(p) for p in kept] == [memoryview if len(p) >= VIEW_MIN else bytes for p in sent]
    # every buffer the kept views hold was reported, with its size
    assert len(left) == served[0].decoder.buffers_left_to_views >= 2
    assert set(left) == {DEFAULT_BUFFER_SIZE}


def compiled_codec() -> Codec:
    if not SELECTED.accelerated:
        pytest.skip("the C accelerator is not built here (no compiler at install)")
    return SELECTED


@given(st.lists(st.binary(min_size=VIEW_MIN, max_size=VIEW_MIN + 300), min_size=1, max_size=12))
@settings(max_examples=40)
def test_lent_views_handed_back_in_order_are_written_from_the_buffer(
    payloads: list[bytes],
) -> None:
    codec = compiled_codec()
    wire = bytearray(encode_frames(payloads))
    frames, _ = codec.split_views(wire, 0, len(wire), 1 << 20, VIEW_MIN)
    region = codec.wire_region(frames, 1 << 20)
    assert region is not None and region.readonly and region.obj is wire
    assert bytes(region) == bytes(codec.pack_frames(frames, 0, 1 << 20, 1 << 30)[0]) == wire
    written: list[Any] = []
    assert write_frames(written.append, frames) == len(payloads)
    assert len(written) == 1 and isinstance(written[0], memoryview)  # not packed: no copy
    assert PURE.wire_region(frames, 1 << 20) is None  # the twin packs instead: same bytes


def test_wire_region_is_none_unless_the_frames_lie_in_place() -> None:
    codec = compiled_codec()
    sizes = [600, 700, 800]
    wire = bytearray(encode_frames([bytes([n % 250]) * n for n in sizes]))
    a, b, c = codec.split_views(wire, 0, len(wire), 1 << 20, VIEW_MIN)[0]
    other = codec.split_views(bytes(wire), 0, len(wire), 1 << 20, VIEW_MIN)[0]
    released = memoryview(bytes(wire))[4:604]
    released.release()
    for not_in_place in (
        [a, c],  # a gap
        [b, a],  # out of order
        [a, a],  # the same frame twice
        [a[1:]],  # not preceded by its own header
        [a, other[1]],  # another buffer
        [a, b"x" * 700],  # not a view
        [released],
        [],
    ):
        assert codec.wire_region(not_in_place, 1 << 20) is None
    assert codec.wire_region([a, b], 650) is None  # b is over the limit
    assert codec.wire_region((a, b), 1 << 20) is not None  # a tuple will do


def test_a_region_the_transport_keeps_is_never_overwritten() -> None:
    """What a transport does with a write it cannot send at once: keep it.
    The decoder then leaves its buffer to it, so the queued bytes stay."""
    codec = compiled_codec()
    first = bytes(encode_frames([b"A" * 1000] * 8))
    other = bytes(encode_frames([b"B" * 1000] * 8))
    with on_codec(codec):
        decoder = FrameDecoder(views=True)
        frames = read_through_buffer(decoder, first, [len(first)])
        queued = codec.wire_region(frames, 1 << 20)
        del frames
        for _ in range(3):
            read_through_buffer(decoder, other, [len(other)])
        assert queued is not None and bytes(queued) == first
        assert decoder.buffers_left_to_views == 1


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
@pytest.mark.parametrize("style", ["protocol", "streams"])
def test_an_echo_of_views_to_a_slow_reader_is_exact(loop_name: str, style: str) -> None:
    """A client with a small receive buffer that sends 3 MB before it reads
    anything: the echo's in-place writes queue in the transport while the
    server reads on, and every byte comes back as sent."""
    run_on_loop(loop_name, _echo_to_a_slow_reader(style))


async def _echo_to_a_slow_reader(style: str) -> None:
    loop = asyncio.get_running_loop()

    def echo(frames: list[Any]) -> list[Any]:
        return frames

    async def serve_streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames, out = framed_streams(reader, writer, views=True)
        await serve_frames(frames, out, echo)

    if style == "protocol":
        server = await loop.create_server(lambda: FramedProtocol(echo, views=True), "127.0.0.1", 0)
    else:
        server = await asyncio.start_server(serve_streams, "127.0.0.1", 0)
    sock = await slow_reader_socket(server)
    sent = [bytes([n % 251]) * (VIEW_MIN + n % 900) for n in range(3000)]
    async with server:
        frames, out = await open_framed_connection_on(sock)
        out.write_frames(sent)
        await out.drain()
        echoed = [await frames.read_frame() for _ in sent]
        out.close()
    assert echoed == sent


async def slow_reader_socket(server: asyncio.Server) -> socket.socket:
    """A client socket to `server` with a 4 KiB receive buffer: replies back up fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, server.sockets[0].getsockname())
    return sock


async def open_framed_connection_on(sock: socket.socket) -> Any:
    reader, writer = await asyncio.open_connection(sock=sock)
    return framed_streams(reader, writer)


class NeverReadPeerProbe(FramedProtocol):
    """The echo of views, with small kernel buffers so a peer that never reads
    fills the transport's write buffer within a few hundred frames."""

    def __init__(self) -> None:
        super().__init__(lambda frames: frames, views=True, high_water=256 * 1024)
        self.paused = asyncio.Event()
        self.read = asyncio.Event()

    def buffer_updated(self, nbytes: int) -> None:
        super().buffer_updated(nbytes)
        self.read.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        super().connection_made(transport)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused.set()


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_queued_writes_pin_at_most_one_buffer(loop_name: str) -> None:
    """A peer that sends one frame per read and never reads: once the
    transport queues, replies are packed (copied), so at most the one region
    queued first pins its receive buffer, not one buffer per queued reply."""
    run_on_loop(loop_name, _queued_writes_pin_at_most_one_buffer())


async def _queued_writes_pin_at_most_one_buffer() -> None:
    loop = asyncio.get_running_loop()
    connected: asyncio.Future[NeverReadPeerProbe] = loop.create_future()

    def make() -> NeverReadPeerProbe:
        probe = NeverReadPeerProbe()
        connected.set_result(probe)
        return probe

    server = await loop.create_server(make, "127.0.0.1", 0)
    sock = await slow_reader_socket(server)
    frame = bytes(encode_frames([b"p" * 600]))
    async with server:
        probe = await connected
        for _ in range(20_000):
            if probe.paused.is_set():
                break
            probe.read.clear()
            await loop.sock_sendall(sock, frame)
            await probe.read.wait()  # one frame a read: each reply its own region
        sock.close()
    assert probe.paused.is_set(), "the write buffer never filled"
    assert probe.decoder.buffers_left_to_views <= 1
