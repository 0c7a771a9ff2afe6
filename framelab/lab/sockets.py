"""Sockets for the lab: listeners, connected pairs, options, and what a recv or send says.

Every experiment and client needs the same few moves: a listener on an
ephemeral port (in our namespace or one of lab/netns.py's hosts), a
connection to it with its accepted end, chosen options set at the right
moment (buffers before the handshake), a close that resets, a recv that
says *how* it ended. They are written here once and know nothing about any
claim.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

from framelab.lab.kernel import errno_name
from framelab.lab.netns import socket_in

LOOPBACK = "127.0.0.1"
Address = tuple[str, int]
#: seconds a connect() or accept() of the lab may take before it is a failure
CONNECT_TIMEOUT = 2.0


def address_of(sock: socket.socket) -> Address:
    """getsockname() as a (host, port) pair (IPv4 or IPv6 alike)."""
    name = sock.getsockname()
    return str(name[0]), int(name[1])


def close_all(socks: Iterable[socket.socket]) -> None:
    for sock in socks:
        sock.close()


# --- socket options -----------------------------------------------------------------


def set_linger(sock: socket.socket, enabled: bool, seconds: int = 0) -> None:
    """SO_LINGER: struct linger {int l_onoff; int l_linger;}."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", int(enabled), seconds))


def close_with_reset(sock: socket.socket) -> None:
    """Close so that the kernel sends RST, not FIN (SO_LINGER on, timeout 0)."""
    set_linger(sock, True, 0)
    sock.close()


def set_cork(sock: socket.socket, on: bool) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, int(on))


def set_quickack(sock: socket.socket) -> None:
    """ACK at once from now on, until the kernel falls back to delayed ACKs."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


@contextlib.contextmanager
def corked(sock: socket.socket) -> Iterator[None]:
    """Writes inside the block leave as full segments; the rest when it ends."""
    set_cork(sock, True)
    try:
        yield
    finally:
        set_cork(sock, False)


def nodelay(sock: socket.socket | None) -> bool | None:
    """TCP_NODELAY as the kernel has it for this socket (None: no socket)."""
    if sock is None:
        return None
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


@dataclass(frozen=True)
class SocketOptions:
    """Options set on one end of a connection; None leaves the kernel's default.

    `nodelay=False` turns Nagle on explicitly (the kernel default for plain
    sockets; asyncio turns it off). `cork=True` starts the socket corked: data
    waits for full segments until `corked()` ends or TCP_CORK is cleared (the
    kernel sends a partial segment after 200 ms anyway). `quickack=True` is set
    once after connect; the kernel clears it again. `linger=0` makes close()
    send RST. `reuse_address` lets a client bind a port TIME_WAIT holds.
    `maxseg` (TCP_MAXSEG) and the buffers count only when set before
    the handshake; on a listener they are inherited by the sockets it accepts.
    """

    nodelay: bool | None = None
    sndbuf: int | None = None
    rcvbuf: int | None = None
    cork: bool = False
    quickack: bool = False
    linger: int | None = None  # seconds
    maxseg: int | None = None
    user_timeout_ms: int | None = None
    reuse_address: bool = False

    def apply_before_connect(self, sock: socket.socket) -> None:
        if self.reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        if self.rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        if self.maxseg is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, self.maxseg)
        if self.user_timeout_ms is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self.user_timeout_ms)
        if self.nodelay is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(self.nodelay))
        if self.cork:
            set_cork(sock, True)
        if self.linger is not None:
            set_linger(sock, True, self.linger)

    def apply_after_connect(self, sock: socket.socket) -> None:
        if self.quickack:
            set_quickack(sock)

    def apply(self, sock: socket.socket) -> None:
        """All of them, for a socket that is already connected (or accepted)."""
        self.apply_before_connect(sock)
        self.apply_after_connect(sock)


NO_OPTIONS = SocketOptions()


# --- listeners and connections --------------------------------------------------------


def listening_socket(
    host: str = LOOPBACK,
    backlog: int = 16,
    *,
    netns: str | None = None,
    port: int = 0,
    options: SocketOptions = NO_OPTIONS,
    reuse_address: bool = True,
) -> socket.socket:
    """A listener of namespace `netns` (ours when None), on an ephemeral port unless `port`.

    `options` are set before listen(), so the sockets it accepts inherit them.
    SO_REUSEADDR (`reuse_address`, inherited by accepted sockets and so by
    their TIME_WAIT rows) lets the kernel hand out a port that earlier
    connections' TIME_WAIT rows still hold: read /proc/net/tcp by 4-tuple.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket_in(netns, family)
    try:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        options.apply_before_connect(sock)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def client_socket(
    netns: str | None = None, *, family: int = socket.AF_INET, blocking: bool = True
) -> socket.socket:
    """A TCP socket of namespace `netns` (ours when None), not yet connected."""
    sock = socket_in(netns, family)
    sock.setblocking(blocking)
    return sock


