"""`framelab send`: send messages to a running framed or msgpack server, print the replies.

    framelab send --port 7000 hello world            # two frames, two replies
    framelab send --port 7000 @request.bin           # a file's bytes as one frame
    framelab send --port 7000 --hex 00ff 'de ad'     # payloads given in hex, replies in hex
    framelab send --port 7001 --mode msgpack --op sum --args '[1, 2, 3]'
    framelab send --port 7001 --mode msgpack '{"op": "echo", "args": "hi"}'

All messages go out in one write (encode_frames), then the replies are read
back on a plain blocking socket through framing.FrameDecoder. Failures name
the errno and say what was going on (connecting, sending, waiting for reply
k of n). Exit status: 0 when every reply arrived (and, in msgpack mode, every
reply is ok), 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from framelab.clients.harness import connect, read_frames
from framelab.common.argtypes import address, host, port, positive_duration, positive_size
from framelab.common.oserrors import describe_os_error
from framelab.common.words import plural
from framelab.lab.sockets import SocketOptions
from framelab.servers.modes import FRAMED_MODES
from framing.decoder import DEFAULT_MAX_FRAME_LENGTH, BytesLike, Payload
from framing.encoder import encode_frames
from framing.errors import FramingError
from framing.messages import MessageCodec


class UsageError(Exception):
    """Arguments that cannot be turned into messages (exit status 2)."""


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("messages", nargs="*", metavar="MESSAGE", help="text, @FILE, hex with --hex; JSON in msgpack")
    a("--port", type=port, required=True, metavar="PORT", help="the server's port")
    a("--host", type=host, default="127.0.0.1", metavar="HOST", help="the server's address")
    a("--mode", choices=FRAMED_MODES, default="framed", help="what the server speaks")
    a("--hex", action="store_true", help="framed: MESSAGEs are hex, replies printed in hex")
    a("--op", help="msgpack: send one request with this op")
    a("--args", metavar="JSON", help="msgpack: the request's args, as JSON (with --op)")
    a(
        "--timeout",
        type=positive_duration,
        default=5.0,
        metavar="SECONDS",
        help="for connect and each reply",
    )
    a(
        "--max-frame",
        type=positive_size,
        default=DEFAULT_MAX_FRAME_LENGTH,
        metavar="BYTES",
        help="largest payload sent or accepted",
    )


# -- building the payloads -------------------------------------------------------
def framed_payloads(messages: list[str], hex_input: bool) -> list[bytes]:
    """Each MESSAGE as bytes: @FILE reads the file, --hex decodes, else UTF-8."""
    payloads = []
    for text in messages:
        if text.startswith("@"):
            try:
                payloads.append(Path(text[1:]).read_bytes())
            except OSError as exc:
                raise UsageError(f"cannot read {text[1:]!r}: {exc.strerror}") from exc
        elif hex_input:
            try:
                payloads.append(bytes.fromhex(text))
            except ValueError as exc:
                raise UsageError(f"not hex: {text!r}") from exc
        else:
            payloads.append(text.encode())
    return payloads


def msgpack_requests(args: argparse.Namespace) -> list[Any]:
    """--op/--args give one request; else each MESSAGE is a JSON request object.
    A request without an "id" gets its position, so replies can be matched."""
    if args.op is not None:
        if args.messages:
            raise UsageError("give either --op (with --args) or MESSAGEs, not both")
        return [{"op": args.op, "id": 0, "args": _json(args.args) if args.args else None}]
    if args.args is not None:
        raise UsageError("--args needs --op")
    requests = []
    for index, text in enumerate(args.messages):
        request = _json(text)
        if not isinstance(request, dict):
            raise UsageError(f'a request is a JSON object like {{"op": "echo"}}, not {text!r}')
        requests.append({"id": index, **request})
    return requests


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"not JSON: {text!r} ({exc.msg})") from exc


# -- printing the replies --------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """msgpack bin values have no JSON form: shown as hex strings."""
    if isinstance(value, bytes | bytearray):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def is_msgpack_reply(reply: Payload, sent: bytes, codec: MessageCodec) -> bool:
    """A reply that is not the echo of what was sent but a msgpack reply map
    (`{"ok": ...}`): the server speaks msgpack, not plain frames."""
    if bytes(reply) == sent:
        return False
    try:
        message = codec.decode(reply)
    except FramingError:
        return False
    return isinstance(message, dict) and isinstance(message.get("ok"), bool)


def print_framed(
    replies: list[Payload], sent: list[bytes], hex_output: bool, codec: MessageCodec
) -> bool:
    """One line per reply: UTF-8 text (undecodable bytes escaped), or hex.
    False, and nothing printed, if the replies are a msgpack server's."""
    if any(is_msgpack_reply(r, s, codec) for r, s in zip(replies, sent, strict=False)):
        print("framelab send: the reply is msgpack: use --mode msgpack", file=sys.stderr)
        return False
    for reply in replies:
        print(reply.hex() if hex_output else bytes(reply).decode(errors="backslashreplace"))
    return True


