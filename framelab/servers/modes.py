"""What a server answers, as one object per mode, chosen once per server.

A mode says three things: the application that answers a connection's
frames (None: raw bytes, not frames), the error reply a peer dropped for bad
framing gets, and the reply a peer refused over the connection cap gets.
Raw and framed modes say nothing on errors (a raw frame carries no error
type); msgpack mode says why in a msgpack error message. The handlers pick
the I/O style; the mode knows nothing about I/O.
"""

from __future__ import annotations

import logging
from typing import Any

from framelab.servers import msgpack_app
from framelab.servers.config import Mode, ServerConfig
from framing import (
    NULL_OBSERVER,
    BatchHandler,
    BytesLike,
    ConnectionObserver,
    FramingError,
    MessageCodec,
    MessageError,
    Payload,
    message_handler,
)

log = logging.getLogger("framelab.server")


def echo_batch(frames: list[Payload]) -> list[Payload]:
    """The framed echo's handler: every frame, as its own message, back."""
    return frames


class RefusalLog:
    """Logs one connection's refused requests with the peer: the first
    LIMIT at INFO, then one line saying the rest go unlogged, so a client
    sending junk in a loop cannot turn the server into a log writer."""

    LIMIT = 10

    def __init__(self) -> None:
        self.peer = "?"
        self.count = 0

    def refused(self, reply: dict[str, Any]) -> None:
        self.count += 1
        if self.count <= self.LIMIT:
            error = reply["error"]
            log.info("peer %s: request refused: %s: %s", self.peer, error["type"], error["message"])
        elif self.count == self.LIMIT + 1:
            log.info("peer %s: more requests refused; not logging the rest", self.peer)


class ServerMode:
    """What every mode answers; by default nothing (see the subclasses)."""

    framed = False
    #: payloads as views of the receive buffer, not copies (FrameDecoder):
    #: for an application that keeps none of them past its call
    views = False

    @classmethod
    def for_frame_limit(cls, max_frame: int) -> ServerMode:
        """The mode for a server whose frames are at most `max_frame` bytes."""
        return cls()

    def application(
        self,
        refusals: RefusalLog,
        session: msgpack_app.Session = msgpack_app.NO_SESSION,
        observer: ConnectionObserver = NULL_OBSERVER,
    ) -> BatchHandler | None:
        """The handler for one connection's frames (None: raw bytes); `session`
        is what the connection-aware ops (peer, health) read."""
        return None

    def error_reply(self, error: FramingError) -> BytesLike | None:
        """What a peer dropped for bad framing is told (None: nothing)."""
        return None

    def busy_reply(self) -> BytesLike | None:
        """What a peer refused over the connection cap is told (None: nothing)."""
        return None


class RawMode(ServerMode):
    """Bytes echoed as read (the handlers log each read's size): no frames."""


class FramedEchoMode(ServerMode):
    """Every frame back, as its own message."""

    framed = True
    views = True  # keeps no payload past its call; its replies, the views, go out in place

    def application(
        self,
        refusals: RefusalLog,
        session: msgpack_app.Session = msgpack_app.NO_SESSION,
        observer: ConnectionObserver = NULL_OBSERVER,
    ) -> BatchHandler | None:
        return echo_batch


class MsgpackMode(ServerMode):
    """Requests answered by msgpack_app; errors and refusals said in msgpack."""

    framed = True

    def __init__(self, max_frame: int) -> None:
        self.codec = MessageCodec(max_frame)
        self._busy = self.codec.encode(
            msgpack_app.error("busy", "too many connections; try again later")
        )

    @classmethod
    def for_frame_limit(cls, max_frame: int) -> ServerMode:
        return cls(max_frame)

    def application(
        self,
        refusals: RefusalLog,
        session: msgpack_app.Session = msgpack_app.NO_SESSION,
        observer: ConnectionObserver = NULL_OBSERVER,
    ) -> BatchHandler | None:
        requests = msgpack_app.Requests(session, refusals.refused)

        def on_bad_message(error: MessageError) -> dict[str, Any]:
            reply = msgpack_app.reply_to_bad_message(error)
            refusals.refused(reply)
            return reply

        return message_handler(
            self.codec,
            requests.handle,
            on_bad_message,
            observer,
            fields=requests.FIELDS,
            handle_fields=requests.handle_fields,
            reply_fields=requests.REPLY_FIELDS,
        )

    def error_reply(self, error: FramingError) -> BytesLike | None:
        return self.codec.encode(msgpack_app.reply_to_framing_error(error))

    def busy_reply(self) -> BytesLike | None:
        return self._busy


#: every --mode name and its class
MODES: dict[Mode, type[ServerMode]] = {
    "raw": RawMode,
    "framed": FramedEchoMode,
    "msgpack": MsgpackMode,
}
#: the modes that speak frames: what a framed client (send, soak) can talk to
FRAMED_MODES: tuple[Mode, ...] = tuple(name for name, kind in MODES.items() if kind.framed)


def server_mode(config: ServerConfig) -> ServerMode:
    """The mode object for `config.mode`, made once per server."""
    return MODES[config.mode].for_frame_limit(config.max_frame)