def start_connect(netns: str | None, address: Address) -> socket.socket:
    """A non-blocking connect(): the handshake goes on without us (EINPROGRESS)."""
    sock = client_socket(netns, blocking=False)
    sock.connect_ex(address)
    return sock


@dataclass
class Pair:
    """Both ends of one connection, plus the listener that made it.

    Iterates as (client, server, listener). The addresses are read once at
    creation, so they still name the 4-tuple after the sockets are closed.
    `close()` (or the end of a `with`) closes both ends, and the listener too
    when the pair owns it.
    """

    client: socket.socket
    server: socket.socket
    listener: socket.socket
    owns_listener: bool = True
    client_address: Address = field(init=False)
    server_address: Address = field(init=False)

    def __post_init__(self) -> None:
        self.client_address = address_of(self.client)
        self.server_address = address_of(self.server)

    @property
    def client_port(self) -> int:
        return self.client_address[1]

    @property
    def server_port(self) -> int:
        return self.server_address[1]

    def __iter__(self) -> Iterator[socket.socket]:
        return iter((self.client, self.server, self.listener))

    def close(self) -> None:
        self.client.close()
        self.server.close()
        if self.owns_listener:
            self.listener.close()

    def __enter__(self) -> Pair:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect_to(
    listener: socket.socket,
    *,
    netns: str | None = None,
    client: SocketOptions = NO_OPTIONS,
    server: SocketOptions = NO_OPTIONS,
    bind: Address | None = None,
    timeout: float = CONNECT_TIMEOUT,
    io_timeout: float | None = None,
) -> Pair:
    """A new connection to a listener the caller keeps (and closes) itself.

    The client is made in `netns` (ours when None) with `client` options set
    before connect (and `bind` address, if given); the accepted end gets
    `server` options. connect() and accept() fail after `timeout`; afterwards
    both ends have `io_timeout` (None: blocking).
    """
    family = socket.AF_INET6 if ":" in address_of(listener)[0] else socket.AF_INET
    near = client_socket(netns, family=family)
    try:
        client.apply_before_connect(near)
        if bind is not None:
            near.bind(bind)
        near.settimeout(timeout)
        near.connect(address_of(listener))
        client.apply_after_connect(near)
        listener.settimeout(timeout)
        far, _ = listener.accept()
    except BaseException:
        near.close()
        raise
    if server != NO_OPTIONS:
        server.apply(far)
    near.settimeout(io_timeout)
    far.settimeout(io_timeout)
    return Pair(near, far, listener, owns_listener=False)


def connected_pair(
    host: str = LOOPBACK,
    *,
    client: SocketOptions = NO_OPTIONS,
    server: SocketOptions = NO_OPTIONS,
    timeout: float = CONNECT_TIMEOUT,
    io_timeout: float | None = None,
) -> Pair:
    """A fresh connection on `host` with its own listener (closed with the pair).

    `server` options are set on the listener (buffers count from the
    handshake) and again on the accepted socket. To run several connections
    under one capture, make one `listening_socket()` and `connect_to()` it.
    """
    listener = listening_socket(host, 1, options=server)
    try:
        pair = connect_to(
            listener, client=client, server=server, timeout=timeout, io_timeout=io_timeout
        )
    except BaseException:
        listener.close()
        raise
    pair.owns_listener = True
    return pair


