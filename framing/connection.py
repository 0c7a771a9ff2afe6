"""The connection policy, sans-IO: one framed connection's life as a state machine.

Frame timeout (slow loris), graceful drain, the error reply and the discard
after our FIN are decided here and nowhere else; the asyncio adapters
(framing/protocol.py, framing/streams.py) only translate transport callbacks
into the inputs below and carry out the actions that come back. No socket,
no loop, no wall clock: time is whatever the caller says `now` is, so the
tests drive every transition with a fake clock.

Inputs: bytes (`get_buffer`/`buffer_updated`, the decoder's zero-copy path,
or `receive`), `end_of_stream`, `clock(now)` (a timer fired), `writes_paused`
/ `writes_resumed`, `shutdown_requested`, `reject` (the application refused
to go on: a reply over the limit), `abandon` (the handler crashed),
`connection_lost`. Outputs: payloads for the handler (`next_frames`, at most
DELIVERY_SLICE at a time, none while writes are paused) and `actions()`:
`Write(bytes)`, `WRITE_EOF`, `CLOSE`, `PAUSE_READING`, `RESUME_READING`,
`ArmTimer(at)` (`at=None` cancels).

| state      | input                                | actions                        | next       |
|------------|--------------------------------------|--------------------------------|------------|
| OPEN       | bytes completing frames              | frames via next_frames()       | OPEN       |
| OPEN       | first byte of a frame at T           | ArmTimer(T + frame_timeout)    | OPEN       |
| OPEN       | the frame completes, none started    | ArmTimer(None)                 | OPEN       |
| OPEN, DR.  | clock(now >= T + frame_timeout)      | reply, WRITE_EOF, ArmTimer     | DISCARDING |
| OPEN, DR.  | header over the limit; reject(error) | same, after the frames before  | DISCARDING |
| OPEN, DR.  | end_of_stream inside a frame         | reply, CLOSE                   | CLOSED     |
| OPEN, DR.  | end_of_stream at a frame boundary    | CLOSE once held frames are out | CLOSED     |
| OPEN, DR.  | writes_paused                        | PAUSE_READING; frames are held | same       |
| OPEN, DR.  | writes_resumed, held frames delivered| RESUME_READING                 | same       |
| OPEN       | shutdown_requested                   | (none yet)                     | DRAINING   |
| DRAINING   | idle: nothing held, no partial frame,| WRITE_EOF,                     | DISCARDING |
|            | nothing unread in the kernel         | ArmTimer(now + discard_window) |            |
| DISCARDING | bytes                                | (dropped unparsed)             | DISCARDING |
| DISCARDING | end_of_stream; clock(now >= window)  | CLOSE                          | CLOSED     |
| any        | abandon(error) (the handler crashed) | CLOSE                          | CLOSED     |
| any        | connection_lost                      | ArmTimer(None)                 | CLOSED     |

("DR." is DRAINING; "reply" is the error reply hook's frame, if any.)

Meanings, one each:
- frame timeout: a frame must be complete `frame_timeout` seconds after its
  first byte arrived; at that instant it is not, it fails. Idle time between
  frames is not limited (keep-alive), and each pipelined frame gets its own
  full timeout from its own first byte.
- discard window: after our FIN (an error, or the end of a graceful drain)
  input is read and dropped until the peer's FIN or `discard_window`
  seconds: a close() with unread input would send RST, which can destroy
  replies the peer has not read yet. (Not SO_LINGER, which is a socket
  option the servers set separately.)
- graceful drain: every frame already received, by us or by the kernel, is
  answered before our FIN.
- error reply: a hook `error_reply(error) -> payload | None`; its payload is
  framed and written before our FIN (msgpack mode says why; raw frames say
  nothing).

Cost: O(1) per input besides the decoder's own work; frames held while
writes are paused are the decoder's output list, not copies, and reading is
paused meanwhile, so memory stays bounded by the decoder's limits.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from framing.decoder import DEFAULT_MAX_FRAME_LENGTH, BytesLike, FrameDecoder, Payload
from framing.encoder import encode_frame
from framing.errors import FrameTimeout, FramingError, TruncatedFrame
from framing.observer import NULL_OBSERVER, ConnectionObserver, error_kind

log = logging.getLogger("framing")

DEFAULT_FRAME_TIMEOUT = 30.0
#: seconds input is read and dropped after our FIN, waiting for the peer's
DEFAULT_DISCARD_WINDOW = 2.0
#: frames handed to the handler at a time when a read completed many: between
#: slices the adapter writes the replies, and a full write buffer pauses the
#: rest, so replies cannot outgrow high_water by more than one slice's worth
DELIVERY_SLICE = 64
_DISCARD = bytearray(64 * 1024)

#: what a dropped peer is told: a payload (framed here) or None for nothing
ErrorReply = Callable[[FramingError], BytesLike | None]


class State(enum.Enum):
    OPEN = "open"
    DRAINING = "draining"
    DISCARDING = "discarding"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Write:
    """Bytes to write (an error reply, already framed)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ArmTimer:
    """Call `clock()` at loop time `at`; None cancels the timer."""

    at: float | None


