"""What a connection reports as it runs, for metrics: the observer interface.

The adapters and the connection policy call one `ConnectionObserver` per
connection at a handful of moments (opened, frames in, frames out, an error
by kind, writes paused, a receive buffer left to payload views, closed).
The library itself counts nothing: a metrics exporter implements the
methods it cares about (subclass `NullObserver` for the rest) and passes
the observer in.

Cost: one method call per batch of frames, not per frame: the batch is the
list the decoder already built, handed over as it is, so the no-op default
(`NULL_OBSERVER`) adds one call per read and allocates nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from framing.decoder import BytesLike
from framing.errors import FrameTimeout, FrameTooLarge, FramingError, MessageError, TruncatedFrame

#: why a connection (or, for bad_message, one request) failed
ErrorKind = Literal["oversize", "truncated", "timeout", "bad_message", "handler"]
ERROR_KINDS: tuple[ErrorKind, ...] = ("oversize", "truncated", "timeout", "bad_message", "handler")


def error_kind(error: BaseException) -> ErrorKind:
    """The metrics label of an error; anything not framing's own is the handler's."""
    if isinstance(error, FrameTooLarge):
        return "oversize"
    if isinstance(error, TruncatedFrame):
        return "truncated"
    if isinstance(error, FrameTimeout):
        return "timeout"
    if isinstance(error, MessageError):
        return "bad_message"
    if isinstance(error, FramingError):
        return "truncated"  # a framing error of an unknown subclass: the stream is out of sync
    return "handler"


class ConnectionObserver(Protocol):
    """Receives a connection's events; every method must be cheap and must not raise."""

    def connection_opened(self, peer: str) -> None: ...

    def connection_closed(self, peer: str, error: BaseException | None) -> None:
        """`error`: why the connection ended abnormally, None for a clean close."""

    def frames_in(self, frames: Sequence[BytesLike]) -> None:
        """A batch of complete payloads received (count: len, bytes: sum of lens)."""

    def frames_out(self, frames: Sequence[BytesLike]) -> None:
        """A batch of payloads handed to the transport to send."""

    def error(self, kind: ErrorKind, error: BaseException) -> None:
        """A connection failed (or one message was refused: bad_message)."""

    def writes_paused(self) -> None:
        """The write buffer passed its high-water mark: reading stops."""

    def buffer_left_to_views(self, size: int) -> None:
        """A receive buffer of `size` bytes was left to payload views the
        handler still holds, and a fresh one allocated (views=True only)."""


class NullObserver:
    """The default: observes nothing. Subclass it to implement only some methods."""

    def connection_opened(self, peer: str) -> None:
        pass

    def connection_closed(self, peer: str, error: BaseException | None) -> None:
        pass

    def frames_in(self, frames: Sequence[BytesLike]) -> None:
        pass

    def frames_out(self, frames: Sequence[BytesLike]) -> None:
        pass

    def error(self, kind: ErrorKind, error: BaseException) -> None:
        pass

    def writes_paused(self) -> None:
        pass

    def buffer_left_to_views(self, size: int) -> None:
        pass


NULL_OBSERVER: ConnectionObserver = NullObserver()
