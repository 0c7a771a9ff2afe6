"""The errors the framing layer raises, each naming what was wrong.

Every error can carry the peer's address (set by the adapter that knows it),
so a log line says who sent the bad input, not only what it was.
"""

from __future__ import annotations


class FramingError(Exception):
    """Base class: the byte stream broke the framing rules.

    After a FramingError the stream is out of sync (except MessageError,
    which is about one payload): the connection should be closed.
    """

    peer: str | None = None

    def describe(self) -> str:
        return "framing error"

    def __str__(self) -> str:
        text = self.describe()
        return f"{text} (peer {self.peer})" if self.peer else text


class FrameTooLarge(FramingError):
    """A header declared more payload bytes than the configured limit.

    Raised as soon as the 4 header bytes are complete, before any payload is
    buffered, so a hostile header costs nothing.
    """

    def __init__(self, declared: int, limit: int, *, encoding: bool = False) -> None:
        super().__init__(declared, limit)
        self.declared = declared
        self.limit = limit
        self.encoding = encoding

    def describe(self) -> str:
        what = "payload to send" if self.encoding else "frame header declares"
        return f"{what} {self.declared} bytes, over the limit of {self.limit} bytes"


class TruncatedFrame(FramingError):
    """The stream ended inside a frame (inside its header or its payload)."""

    def __init__(self, buffered: int, expected: int, *, in_header: bool) -> None:
        super().__init__(buffered, expected)
        self.buffered = buffered
        self.expected = expected
        self.in_header = in_header

    def describe(self) -> str:
        part = "header" if self.in_header else "payload"
        return (
            f"stream ended inside a frame: {self.buffered} of {self.expected} {part} bytes received"
        )


class MessageError(FramingError):
    """One frame's payload is not an acceptable message; the stream stays in sync."""

    def __init__(self, reason: str, payload_length: int) -> None:
        super().__init__(reason, payload_length)
        self.reason = reason
        self.payload_length = payload_length

    def describe(self) -> str:
        return f"bad message in a {self.payload_length}-byte frame: {self.reason}"


class FrameTimeout(FramingError):
    """A frame was still incomplete `timeout` seconds after its first byte (slow loris).

    Idle time between frames is not limited; only a started frame is timed.
    """

    def __init__(self, buffered: int, timeout: float) -> None:
        super().__init__(buffered, timeout)
        self.buffered = buffered
        self.timeout = timeout

    def describe(self) -> str:
        return (
            f"frame incomplete {self.timeout:g} s after its first byte "
            f"({self.buffered} bytes received)"
        )
