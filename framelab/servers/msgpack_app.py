"""The msgpack server's application: requests in, replies out. No I/O.

Request:  {"op": str, "id": any (echoed back), "args": any}
Reply:    {"id": ..., "ok": true, "result": ...}
Error:    {"id": ... or None, "ok": false, "error": {"type": str, "message": str}}
Error types: "bad_message" (not a msgpack object of the request shape, or a
reply that cannot be sent; the connection stays usable), "unknown_op",
"bad_args", "draining" (`health` on a server about to stop), then
"frame_too_large", "timeout" and "truncated" (sent just before the server
closes the connection), "busy" (over the connection cap).
Ops about the connection (SESSION_OPS): `peer` (the client's address as the
server sees it: the PROXY header's source behind a balancer) and `health`
(the balancer's check).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from framing.errors import FrameTimeout, FrameTooLarge, FramingError, MessageError

#: error messages are cut to this many UTF-8 bytes (they may quote the request),
#: so that an error reply without an id always fits in MIN_FRAME bytes
MAX_ERROR_MESSAGE = 300
#: the smallest frame limit msgpack mode accepts: room for any such error reply
MIN_FRAME = 512
#: msgpack integers are 64-bit: a result outside this range cannot be sent
_INT_RANGE = range(-(2**63), 2**64)


class BadArgs(Exception):
    pass


class Unavailable(Exception):
    """The server is up but should not be sent new work (error type: its state)."""

    def __init__(self, state: str) -> None:
        super().__init__(f"server is {state}: send new connections elsewhere")
        self.state = state


@dataclass
class Session:
    """What the connection-aware ops read: who is asking, and the server's state.

    One per connection; the connection fills `peer` in once it knows it.
    `peer` is the `peer` op's reply (client address as the server sees it);
    `state` says "serving", or why not ("draining", "stopping").
    """

    peer: dict[str, Any] = field(default_factory=dict)
    state: Callable[[], str] = lambda: "serving"


def _peer(args: Any, session: Session) -> Any:
    return session.peer


def _health(args: Any, session: Session) -> Any:
    """The load balancer's check: fails while the server drains, so new
    connections go elsewhere before it stops accepting."""
    state = session.state()
    if state != "serving":
        raise Unavailable(state)
    return state


def _echo(args: Any) -> Any:
    return args


def _sum(args: Any) -> Any:
    if not isinstance(args, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in args
    ):
        raise BadArgs("sum takes a list of numbers")
    total = sum(args)
    if isinstance(total, int) and total not in _INT_RANGE:
        raise BadArgs("sum out of the 64-bit integer range")
    return total


def _sha256(args: Any) -> Any:
    if isinstance(args, str):
        args = args.encode()
    if not isinstance(args, bytes | memoryview):  # large bins arrive as views (no copy)
        raise BadArgs("sha256 takes bytes or a string")
    return hashlib.sha256(args).hexdigest()


def _reverse(args: Any) -> Any:
    if isinstance(args, memoryview):  # a large bin, lent without a copy
        return bytes(args)[::-1]
    if not isinstance(args, str | bytes | list):
        raise BadArgs("reverse takes a string, bytes or a list")
    return args[::-1]


OPS: dict[str, Callable[[Any], Any]] = {
    "echo": _echo,
    "sum": _sum,
    "sha256": _sha256,
    "reverse": _reverse,
}
#: ops about the connection or the server rather than their arguments
SESSION_OPS: dict[str, Callable[[Any, Session], Any]] = {"peer": _peer, "health": _health}
#: a session for callers that have none (every SESSION_OPS reply then says so)
NO_SESSION = Session()


def error(kind: str, message: str, request_id: Any = None) -> dict[str, Any]:
    encoded = message.encode()
    if len(encoded) > MAX_ERROR_MESSAGE:
        message = encoded[: MAX_ERROR_MESSAGE - 3].decode(errors="ignore") + "..."
    return {"id": request_id, "ok": False, "error": {"type": kind, "message": message}}


def _no_one_told(reply: dict[str, Any]) -> None:
    pass


class Requests:
    """One connection's request handler: `handle` is what the server calls
    per request (a bound method: no Python frame but its own)."""

    __slots__ = ("refused", "session")

    def __init__(
        self,
        session: Session = NO_SESSION,
        refused: Callable[[dict[str, Any]], None] = _no_one_told,
    ) -> None:
        self.session = session
        #: told every error reply (the server logs them); a success costs no call
        self.refused = refused

    #: the request's keys, in the order handle_fields takes their values
    FIELDS = ("op", "id", "args")
    #: a success reply's keys, in the order of the tuple handle_fields returns
    REPLY_FIELDS = ("id", "ok", "result")

    def handle(self, request: Any) -> dict[str, Any]:
        """One request object -> one reply object (never raises)."""
        if not isinstance(request, dict):
            return self._refuse(error("bad_message", 'a request is a map with a string "op"'))
        reply = self.handle_fields(request.get("op"), request.get("id"), request.get("args"))
        if type(reply) is not tuple:
            return reply  # type: ignore[no-any-return]
        request_id, ok, result = reply  # REPLY_FIELDS' values
        return {"id": request_id, "ok": ok, "result": result}

    def handle_fields(self, name: Any, request_id: Any, args: Any) -> Any:
        """handle() of the map {"op": name, "id": request_id, "args": args}
        (None for an absent key), without the map: the server's fast path.
        A success is the tuple of REPLY_FIELDS' values (framing packs it as
        that map without building it); an error reply is its map."""
        try:
            is_name = type(name) is str or isinstance(name, str)
            if is_name and (op := OPS.get(name)) is not None:
                return (request_id, True, op(args))
            if not is_name:
                return self._refuse(error("bad_message", 'a request is a map with a string "op"'))
            if (session_op := SESSION_OPS.get(name)) is not None:
                return (request_id, True, session_op(args, self.session))
            known = ", ".join(sorted([*OPS, *SESSION_OPS]))
            reply = error("unknown_op", f"unknown op {name!r} (known: {known})", request_id)
        except BadArgs as exc:
            reply = error("bad_args", str(exc), request_id)
        except Unavailable as exc:
            reply = error(exc.state, str(exc), request_id)
        return self._refuse(reply)

    def _refuse(self, reply: dict[str, Any]) -> dict[str, Any]:
        self.refused(reply)
        return reply


def handle_request(request: Any, session: Session = NO_SESSION) -> dict[str, Any]:
    """One request object -> one reply object (never raises)."""
    return Requests(session).handle(request)


def reply_to_bad_message(exc: MessageError) -> dict[str, Any]:
    return error("bad_message", str(exc))


def reply_to_framing_error(exc: FramingError) -> dict[str, Any]:
    """The last message a dropped client gets, saying why."""
    if isinstance(exc, FrameTooLarge):
        kind = "frame_too_large"
    elif isinstance(exc, FrameTimeout):
        kind = "timeout"
    else:
        kind = "truncated"
    return error(kind, f"{exc}; closing the connection")
