"""Sans-IO decoder: bytes in, complete payloads out. No sockets here.

Wire format: a 4-byte unsigned big-endian payload length, then the payload.

Operations: `feed(data)` for code that already holds bytes, and the pair
`get_buffer()` / `buffer_updated(n)` for code that lets the kernel write
straight into the decoder's memory (asyncio.BufferedProtocol, recv_into).
Both return the payloads completed by that input, in order: the batch a
reader hands to its handler (as Netty's decoders fill an out list).

Cost goals: linear in the bytes processed whatever the chunking, and at most
one user-space copy per byte (the per-frame loop, and the per-read pair
get_buffer/buffer_updated, are compiled when the install could build them:
framing/_codec.py, PyDecoderCore below):
- Small frames land in one fixed receive buffer and are copied out once, as
  `bytes`. The buffer is never resized (the event loop may still hold a view
  of it while we parse), the read offsets reset whenever it is drained, and
  the unparsed tail moves to the front only when the end is reached; that
  tail is shorter than `large_frame` + 4, so moves are bounded and rare.
- With `views=True` small payloads of VIEW_MIN bytes or more are not copied
  at all (shorter ones still are: a copy that small costs less than a view):
  each is a read-only memoryview of the receive buffer (as tokio's BytesMut
  splits off Bytes that share its memory). Before the buffer is written again the
  decoder asks whether any of those views (or a slice of one) is still alive;
  if so it leaves that buffer to them and receives into a fresh one, so a
  view's bytes never change, whoever keeps it and for however long. The
  price of keeping one is that it pins the whole buffer (buffer_size bytes):
  a handler that stores payloads should store bytes(payload).
- A frame of `large_frame` bytes or more gets its own bytearray of exactly the
  declared length; `get_buffer()` then offers the unfilled rest of it, so the
  kernel writes the payload where the handler will read it: no copy per chunk
  (Twisted's Int32StringReceiver concatenates, which is quadratic). Such a
  payload is delivered as that bytearray, also when it happened to arrive
  whole in one read (then it is copied once, as a `bytes` would be).
Payload type, one rule: under `large_frame` bytes a payload is `bytes` (with
views=True, a read-only `memoryview` from VIEW_MIN bytes); at `large_frame`
bytes or more it is a `bytearray` (mutable: `bytes(p)` if a hashable copy is
needed). Always `bytes` would cost a copy of every large payload, which the
README measures.
Limits: a header over `max_frame_length` raises FrameTooLarge as soon as its
4 bytes are in, before any payload is kept, so memory per connection stays
below buffer_size + max_frame_length. Frames completed before the bad
header in the same input are still returned; the error is raised by the next
call (and `failed` is set at once), as Netty delivers what it decoded first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from framing._codec import HEADER as HEADER  # re-exported: the wire format's header
from framing._codec import MAX_DECLARABLE as MAX_DECLARABLE
from framing._codec import (
    SELECTED,
    buffer_exported,
    payload_buffer,
    split_frames,
    split_views,
)
from framing.errors import FrameTooLarge, FramingError, TruncatedFrame

HEADER_SIZE = HEADER.size
DEFAULT_MAX_FRAME_LENGTH = 8 * 1024 * 1024
DEFAULT_BUFFER_SIZE = 256 * 1024
DEFAULT_LARGE_FRAME = 64 * 1024
#: with views=True, payloads from this size are lent, shorter ones copied: a
#: bytes object that small comes from Python's small-object allocator and
#: costs less than a view (measured: 32 x 64 B a read, 2.1 us copied against
#: 4.4 us lent; at 1 KiB 4.5 us against 3.7 us)
VIEW_MIN = 512
#: offer the kernel at least this much room, compacting first if needed
_MIN_READ = 16 * 1024

Payload = bytes | bytearray | memoryview
#: what the encoder and feed() accept
BytesLike = bytes | bytearray | memoryview


class PyDecoderCore:
    """The decoder's state and its per-read path, get_buffer() and
    buffer_updated(): the two calls the event loop makes per read. Compiled
    (framing/_speedups.c, DecoderCore) when the install could build it, as
    these two methods' Python was over a quarter of a 64-byte read's cost
    (benchmarks/read_path.py); this is its pure twin (the tests run
    FrameDecoder on both). A read that is not the common one calls back
    into FrameDecoder: _leave_to_views(), _compact(), _parse()."""

    __slots__ = (
        "_buf",
        "_end",
        "_large",
        "_large_filled",
        "_min_read",
        "_small_limit",
        "_start",
        "_view_min",
        "ended_at_boundary",
        "failed",
        "frames_decoded",
        "views",
    )
    _buf: bytearray
    _start: int  # first unparsed byte
    _end: int  # end of received bytes
    _large: bytearray | None
    _large_filled: int
    _small_limit: int
    _min_read: int
    _view_min: int
    #: the error that ended decoding (raised again by every later call)
    failed: FramingError | None
    frames_decoded: int
    #: small payloads lent as read-only views of the receive buffer (no copy)
    views: bool
    #: the last buffer_updated() consumed everything it was given, ending at a
    #: frame boundary with no error: nothing is half-received (a plain
    #: attribute, cheaper than in_frame for the per-read fast path)
    ended_at_boundary: bool

    # -- zero-copy input -----------------------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Writable memory for the next read; pass the count to buffer_updated()."""
        if self.failed is not None:
            raise self.failed
        if self._large is not None:
            return memoryview(self._large)[self._large_filled :]
        if self.views and buffer_exported(self._buf):  # a lent payload is alive
            self._leave_to_views()
        if len(self._buf) - self._end < self._min_read and self._start:
            self._compact()
        room = memoryview(self._buf)
        return room[self._end :] if self._end else room  # after a whole read: one view

    def buffer_updated(self, nbytes: int) -> list[Payload]:
        """Account for `nbytes` written into get_buffer(); return finished payloads."""
        if nbytes < 0:
            raise ValueError("buffer_updated: nbytes must be 0 or more")
        self.ended_at_boundary = False
        if self._large is not None:
            self._large_filled += nbytes
            if self._large_filled < len(self._large):
                return []
            payload, self._large = self._large, None
            self.frames_decoded += 1
            return [payload]
        end = self._end + nbytes
        start = self._start
        if self._small_limit >= 0:  # the common read: whole small frames, nothing left over
            if self.views:  # _split(), inline: this is the per-read path
                frames, pos = split_views(self._buf, start, end, self._small_limit, self._view_min)
            else:
                frames, pos = split_frames(self._buf, start, end, self._small_limit)
            if pos == end:
                self._start = self._end = 0
                self.frames_decoded += len(frames)
                self.ended_at_boundary = True
                return frames
            self._end = end
            return self._parse(frames, pos)
        self._end = end
        return self._parse([], start)

    # -- what the rare reads call back (FrameDecoder) ---------------------
    def _leave_to_views(self) -> None:
        raise NotImplementedError

    def _compact(self) -> None:
        raise NotImplementedError

    def _parse(self, frames: list[Payload], pos: int) -> list[Payload]:
        raise NotImplementedError


