"""The msgpack server's application: requests in, replies out. No I/O.

Request:  {"op": str, "id": any (echoed back), "args": any}
Reply:    {"id": ..., "ok": true, "result": ...}
Error:    {"id": ... or None, "ok": false, "error": {"type": str, "message": str}}
Error types: "bad_message" (not a msgpack object of the request shape, or a
reply that cannot be sent; the connection stays usable), "unknown_op",
"bad_args", then "frame_too_large", "timeout" and "truncated" (sent just
before the server closes the connection), "busy" (over the connection cap).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
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
    if not isinstance(args, bytes):
        raise BadArgs("sha256 takes bytes or a string")
    return hashlib.sha256(args).hexdigest()


def _reverse(args: Any) -> Any:
    if not isinstance(args, str | bytes | list):
        raise BadArgs("reverse takes a string, bytes or a list")
    return args[::-1]


OPS: dict[str, Callable[[Any], Any]] = {
    "echo": _echo,
    "sum": _sum,
    "sha256": _sha256,
    "reverse": _reverse,
}


def error(kind: str, message: str, request_id: Any = None) -> dict[str, Any]:
    encoded = message.encode()
    if len(encoded) > MAX_ERROR_MESSAGE:
        message = encoded[: MAX_ERROR_MESSAGE - 3].decode(errors="ignore") + "..."
    return {"id": request_id, "ok": False, "error": {"type": kind, "message": message}}


def handle_request(request: Any) -> dict[str, Any]:
    """One request object -> one reply object (never raises)."""
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        return error("bad_message", 'a request is a map with a string "op"')
    request_id = request.get("id")
    op = OPS.get(request["op"])
    if op is None:
        known = ", ".join(sorted(OPS))
        return error("unknown_op", f"unknown op {request['op']!r} (known: {known})", request_id)
    try:
        return {"id": request_id, "ok": True, "result": op(request.get("args"))}
    except BadArgs as exc:
        return error("bad_args", str(exc), request_id)


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