class Signal(enum.Enum):
    WRITE_EOF = "write_eof"
    CLOSE = "close"
    PAUSE_READING = "pause_reading"
    RESUME_READING = "resume_reading"


WRITE_EOF = Signal.WRITE_EOF
CLOSE = Signal.CLOSE
PAUSE_READING = Signal.PAUSE_READING
RESUME_READING = Signal.RESUME_READING
Action = Write | ArmTimer | Signal


def _nothing_unread() -> int:
    return 0


class ConnectionPolicy:
    """One connection's framing policy; see the module docstring for the table."""

    def __init__(
        self,
        decoder: FrameDecoder | None = None,
        *,
        frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
        discard_window: float = DEFAULT_DISCARD_WINDOW,
        error_reply: ErrorReply | None = None,
        observer: ConnectionObserver = NULL_OBSERVER,
        unread: Callable[[], int] = _nothing_unread,
        can_write_eof: bool = True,
    ) -> None:
        if frame_timeout is not None and frame_timeout <= 0:
            raise ValueError(f"frame_timeout must be positive or None, not {frame_timeout}")
        if discard_window < 0:
            raise ValueError(f"discard_window must be 0 or more, not {discard_window}")
        self.decoder = decoder if decoder is not None else FrameDecoder(DEFAULT_MAX_FRAME_LENGTH)
        self.frame_timeout = frame_timeout
        self.discard_window = discard_window
        self.error_reply = error_reply
        self.observer = observer
        self._observed = observer is not NULL_OBSERVER  # skip the no-op calls per read
        if self._observed:
            self.decoder.on_buffer_left = observer.buffer_left_to_views
        #: bytes received by the kernel (or a stream buffer) not yet given to us
        self.unread = unread
        self.can_write_eof = can_write_eof
        self.state = State.OPEN
        #: frames are still exchanged (OPEN or DRAINING): the adapters' cheap check,
        #: since comparing enum members costs a microsecond on Python 3.11
        self.live = True
        #: input is still parsed into frames (not dropped, not over): live, and
        #: the decoder has not failed
        self.reading = True
        self._draining = False
        self.peer = "?"
        #: why the connection failed (None: it did not, or not yet)
        self.error: BaseException | None = None
        #: the actions not yet taken with actions() (adapters test it before calling)
        self.due: list[Action] = []
        self._held: list[Payload] = []
        self._held_at = 0
        self._writes_paused = False
        self._reading_paused = False
        self._peer_done = False  # the peer's FIN came at a frame boundary
        self._failure: FramingError | None = None  # decoder failed after good frames
        self._frame_deadline: float | None = None
        self._timed_frame = -1  # decoder.frames_decoded when the frame deadline was set
        self._discard_deadline: float | None = None
        self._timer_at: float | None = None
        self._now = 0.0
        self._lost = False

    # -- outputs ------------------------------------------------------------
    def actions(self) -> Sequence[Action]:
        """The actions due, in order; each is returned once."""
        actions = self.due
        if not actions:
            return ()
        self.due = []
        return actions

    def next_frames(self) -> list[Payload]:
        """The next slice of payloads for the handler; [] when there is none
        (or writes are paused). Call until [] after every input."""
        held = self._held
        start = self._held_at
        if start < len(held) and self.live and not self._writes_paused:
            end = self._held_at = start + DELIVERY_SLICE
            if start == 0 and end >= len(held):
                return held  # the whole batch: no copy
            return held[start:end]
        if held and start >= len(held):
            self._held, self._held_at = [], 0
        if self._reading_paused or self._peer_done or self._draining or not self.reading:
            self._after_delivery()
        return []

    @property
    def deadline(self) -> float | None:
        """When `clock()` must next be called (None: no timer needed)."""
        if self.live:
            return self._frame_deadline
        if self.state is State.DISCARDING:
            return self._discard_deadline
        return None

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # -- inputs ---------------------------------------------------------------
    def connection_made(self, peer: str) -> None:
        self.peer = peer
        self.observer.connection_opened(peer)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Memory for the next read: the decoder's, or a scratch buffer to drop input."""
        if not self.reading:
            return memoryview(_DISCARD)
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int, now: float) -> None:
        """`nbytes` were written into get_buffer() at time `now`."""
        self._now = now
        if not self.reading:
            return
        try:
            frames = self.decoder.buffer_updated(nbytes)
        except FramingError as error:
            self._reject(error)
            return
        self._take(frames, now)

    def read_ready(self, nbytes: int, now: float) -> list[Payload] | None:
        """buffer_updated(), with the per-read fast path: when the read left
        no frame half-received and nothing stands in the way (live, writes
        flowing, nothing held, no timer running, no drain), its frames are
        returned for the handler at once instead of held; None means they
        were held as buffer_updated() holds them (call next_frames()).
        Either way the same frames reach the handler in the same order."""
        self._now = now
        if not self.reading:
            return None
        decoder = self.decoder
        try:
            frames = decoder.buffer_updated(nbytes)
        except FramingError as error:
            self._reject(error)
            return None
        if (
            decoder.ended_at_boundary  # nothing half-received, no error
            and self._frame_deadline is None
            and not self._held
            and not self._writes_paused
            and not self._draining
            and len(frames) <= DELIVERY_SLICE
        ):
            if self._observed:
                self.observer.frames_in(frames)
            return frames
        self._take(frames, now)
        return None

    def receive(self, data: BytesLike, now: float) -> None:
        """Bytes read at time `now` (for adapters that get bytes, not a buffer)."""
        self._now = now
        if not self.reading:
            return
        try:
            frames = self.decoder.feed(data)
        except FramingError as error:
            self._reject(error)
            return
        self._take(frames, now)

    def end_of_stream(self, now: float) -> None:
        """The peer sent FIN (or the stream ended)."""
        self._now = now
        if self.state is State.DISCARDING:
            self._close()
            return
        if self.state is State.CLOSED:
            return
        if self._failure is not None:  # rejected once the frames before it are out
            self._peer_done = True
            return
        try:
            self.decoder.end_of_stream()
        except TruncatedFrame as error:
            self._fail(error)
            log.warning("%s; closing the connection", error)
            self._send_error_reply(error)  # the peer only half-closed: it can still read
            self._close()
            return
        self._peer_done = True
        self._after_delivery()

    def clock(self, now: float) -> None:
        """The timer fired (or the caller looks at the time): enforce deadlines."""
        self._now = now
        deadline = self.deadline
        if deadline is None:
            self._sync_timer()
            return
        if now < deadline:
            self._timer_at = None
            self._sync_timer()  # woken early: ask again at the real deadline
            return
        if self.state is State.DISCARDING:
            self._close()
            return
        assert self.frame_timeout is not None
        self._reject(FrameTimeout(self.decoder.buffered, self.frame_timeout))

    def writes_paused(self) -> None:
        """The transport's write buffer passed its high-water mark."""
        if self._writes_paused:
            return
        self._writes_paused = True
        self.observer.writes_paused()
        if self.live and not self._reading_paused:
            self._reading_paused = True
            self.due.append(PAUSE_READING)

    def writes_resumed(self, now: float) -> None:
        """The write buffer drained below its low-water mark; call next_frames() next."""
        self._now = now
        self._writes_paused = False

    def shutdown_requested(self, now: float) -> None:
        """Finish gracefully: answer what was received, then FIN."""
        self._now = now
        if self.live:
            self.state = State.DRAINING
            self._draining = True
        self._after_delivery()

    def reject(self, error: FramingError, now: float) -> None:
        """The application cannot go on with this peer (e.g. a reply over the limit)."""
        self._now = now
        if self.live:
            self._reject(error)

    def abandon(self, error: BaseException) -> None:
        """The handler crashed: close this connection (the server goes on)."""
        if self.state is State.CLOSED:
            return
        log.error("handler failed for peer %s; closing the connection", self.peer, exc_info=error)
        self._fail(error)
        self._close()

    def connection_lost(self, exc: BaseException | None) -> None:
        """The transport is gone: nothing more will happen (reported once)."""
        if self._lost:
            return
        self._lost = True
        if exc is not None and self.error is None:
            self.error = exc
            self._log_lost(exc)
        self._enter(State.CLOSED)
        self._held, self._held_at = [], 0
        self._sync_timer()
        self.observer.connection_closed(self.peer, self.error)

    # -- internals --------------------------------------------------------------
    def _take(self, frames: list[Payload], now: float) -> None:
        """Hold what a read completed; time the frame it started, if any.

        The per-read path: a few attribute tests, no call beyond the
        observer's, when no frame is left half-received."""
        if frames:
            if self._observed:
                self.observer.frames_in(frames)
            if self._held_at >= len(self._held):
                self._held, self._held_at = frames, 0
            else:
                self._held += frames
        decoder = self.decoder
        if decoder.failed is not None:
            self._failure = decoder.failed  # answered after the frames before it
            self.reading = False
            if self._frame_deadline is not None:
                self._frame_deadline = None
                self._sync_timer()
        elif self.frame_timeout is not None:
            if decoder.in_frame:  # a frame's deadline runs from its own first byte
                if self._frame_deadline is None or decoder.frames_decoded != self._timed_frame:
                    self._frame_deadline = now + self.frame_timeout
                    self._timed_frame = decoder.frames_decoded
                    self._sync_timer()
            elif self._frame_deadline is not None:
                self._frame_deadline = None
                self._sync_timer()

    def _after_delivery(self) -> None:
        """Every held frame is out (or none can go out now): what follows."""
        if not self.live:
            return
        if self._held_at < len(self._held):
            return  # still holding frames (writes are paused)
        if self._failure is not None:
            self._reject(self._failure)
            return
        if self._reading_paused and not self._writes_paused:
            self._reading_paused = False
            self.due.append(RESUME_READING)
        if self._peer_done:
            self._close()
        elif self._draining and not self.decoder.in_frame and self.unread() == 0:
            self._half_close()

    def _reject(self, error: FramingError) -> None:
        """Bad framing: log, say why if the hook can, FIN, then discard input."""
        if not self.live:
            return
        self._fail(error)
        log.warning("%s; closing the connection", error)
        self._send_error_reply(error)
        self._half_close()

    def _fail(self, error: BaseException) -> None:
        if isinstance(error, FramingError):
            error.peer = self.peer
        if self.error is None:
            self.error = error
        self.observer.error(error_kind(error), error)

    def _send_error_reply(self, error: FramingError) -> None:
        if self.error_reply is None:
            return
        reply = self.error_reply(error)
        if reply is None:
            return
        try:
            data = encode_frame(reply, self.decoder.max_frame_length)
        except FramingError as too_large:
            log.warning("peer %s: error reply not sent: %s", self.peer, too_large)
            return
        self.observer.frames_out((reply,))
        self.due.append(Write(data))

    def _half_close(self) -> None:
        """FIN after what is buffered; drop input until the peer's FIN or the window."""
        self._held, self._held_at = [], 0
        self._frame_deadline = None
        if not self.can_write_eof or self._peer_done:
            self._close()
            return
        self._enter(State.DISCARDING)
        self._discard_deadline = self._now + self.discard_window
        self.due.append(WRITE_EOF)
        if self._reading_paused:  # the discarded input must keep flowing
            self._reading_paused = False
            self.due.append(RESUME_READING)
        self._sync_timer()

    def _enter(self, state: State) -> None:
        """Leave OPEN/DRAINING for good (to DISCARDING or CLOSED)."""
        self.state = state
        self.live = self.reading = self._draining = False

    def _close(self) -> None:
        self._enter(State.CLOSED)
        self._held, self._held_at = [], 0
        self.due.append(CLOSE)
        self._sync_timer()

    def _sync_timer(self) -> None:
        wanted = self.deadline
        if wanted != self._timer_at:
            self._timer_at = wanted
            self.due.append(ArmTimer(wanted))

    def _log_lost(self, exc: BaseException) -> None:
        """A connection the peer ended abnormally (e.g. a reset): a warning if
        it cut a frame short, else only info."""
        if self.decoder.in_frame:
            log.warning(
                "peer %s: connection lost inside a frame (%d bytes received): %s",
                self.peer,
                self.decoder.buffered,
                exc,
            )
        else:
            log.info("peer %s: connection lost: %s", self.peer, exc)
