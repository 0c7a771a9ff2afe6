"""asyncio streams adapter: frames over a StreamReader / StreamWriter.

A translator, like FramedProtocol, over the same ConnectionPolicy
(framing/connection.py), so the frame timeout, the error reply, the
graceful drain and the discard after FIN mean exactly what they mean there.
The reader feeds whatever `StreamReader.read()` returns into the policy's
decoder (readexactly() would buffer whatever a header declares), keeps one
loop timer for the policy's deadline (moved only when it would fire late;
when it changes the policy's state, it interrupts the read it is waiting
in), and carries out the policy's actions on the writer it was paired with
by `framed_streams`. Not `asyncio.timeout()` per read: entering one costs
several microseconds, a tenth of a small frame's whole round trip here.
Streams cost more copies than FramedProtocol (the stream's own buffer sits
in between): choose them for convenience, the protocol for speed.

Flow control is the streams' own: `serve_frames` awaits `drain()` after
every slice of replies before it reads on, so a peer that does not read
stops being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

from framing.batch import BatchHandler
from framing.connection import (
    CLOSE,
    DEFAULT_DISCARD_WINDOW,
    DEFAULT_FRAME_TIMEOUT,
    WRITE_EOF,
    ArmTimer,
    ConnectionPolicy,
    ErrorReply,
    Write,
)
from framing.decoder import (
    DEFAULT_LARGE_FRAME,
    DEFAULT_MAX_FRAME_LENGTH,
    BytesLike,
    FrameDecoder,
    Payload,
)
from framing.encoder import write_frames
from framing.errors import FramingError
from framing.observer import NULL_OBSERVER, ConnectionObserver
from framing.transport import peer_name, unread_kernel_bytes, writev_lines

log = logging.getLogger("framing")

READ_SIZE = 256 * 1024


class FrameReader:
    """Read payloads from a StreamReader: `await read_frame()` or `async for`.

    Errors (FrameTooLarge, TruncatedFrame, FrameTimeout) name the peer and
    stay: every later read raises the same one.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
        *,
        peer: str | None = None,
        frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
        discard_window: float = DEFAULT_DISCARD_WINDOW,
        error_reply: ErrorReply | None = None,
        observer: ConnectionObserver = NULL_OBSERVER,
        views: bool = False,
    ) -> None:
        self.reader = reader
        self._writer: asyncio.StreamWriter | None = None
        self.decoder = FrameDecoder(max_frame_length, views=views)
        self.policy = ConnectionPolicy(
            self.decoder,
            frame_timeout=frame_timeout,
            discard_window=discard_window,
            error_reply=error_reply,
            observer=observer,
            unread=self._unread,
        )
        self.peer = peer
        self.policy.connection_made(peer or "?")
        self._ready: deque[Payload] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None  # the task that reads
        self._waiting = False  # it is blocked in a read now
        self._interrupted = False  # our timer cancelled that read

    def attach(self, writer: asyncio.StreamWriter) -> None:
        """Carry out the policy's writes (error reply, FIN, close) on `writer`."""
        self._writer = writer
        self.policy.can_write_eof = writer.can_write_eof()

    # -- reading ---------------------------------------------------------------
    async def read_batch(self) -> list[Payload]:
        """The payloads decoded next (at most DELIVERY_SLICE); [] once no more
        frames will come (a clean end, or our FIN after a graceful drain)."""
        if self._ready:
            frames = list(self._ready)
            self._ready.clear()
            return frames
        policy = self.policy
        while True:
            frames = policy.next_frames()
            if policy.due:
                self.apply_actions()
            if frames:
                return frames
            error = policy.error
            if isinstance(error, FramingError):
                raise error
            if not policy.reading:
                return []
            # _read_once, inlined: a coroutine call per read is measurable here
            task = self._task = asyncio.current_task()  # any task may read (e.g. wait_for)
            self._waiting = True
            try:
                data = await self.reader.read(READ_SIZE)
            except asyncio.CancelledError:
                if not self._interrupted or task is None:
                    raise
                self._interrupted = False
                task.uncancel()  # our own timer's doing: the policy has moved on
                continue
            except ConnectionError as error:
                self.connection_lost(error)
                raise
            finally:
                self._waiting = False
            if data:
                policy.receive(data, asyncio.get_running_loop().time())
            else:
                policy.end_of_stream(asyncio.get_running_loop().time())

    async def read_frame(self) -> Payload | None:
        """The next payload; None at a clean end of stream."""
        ready = self._ready
        if ready:
            return ready.popleft()
        frames = await self.read_batch()
        if not frames:
            return None
        if len(frames) > 1:
            ready.extend(frames)
            return ready.popleft()
        return frames[0]

    def read_ready(self) -> list[Payload]:
        """Every payload already decoded, without awaiting (for batching)."""
        frames = list(self._ready)
        self._ready.clear()
        while more := self.policy.next_frames():
            frames += more
        self.apply_actions()
        return frames

    async def __aiter__(self) -> AsyncIterator[Payload]:
        while (frame := await self.read_frame()) is not None:
            yield frame

    async def discard_until_closed(self) -> None:
        """After our FIN: read and drop input until the peer's FIN or the
        discard window passes (a close with unread input would send RST)."""
        while not self.policy.closed:
            if self._writer is None:
                return  # nothing to close: the owner of the stream decides
            await self._read_once()

    # -- shutdown ----------------------------------------------------------------
    def begin_shutdown(self) -> None:
        """Answer every frame already received, then FIN (see ConnectionPolicy)."""
        self.policy.shutdown_requested(asyncio.get_running_loop().time())
        self.apply_actions()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.policy.connection_lost(exc)
        self.apply_actions()

    # -- internals ---------------------------------------------------------------
    def _unread(self) -> int:
        """Bytes not yet given to the policy: in the stream's buffer and in the kernel."""
        buffered = len(getattr(self.reader, "_buffer", b""))  # StreamReader has no public size
        if self._writer is None:
            return buffered
        return buffered + unread_kernel_bytes(self._writer.transport)

    async def _read_once(self) -> None:
        """One read into the policy (read_batch has this inlined)."""
        loop = asyncio.get_running_loop()
        task = self._task = asyncio.current_task()  # any task may read (e.g. under wait_for)
        self._waiting = True
        try:
            data = await self.reader.read(READ_SIZE)
        except asyncio.CancelledError:
            if not self._interrupted or task is None:
                raise
            self._interrupted = False
            task.uncancel()  # our own timer's doing: the policy has moved on
            return
        except ConnectionError as error:
            self.connection_lost(error)
            raise
        finally:
            self._waiting = False
        if data:
            self.policy.receive(data, loop.time())
        else:
            self.policy.end_of_stream(loop.time())
        if self.policy.due:
            self.apply_actions()

    def apply_actions(self) -> None:
        """Carry out what the policy decided (on the attached writer, if any)."""
        writer = self._writer
        for action in self.policy.actions():
            if isinstance(action, ArmTimer):
                self._arm(action.at)
            elif writer is None or writer.transport.is_closing():
                continue
            elif isinstance(action, Write):
                writer.write(action.data)
            elif action is WRITE_EOF:
                writer.write_eof()
            elif action is CLOSE:
                writer.close()
            # PAUSE_READING / RESUME_READING: the streams pause on their own

    def _arm(self, at: float | None) -> None:
        timer = self._timer
        if timer is not None and not self.policy.closed and (at is None or timer.when() <= at):
            return  # it fires early: clock() then asks for the real deadline
        if timer is not None:
            timer.cancel()
            self._timer = None
        if at is not None:
            self._timer = asyncio.get_running_loop().call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        before = self.policy.state
        self.policy.clock(asyncio.get_running_loop().time())
        self.apply_actions()
        task = self._task
        if self.policy.state is not before and self._waiting and task is not None:
            self._interrupted = True  # wake the read: an error to raise, or the end
            task.cancel()