if TYPE_CHECKING:
    DecoderCore = PyDecoderCore
else:  # the compiled twin where the install built it (FRAMELAB_PURE_PYTHON=1: never)
    DecoderCore = SELECTED.decoder_core or PyDecoderCore


class FrameDecoder(DecoderCore):
    """Split a byte stream into payloads; see the module docstring for costs."""

    __slots__ = (
        "buffers_left_to_views",
        "large_frame",
        "max_frame_length",
        "on_buffer_left",
    )

    def __init__(
        self,
        max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        large_frame: int = DEFAULT_LARGE_FRAME,
        views: bool = False,
    ) -> None:
        if not 0 <= max_frame_length <= MAX_DECLARABLE:
            raise ValueError(f"max_frame_length must be 0..{MAX_DECLARABLE}")
        if buffer_size < 2 * _MIN_READ:
            raise ValueError(f"buffer_size must be at least {2 * _MIN_READ}")
        self.max_frame_length = max_frame_length
        # A frame whose header+payload cannot fit the buffer must go large.
        self.large_frame = min(large_frame, buffer_size - HEADER_SIZE - _MIN_READ)
        # split_frames stops before any frame of large_frame bytes or more, so a
        # large payload is always its own bytearray (one type rule, see above)
        self._small_limit = min(max_frame_length, self.large_frame - 1)  # < 0: all large
        # not zero-filled: untouched pages stay unmapped. No view of it is kept
        # here: with views=True, "some view is alive" must mean a lent payload
        self._buf = payload_buffer(buffer_size)
        self.views = bool(views)
        self._min_read = _MIN_READ
        self._view_min = VIEW_MIN
        #: receive buffers left to payload views still alive when it was to be reused
        self.buffers_left_to_views = 0
        #: called with the size of each buffer left to views (the policy reports
        #: it to the connection's observer); the rare path, so no cost per read
        self.on_buffer_left: Callable[[int], None] | None = None
        self._start = 0
        self._end = 0
        self._large = None
        self._large_filled = 0
        self.failed = None
        self.frames_decoded = 0
        self.ended_at_boundary = False

    # -- state -----------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Bytes received that belong to a frame not yet complete."""
        if self._large is not None:
            return HEADER_SIZE + self._large_filled
        return self._end - self._start

    @property
    def in_frame(self) -> bool:
        """True while part of a frame (header or payload) has been received."""
        return self._large is not None or self._end > self._start

    # -- convenience input ----------------------------------------------
    def feed(self, data: BytesLike) -> list[Payload]:
        """Copy `data` in and return the payloads it completes.

        With nothing buffered, complete small frames are cut straight out of
        `data` (one copy each, as from the receive buffer; with views=True and
        `data` a bytes object, which cannot change, none: views of `data`)
        and only the rest is copied in: the common case of a read holding
        whole frames."""
        if self.failed is not None:
            raise self.failed
        src = memoryview(data).cast("B")
        frames: list[Payload] = []
        if self._end == 0 and self._large is None and self.large_frame > 0:
            if not self.views:
                frames, pos = split_frames(src, 0, len(src), self._small_limit)
            elif type(data) is bytes:
                frames, pos = split_views(data, 0, len(src), self._small_limit, self._view_min)
            else:  # the caller may change its buffer later: views of our own copy
                frames, pos = [], 0
            self.frames_decoded += len(frames)
            if pos == len(src):
                return frames
            src = src[pos:]
        while src:
            if self.failed is not None and frames:
                break  # the frames before the bad header; the error comes next call
            room = self.get_buffer(len(src))
            count = min(len(room), len(src))
            room[:count] = src[:count]
            room.release()  # not a lent view: the next get_buffer() must not see it
            src = src[count:]
            try:
                frames += self.buffer_updated(count)
            except FramingError:
                if not frames:
                    raise
                break  # deliver the frames completed before the bad header first
        return frames

    def end_of_stream(self) -> None:
        """Declare the input finished: fine at a frame boundary, else TruncatedFrame."""
        if self.failed is not None:
            raise self.failed
        if self._large is not None:
            self._fail(TruncatedFrame(self._large_filled, len(self._large), in_header=False))
        pending = self._end - self._start
        if pending == 0:
            return
        if pending < HEADER_SIZE:
            self._fail(TruncatedFrame(pending, HEADER_SIZE, in_header=True))
        (declared,) = HEADER.unpack_from(self._buf, self._start)
        self._fail(TruncatedFrame(pending - HEADER_SIZE, declared, in_header=False))

    # -- internals -------------------------------------------------------
    def _fail(self, error: FramingError) -> None:
        self.failed = error
        raise error

    def _compact(self) -> None:
        pending = self._buf[self._start : self._end]  # copy: source and target overlap
        self._buf[: len(pending)] = pending
        self._start, self._end = 0, len(pending)

    def _leave_to_views(self) -> None:
        """A payload lent from the buffer is still alive where the next read
        would go: leave the buffer to it and go on in a fresh one."""
        pending = self._buf[self._start : self._end]
        self._buf = payload_buffer(len(self._buf))
        self._buf[: len(pending)] = pending
        self._start, self._end = 0, len(pending)
        self.buffers_left_to_views += 1
        if self.on_buffer_left is not None:
            self.on_buffer_left(len(self._buf))

    def _split(self, pos: int, end: int) -> tuple[list[Payload], int]:
        """The small frames from `pos`, copied or lent as the decoder does."""
        if self.views:
            return split_views(self._buf, pos, end, self._small_limit, self._view_min)
        return split_frames(self._buf, pos, end, self._small_limit)

    def _parse(self, frames: list[Payload], pos: int) -> list[Payload]:
        """Go on from `pos`, where split_frames stopped (`frames`: what it cut):
        a large, oversized or partial frame."""
        small_limit = self._small_limit
        view, end = memoryview(self._buf), self._end
        while end - pos >= HEADER_SIZE:  # stopped at a large, oversized or partial frame
            (length,) = HEADER.unpack_from(self._buf, pos)
            if length > self.max_frame_length:
                self._start = pos
                error = FrameTooLarge(length, self.max_frame_length)
                if not frames:
                    self._fail(error)
                self.failed = error  # deliver the good frames first; raise next call
                self.frames_decoded += len(frames)
                return frames
            if length < self.large_frame:
                break  # a small frame, not complete yet
            body = pos + HEADER_SIZE
            have = min(length, end - body)
            large = payload_buffer(length)
            # through a memoryview: bytearray slice assignment from a view copies
            # the view into a temporary bytearray first (two copies, not one)
            memoryview(large)[:have] = view[body : body + have]
            if have < length:  # the kernel writes the rest straight into it
                self._large, self._large_filled = large, have
                pos = end
                break
            frames.append(large)  # complete in this read: copied once, as bytes would be
            pos = body + length
            if small_limit >= 0:
                more, pos = self._split(pos, end)
                frames += more
        self.frames_decoded += len(frames)
        if pos == end:
            self._start = self._end = 0
        else:
            self._start = pos
        return frames
