"""asyncio streams adapter: frames over a StreamReader / StreamWriter.

The reader feeds whatever `StreamReader.read()` returns into the same
FrameDecoder the protocol adapter uses, so limits, errors and the EOF rule
are identical in both styles (readexactly() would buffer whatever a header
declares). Streams cost more copies than FramedProtocol (the stream's own
buffer sits in between): choose them for convenience, the protocol for speed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable

from framing.decoder import (
    DEFAULT_LARGE_FRAME,
    DEFAULT_MAX_FRAME_LENGTH,
    BytesLike,
    FrameDecoder,
    Payload,
)
from framing.encoder import write_frames
from framing.errors import FramingError
from framing.protocol import peer_name, writev_lines

READ_SIZE = 256 * 1024


class FrameReader:
    """Read payloads from a StreamReader: `await read_frame()` or `async for`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
        *,
        peer: str | None = None,
    ) -> None:
        self.reader = reader
        self.decoder = FrameDecoder(max_frame_length)
        self.peer = peer
        self._ready: deque[Payload] = deque()

    async def read_frame(self) -> Payload | None:
        """The next payload; None at a clean end of stream.

        Raises FrameTooLarge or TruncatedFrame (with the peer set) otherwise.
        """
        while not self._ready:
            if self.decoder.failed is not None:  # frames before it were delivered
                self.decoder.failed.peer = self.peer
                raise self.decoder.failed
            data = await self.reader.read(READ_SIZE)
            try:
                if not data:
                    self.decoder.end_of_stream()
                    return None
                self._ready.extend(self.decoder.feed(data))
            except FramingError as error:
                error.peer = self.peer
                raise
        return self._ready.popleft()

    def read_ready(self) -> list[Payload]:
        """Every payload already decoded, without awaiting (for batching)."""
        frames = list(self._ready)
        self._ready.clear()
        return frames

    async def __aiter__(self) -> AsyncIterator[Payload]:
        while (frame := await self.read_frame()) is not None:
            yield frame


class FrameWriter:
    """Write frames to a StreamWriter; `drain()` is flow control, not flush."""

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
        large_frame: int = DEFAULT_LARGE_FRAME,
    ) -> None:
        self.writer = writer
        self.max_frame_length = max_frame_length
        self.large_frame = large_frame
        self._writelines = writev_lines(writer.transport)

    def write_frames(self, payloads: Iterable[BytesLike]) -> int:
        return write_frames(
            self.writer.write,
            payloads,
            self.max_frame_length,
            self.large_frame,
            self._writelines,
        )

    def write_frame(self, payload: BytesLike) -> None:
        self.write_frames((payload,))

    async def send(self, payload: BytesLike) -> None:
        """Write one frame and wait for the buffer to drain below its limit."""
        self.write_frame(payload)
        await self.writer.drain()

    async def drain(self) -> None:
        await self.writer.drain()


def framed_streams(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
) -> tuple[FrameReader, FrameWriter]:
    """Wrap a connection's streams; the reader's errors name the peer."""
    peer = peer_name(writer.transport)
    return (
        FrameReader(reader, max_frame_length, peer=peer),
        FrameWriter(writer, max_frame_length),
    )


async def open_framed_connection(
    host: str, port: int, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH
) -> tuple[FrameReader, FrameWriter]:
    """asyncio.open_connection, framed."""
    reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
    return framed_streams(reader, writer, max_frame_length)