class FrameWriter:
    """Write frames to a StreamWriter; `drain()` is flow control, not flush.

    `async with` (or close() and wait_closed()) closes the connection.
    """

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
        large_frame: int = DEFAULT_LARGE_FRAME,
        *,
        policy: ConnectionPolicy | None = None,
    ) -> None:
        self.writer = writer
        self.max_frame_length = max_frame_length
        self.large_frame = large_frame
        self.policy = policy
        self._writelines = writev_lines(writer.transport)

    def write_frames(self, payloads: Iterable[BytesLike]) -> int:
        """Frame and write `payloads` without waiting; returns how many.

        FrameTooLarge for a payload over the limit (after the ones before it);
        ConnectionError once the connection is closing (our FIN is out).
        """
        items = payloads if isinstance(payloads, (list, tuple)) else list(payloads)
        policy = self.policy
        if policy is not None:
            if not policy.live:
                why = policy.error or "shut down"
                raise ConnectionError(f"connection to {policy.peer} is closing ({why})")
            policy.observer.frames_out(items)
        return write_frames(
            self.writer.write,
            items,
            self.max_frame_length,
            self.large_frame,
            self._writelines,
            in_place=not self.writer.transport.get_write_buffer_size(),
        )

    def write_frame(self, payload: BytesLike) -> None:
        self.write_frames((payload,))

    async def send(self, payload: BytesLike) -> None:
        """Write one frame and wait for the buffer to drain below its limit."""
        self.write_frame(payload)
        await self.writer.drain()

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        """Close the connection after what is buffered is sent."""
        self.writer.close()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed; a reset on the way is no error here."""
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
        if self.policy is not None:
            self.policy.connection_lost(None)

    async def __aenter__(self) -> FrameWriter:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()


def framed_streams(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    *,
    peer: str | None = None,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
    discard_window: float = DEFAULT_DISCARD_WINDOW,
    error_reply: ErrorReply | None = None,
    observer: ConnectionObserver = NULL_OBSERVER,
    views: bool = False,
) -> tuple[FrameReader, FrameWriter]:
    """Wrap one connection's streams as a pair sharing one ConnectionPolicy.

    The reader's errors name the peer (`peer`, else the socket's); a frame still incomplete
    `frame_timeout` seconds after its first byte raises FrameTimeout; after
    bad framing the peer gets `error_reply(error)` (if given) and our FIN.
    Both sides use `max_frame_length`. `views=True`: small payloads are
    read-only memoryviews, not copies (see FrameDecoder).
    """
    frames = FrameReader(
        reader,
        max_frame_length,
        peer=peer or peer_name(writer.transport),
        frame_timeout=frame_timeout,
        discard_window=discard_window,
        error_reply=error_reply,
        observer=observer,
        views=views,
    )
    frames.attach(writer)
    return frames, FrameWriter(writer, max_frame_length, policy=frames.policy)


async def open_framed_connection(
    host: str,
    port: int,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    *,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
    observer: ConnectionObserver = NULL_OBSERVER,
    views: bool = False,
) -> tuple[FrameReader, FrameWriter]:
    """Connect to host:port and return its framed streams (see framed_streams).

        reader, writer = await open_framed_connection("127.0.0.1", 7000)
        async with writer:
            await writer.send(b"ping")
            reply = await reader.read_frame()  # None if the server closed

    Connection errors (refused, unreachable, DNS) are asyncio.open_connection's.
    """
    reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
    return framed_streams(
        reader,
        writer,
        max_frame_length,
        frame_timeout=frame_timeout,
        observer=observer,
        views=views,
    )


async def serve_frames(frames: FrameReader, out: FrameWriter, handler: BatchHandler) -> None:
    """Serve one connection the way FramedProtocol does: answer every batch,
    await drain() before reading on, and end as the policy says (errors are
    logged and answered by the policy, not raised). Closes the connection."""
    policy = frames.policy
    try:
        while batch := await frames.read_batch():
            try:
                replies = handler(batch)
                if replies:
                    out.write_frames(replies)
            except FramingError as error:  # e.g. a reply over the frame limit
                policy.reject(error, asyncio.get_running_loop().time())
                frames.apply_actions()  # the error reply and our FIN
                break
            except Exception as error:
                policy.abandon(error)
                frames.apply_actions()
                break
            await out.drain()
    except FramingError:
        pass  # logged, answered and half-closed by the policy
    except ConnectionError as error:
        frames.connection_lost(error)
    try:
        await frames.discard_until_closed()
    except ConnectionError as error:
        frames.connection_lost(error)
    finally:
        out.close()
        await out.wait_closed()
