"""`serve --proxy-protocol`: a PROXY header first on every connection, then the real protocol.

Behind a TCP load balancer the socket's peer is the balancer, so the
balancer writes a PROXY header (framing/proxy_protocol.py) naming the real
client before any frame. `ProxyHeaderGate` is the protocol every connection
starts with: it reads that header, and only then creates the mode's own
protocol, told who the client is (`Origin`), gives it the transport and
the bytes that followed the header. So the frame decoder never sees a header
byte, and a connection without a valid header (none, garbage, malformed,
oversized, cut short, or not complete within the frame timeout) is closed
with a logged reason naming the socket's peer, and never reaches a handler.
A v2 LOCAL header (the balancer's own health check) is accepted: the
connection's own addresses then apply.

`Origin` is also what a connection without the gate gets: the socket's peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from framelab.servers.connections import ConnectionSet
from framing import peer_name
from framing.proxy_protocol import (
    DEFAULT_MAX_V2_LENGTH,
    InetAddress,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)

log = logging.getLogger("framelab.server")

#: bytes offered to the kernel per read while the header is pending; the
#: parser takes only the header's bytes and passes the rest on
_READ_SIZE = 4096


@dataclass(frozen=True)
class Origin:
    """Who is at the other end of one connection, as logs and the `peer` op name it."""

    #: "host:port" of the client: the PROXY header's source, else the socket's peer
    client: str
    host: str | None
    port: int | None
    #: the socket's peer when a PROXY header named someone else (the balancer)
    proxy: str | None
    #: our own address on this connection
    server: str

    def as_result(self) -> dict[str, Any]:
        """The `peer` op's reply."""
        return {
            "address": self.client,
            "host": self.host,
            "port": self.port,
            "via": "proxy-protocol" if self.proxy is not None else "socket",
            "proxy": self.proxy,
            "server": self.server,
        }


def _name(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(InetAddress(str(address[0]), int(address[1])))
    return str(address)


def origin_of(transport: asyncio.BaseTransport, header: ProxyHeader | None = None) -> Origin:
    """The connection's origin: the header's client if it names one, else the socket's peer."""
    server = _name(transport.get_extra_info("sockname"))
    client = header.client if header is not None else None
    if client is None:
        peer = transport.get_extra_info("peername")
        host, port = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else (None, None)
        return Origin(peer_name(transport), host, port, None, server)
    if isinstance(client, InetAddress):
        return Origin(str(client), client.host, client.port, peer_name(transport), server)
    return Origin(str(client), None, None, peer_name(transport), server)


#: makes the mode's own protocol once the origin is known (None: the socket's peer)
InnerFactory = Callable[[Origin | None], asyncio.BaseProtocol]


class ProxyHeaderGate(asyncio.BufferedProtocol):
    """Reads the PROXY header, then hands the connection to the real protocol.

    While waiting it counts as a connection (the cap and graceful shutdown
    apply to it: a stop closes it, since it has nothing to answer yet).
    """

    def __init__(
        self,
        inner: InnerFactory,
        connections: ConnectionSet,
        *,
        timeout: float | None,
        max_v2_length: int = DEFAULT_MAX_V2_LENGTH,
    ) -> None:
        self._inner = inner
        self.connections = connections
        self.timeout = timeout
        self.parser = ProxyHeaderParser(max_v2_length)
        self.peer = "?"
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray(_READ_SIZE)
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.peer = peer_name(transport)
        if not self.connections.admit(self):
            transport.close()
            return
        if self.timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._timed_out)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            header = self.parser.feed(memoryview(self._buffer)[:nbytes])
        except ProxyHeaderError as error:
            self._refuse(error)
            return
        if header is not None:
            self._hand_over(header)

    def eof_received(self) -> bool:
        try:
            self.parser.end_of_stream()
        except ProxyHeaderError as error:
            self._refuse(error)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()

    def begin_shutdown(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals -------------------------------------------------------
    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.connections.live.discard(self)  # now, so the real protocol's admission counts right
        if not self.closed.done():
            self.closed.set_result(None)

    def _timed_out(self) -> None:
        self._timer = None
        assert self.timeout is not None
        self._refuse(
            ProxyHeaderError(
                "truncated",
                f"no complete header {self.timeout:g} s after the connection opened",
                self.parser.received,
            )
        )

    def _refuse(self, error: ProxyHeaderError) -> None:
        error.peer = self.peer
        log.warning("%s; closing the connection", error)
        if self.transport is not None:
            self.transport.close()

    def _hand_over(self, header: ProxyHeader) -> None:
        transport = self.transport
        assert transport is not None
        tail = self.parser.tail
        self._release()
        inner = self._inner(origin_of(transport, header))
        transport.set_protocol(inner)
        inner.connection_made(transport)
        if tail and not transport.is_closing():
            deliver(inner, tail)


def deliver(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give `data` to a protocol as the event loop would have."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    else:
        cast(asyncio.Protocol, protocol).data_received(data)