def print_msgpack(replies: list[Payload], codec: MessageCodec) -> bool:
    """One JSON line per reply; False if any reply is an error or no message."""
    all_ok = True
    for payload in replies:
        try:
            reply = codec.decode(payload)
        except FramingError as error:
            print(f"framelab send: undecodable reply: {error}", file=sys.stderr)
            all_ok = False
            continue
        print(json.dumps(reply, default=_jsonable))
        all_ok = all_ok and isinstance(reply, dict) and reply.get("ok") is True
    return all_ok


# -- the exchange ----------------------------------------------------------------
class SendError(Exception):
    """The exchange failed; the message says what was going on and the errno."""


class PartialReplies(SendError):
    """The server closed early; the replies that did arrive are still printed."""

    def __init__(self, replies: list[Payload], message: str) -> None:
        super().__init__(message)
        self.replies = replies


def describe_failure(exc: OSError, doing: str, timeout: float) -> str:
    """'connecting to HOST:PORT: connection refused (ECONNREFUSED); ...' and so on."""
    if isinstance(exc, TimeoutError) and exc.errno is None:  # the socket's own timeout
        return f"{doing}: timed out after {timeout:g} s (client-side timeout; see --timeout)"
    return f"{doing}: {describe_os_error(exc)}"


def exchange(
    host: str, port: int, wire: BytesLike, count: int, timeout: float, max_frame: int
) -> list[Payload]:
    """Send the encoded frames in one write; return the `count` replies.

    Raises SendError naming the step and the errno; PartialReplies (with the
    replies that arrived) when the server closed before answering everything.
    """
    where = address(host, port)
    doing = f"connecting to {where}"
    try:
        with connect(host, port, SocketOptions(nodelay=True), timeout) as sock:
            doing = f"sending to {where}"
            sock.sendall(wire)
            doing = f"waiting for {plural(count, 'reply', 'replies')} from {where}"
            replies = read_frames(sock, count, max_frame_length=max_frame)
    except OSError as exc:
        raise SendError(describe_failure(exc, doing, timeout)) from exc
    except FramingError as exc:
        raise SendError(f"{doing}: {exc}") from exc
    if len(replies) < count:
        message = (
            f"{where} closed the connection after {len(replies)} of "
            f"{plural(count, 'reply', 'replies')}"
        )
        raise PartialReplies(replies, message)
    return replies


def run(args: argparse.Namespace) -> int:
    codec = MessageCodec(args.max_frame)
    try:
        if args.mode == "msgpack":
            payloads = [codec.encode(request) for request in msgpack_requests(args)]
        else:
            if args.op is not None or args.args is not None:
                raise UsageError("--op and --args are for --mode msgpack")
            payloads = framed_payloads(args.messages, args.hex)
        if not payloads:
            raise UsageError("nothing to send: give MESSAGEs (or --op in msgpack mode)")
        wire = encode_frames(payloads, args.max_frame)
    except (UsageError, FramingError) as exc:
        print(f"framelab send: {exc}", file=sys.stderr)
        return 2

    error: SendError | None = None
    try:
        replies = exchange(args.host, args.port, wire, len(payloads), args.timeout, args.max_frame)
    except PartialReplies as exc:
        replies, error = exc.replies, exc
    except SendError as exc:
        replies, error = [], exc
    if args.mode == "msgpack":
        ok = print_msgpack(replies, codec)
    else:
        ok = print_framed(replies, payloads, args.hex, codec)
    if error is not None:
        print(f"framelab send: {error}", file=sys.stderr)
        return 1
    return 0 if ok else 1
