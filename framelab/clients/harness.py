"""Client harness: plain blocking sockets with chosen options, send patterns, read logs.

The point of this module is the kernel's behaviour, so there is no event loop
here: each call is one visible syscall pattern and every send() and recv() is
recorded with its size and time (an `IoLog`). The pieces:

- `connect()`: a client socket to host:port with the lab kit's
  `SocketOptions` (TCP_NODELAY, buffers, TCP_CORK, TCP_QUICKACK, SO_LINGER);
  a loopback pair with options is the kit's `connected_pair()`.
- Send patterns: `send_burst` (N small writes), `send_large` (one large
  write), `write_write_read` (two writes, then wait for the reply: the Nagle
  and delayed-ACK stall), and `Sender` to run any of them in a thread while
  the caller reads (a large echo would otherwise fill both sides' buffers).
- Receive side: `record_reads` (each recv()'s size and time, until N bytes or
  EOF), `read_frames` (the same, through framing.FrameDecoder), and
  `ServerReads`, an observer for ServerConfig.on_read that gives the in-process
  raw echo server's own read sizes per client, and can hold the server's next
  read so that what the client sends meanwhile piles up in the kernel.

Cost: every call is bounded by its socket timeout (a stalled peer raises
TimeoutError instead of hanging); logs keep one record per syscall, and keep
the bytes only when asked to.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from framelab.lab.sockets import SocketOptions, set_quickack
from framing.decoder import DEFAULT_MAX_FRAME_LENGTH, BytesLike, FrameDecoder, Payload

DEFAULT_TIMEOUT = 5.0
#: recv() size: smaller than one large write, so a large write needs several reads
DEFAULT_READ_SIZE = 64 * 1024


def connect(
    host: str,
    port: int,
    options: SocketOptions | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> socket.socket:
    """A connected blocking socket with `options`; tries each address of `host`.

    Raises the OSError of the last address tried (ConnectionRefusedError, ...).
    """
    options = options or SocketOptions()
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            options.apply_before_connect(sock)
            sock.settimeout(timeout)
            sock.connect(address)
            options.apply_after_connect(sock)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"no address for {host!r}")


# -- logs ------------------------------------------------------------------------
@dataclass(frozen=True)
class IoRecord:
    """One send() or recv(): how many bytes, and when (seconds since the log began)."""

    size: int
    at: float


@dataclass
class IoLog:
    """Every send() or recv() of one side of a connection, in order.

    `data` keeps the bytes too when created with `keep_data=True` (to check an
    echo); `eof` says the peer closed while we were reading.
    """

    keep_data: bool = False
    records: list[IoRecord] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    eof: bool = False
    started: float = field(default_factory=time.monotonic)

    def add(self, size: int, data: BytesLike | None = None) -> None:
        self.records.append(IoRecord(size, time.monotonic() - self.started))
        if self.keep_data and data is not None:
            self.data += data

    @property
    def sizes(self) -> list[int]:
        return [r.size for r in self.records]

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def total(self) -> int:
        return sum(r.size for r in self.records)

    @property
    def elapsed(self) -> float:
        """Seconds from the start of the log to the last record."""
        return self.records[-1].at if self.records else 0.0


# -- send patterns ---------------------------------------------------------------
def make_messages(count: int, size: int) -> list[bytes]:
    """`count` distinct messages of exactly `size` bytes (each starts with its
    number where it fits), so a reordered or merged message cannot pass as intact."""
    filler = bytes(range(ord("a"), ord("z") + 1)) * (size // 26 + 1)
    messages = []
    for index in range(count):
        head = f"{index}:".encode()[:size]
        messages.append(head + filler[: size - len(head)])
    return messages


def send_burst(
    sock: socket.socket, payloads: Sequence[BytesLike], log: IoLog | None = None
) -> IoLog:
    """One sendall() per payload, back to back: N small writes."""
    log = log if log is not None else IoLog()
    for payload in payloads:
        sock.sendall(payload)
        log.add(len(payload))
    return log


def send_large(sock: socket.socket, payload: BytesLike, log: IoLog | None = None) -> IoLog:
    """One sendall() of the whole payload: one write from the application's view
    (the kernel may take it in several send() calls when its buffer fills)."""
    return send_burst(sock, [payload], log)


def write_write_read(
    sock: socket.socket,
    first: BytesLike,
    second: BytesLike,
    reply_size: int,
    *,
    quickack: bool = False,
) -> IoLog:
    """Two writes, then read a reply of `reply_size` bytes; the log's times run
    from the first write, so `.elapsed` is the round trip.

    Against a peer that answers only a whole request (the framed echo, with the
    header as `first` and the payload as `second`), Nagle holds `second` until
    `first` is ACKed, and the peer delays that ACK: about 40 ms on Linux. Set
    TCP_NODELAY, send one write, or pass quickack=True to the peer's reads.
    """
    log = IoLog(keep_data=True)
    sock.sendall(first)
    sock.sendall(second)
    record_reads(sock, reply_size, log=log, quickack=quickack)
    return log


class Sender:
    """Run a send pattern in a thread while the caller reads the replies.

    with Sender(lambda: send_large(sock, data)) as sender:
        echo = record_reads(sock, len(data))
    `done` is set when the pattern returned; an error in it is raised on exit.
    """

    def __init__(self, pattern: Callable[[], object], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.pattern = pattern
        self.timeout = timeout
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="harness-sender", daemon=True)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._thread.join(self.timeout)
        if e is None and self.error is not None:
            raise self.error
        if e is None and self._thread.is_alive():
            raise TimeoutError(f"sender still running after {self.timeout} s")

    def _main(self) -> None:
        try:
            self.pattern()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


# -- receive side ----------------------------------------------------------------
def _recv_into_log(sock: socket.socket, log: IoLog, bufsize: int, quickack: bool) -> bytes:
    if quickack:
        set_quickack(sock)
    data = sock.recv(bufsize)
    if data:
        log.add(len(data), data)
    else:
        log.eof = True
    return data


def record_reads(
    sock: socket.socket,
    expect: int | None = None,
    *,
    bufsize: int = DEFAULT_READ_SIZE,
    quickack: bool = False,
    log: IoLog | None = None,
) -> IoLog:
    """recv() until `expect` bytes arrived (None: until EOF), logging each read.

    The bytes are kept (log.data) unless a log without keep_data is passed.
    Raises TimeoutError if the socket's timeout passes between two reads.
    """
    log = log if log is not None else IoLog(keep_data=True)
    received = log.total  # counted here: log.total sums every record
    while expect is None or received < expect:
        want = bufsize if expect is None else min(bufsize, expect - received)
        data = _recv_into_log(sock, log, want, quickack)
        if not data:
            break
        received += len(data)
    return log


def read_frames(
    sock: socket.socket,
    count: int,
    *,
    max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH,
    bufsize: int = DEFAULT_READ_SIZE,
    log: IoLog | None = None,
) -> list[Payload]:
    """recv() until `count` frames are decoded, logging each read.

    At EOF returns the frames decoded so far (fewer than `count`), or raises
    TruncatedFrame if the stream stopped inside a frame.
    """
    log = log if log is not None else IoLog()
    decoder = FrameDecoder(max_frame_length)
    frames: list[Payload] = []
    while len(frames) < count:
        data = _recv_into_log(sock, log, bufsize, quickack=False)
        if not data:
            decoder.end_of_stream()
            break
        frames += decoder.feed(data)
    return frames


class ServerReads:
    """An observer for ServerConfig.on_read: the raw echo server's read sizes,
    one IoLog per client (keyed by the client's port).

    `holding()` makes the server's next read wait (on the server's own thread,
    at most `hold_limit` seconds) until the block ends: a busy server. Whatever
    the client sends meanwhile piles up in the kernel's receive queue and comes
    out of the next read as one piece: the everyday cause of sticky packets.
    """

    def __init__(self, hold_limit: float = 2.0) -> None:
        self.hold_limit = hold_limit
        self._logs: dict[int, IoLog] = {}
        self._lock = threading.Lock()
        self._armed = False
        self._released = threading.Event()
        self._released.set()

    def __call__(self, peer: str, nbytes: int) -> None:
        _, _, port_text = peer.rpartition(":")
        port = int(port_text) if port_text.isdigit() else -1
        with self._lock:
            log = self._logs.setdefault(port, IoLog())
            hold, self._armed = self._armed, False
        log.add(nbytes)
        if hold:
            self._released.wait(self.hold_limit)

    def of(self, sock: socket.socket) -> IoLog:
        """The server's reads of what `sock` sent (empty if it read nothing)."""
        port = sock.getsockname()[1]
        with self._lock:
            return self._logs.get(port, IoLog())

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold the server's next read until the block ends (or release())."""
        with self._lock:
            self._released.clear()
            self._armed = True
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        with self._lock:
            self._armed = False
            self._released.set()