def unused_port(kind: int = socket.SOCK_STREAM, host: str = LOOPBACK) -> int:
    """A port nothing is bound to right now (the kernel's pick, released at once)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return address_of(probe)[1]


def reserved_port(host: str = LOOPBACK) -> socket.socket:
    """A TCP socket bound to an ephemeral port but not listening.

    While it is open no other socket takes the port, yet the kernel treats the
    port as having no listener: connections to it are refused.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


# --- what a recv or a send says -----------------------------------------------------


class EarlyClose(ConnectionError):
    """The peer closed before the bytes a reader waits for had all arrived."""

    def __init__(self, wanted: int, got: int, peer: Address | None) -> None:
        self.wanted, self.got = wanted, got
        where = f" from {peer[0]}:{peer[1]}" if peer else ""
        super().__init__(f"connection closed{where} after {got} of {wanted} bytes")


def recv_exactly(sock: socket.socket, count: int, size: int = 65536) -> list[bytes]:
    """recv() until exactly `count` bytes came, at most `size` a call: each read's bytes.

    Raises EarlyClose when the peer closes first (recv() returning b"" would
    otherwise make the loop spin forever), TimeoutError when the socket's own
    timeout runs out between two reads. Never reads past `count`.
    """
    chunks: list[bytes] = []
    got = 0
    while got < count:
        data = sock.recv(min(size, count - got))
        if not data:
            try:
                peer: Address | None = address_of_peer(sock)
            except OSError:
                peer = None
            raise EarlyClose(count, got, peer)
        chunks.append(data)
        got += len(data)
    return chunks


def address_of_peer(sock: socket.socket) -> Address:
    """getpeername() as a (host, port) pair."""
    name = sock.getpeername()
    return str(name[0]), int(name[1])


def readable(sock: socket.socket, timeout: float) -> bool:
    """Does select() report `sock` readable within `timeout` seconds?"""
    ready, _, _ = select.select([sock], [], [], timeout)
    return bool(ready)


def recv_outcome(sock: socket.socket, timeout: float = 1.0, size: int = 65536) -> str:
    """How one recv ends: "data", "EOF" (FIN), "timeout", or the errno name.

    The socket's own timeout is restored afterwards.
    """
    outcome, _ = _recv_once(sock, timeout, size)
    return outcome


def drain(sock: socket.socket, timeout: float = 1.0) -> tuple[int, str]:
    """Read until something other than data happens: (bytes read, final outcome).

    `timeout` bounds each wait for more, not the whole drain.
    """
    total = 0
    while True:
        outcome, count = _recv_once(sock, timeout, 1 << 20)
        if outcome != "data":
            return total, outcome
        total += count


def _recv_once(sock: socket.socket, timeout: float, size: int) -> tuple[str, int]:
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        data = sock.recv(size)
    except TimeoutError:
        return "timeout", 0
    except OSError as exc:
        return errno_name(exc) or type(exc).__name__, 0
    finally:
        if sock.fileno() != -1:
            sock.settimeout(previous)
    return ("data" if data else "EOF"), len(data)


def send_error(sock: socket.socket, data: bytes = b"x") -> str | None:
    """The errno name a send() fails with, or None when it succeeds."""
    try:
        sock.send(data)
    except OSError as exc:
        return errno_name(exc) or type(exc).__name__
    return None


def fill_send_queue(sock: socket.socket, chunk: int = 65536) -> int:
    """Send without blocking until the kernel refuses more; bytes accepted.

    With a peer that does not read, this fills the peer's receive window and
    then our own send buffer: what is left in the queue cannot be sent.
    """
    previous = sock.gettimeout()
    sock.setblocking(False)
    payload = b"q" * chunk
    total = 0
    try:
        while True:
            try:
                total += sock.send(payload)
            except BlockingIOError:
                return total
    finally:
        sock.settimeout(previous)
