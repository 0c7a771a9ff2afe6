"""The live connections of one server: admission, shutdown, counting.

Every connection, whatever its mode or I/O style, is a `Connection`: it can
be asked to finish gracefully (answer what it has received, then FIN) or be
aborted, and it resolves `closed` when gone. The runner needs nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Protocol

from framelab.servers.config import ServerConfig
from framing import set_nodelay

log = logging.getLogger("framelab.server")


class Connection(Protocol):
    peer: str
    closed: asyncio.Future[None]

    def begin_shutdown(self) -> None: ...
    def abort(self) -> None: ...


class ConnectionSet:
    """Admits connections up to the cap and tracks them until closed."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.live: set[Connection] = set()
        self.refused = 0
        self.stopping = False
        self.draining = False  # set when a stop begins: health checks report it

    def state(self) -> str:
        """What the `health` op reports: "serving", "draining" or "stopping"."""
        if self.stopping:
            return "stopping"
        return "draining" if self.draining else "serving"

    def admit(self, conn: Connection) -> bool:
        """Over the cap (or while stopping): False, and the caller closes at once."""
        if self.stopping or len(self.live) >= self.max_connections:
            self.refused += 1
            log.warning(
                "refusing %s: %d connections open (limit %d)%s",
                conn.peer,
                len(self.live),
                self.max_connections,
                ", shutting down" if self.stopping else "",
            )
            return False
        self.live.add(conn)
        conn.closed.add_done_callback(lambda _: self.live.discard(conn))
        return True

    def taken_from_queue(self, count: int) -> None:
        """At a stop: `count` connections were accepted from the kernel's
        queue after the listener stopped (a hook for metrics)."""

    async def shutdown(self, timeout: float) -> int:
        """Ask every connection to finish; abort those still open at the deadline.

        Returns how many had to be aborted.
        """
        self.stopping = True
        conns = list(self.live)
        for conn in conns:
            conn.begin_shutdown()
        pending = [c.closed for c in conns if not c.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        late = [c for c in conns if not c.closed.done()]
        for conn in late:
            log.warning("aborting %s: still open at the shutdown deadline", conn.peer)
            conn.abort()
        if late:
            await asyncio.wait([c.closed for c in late], timeout=1.0)
        return len(late)


def apply_socket_options(transport: asyncio.BaseTransport, config: ServerConfig) -> None:
    """Per-connection options from the config (TCP_NODELAY, SO_LINGER)."""
    set_nodelay(transport, config.nodelay)
    sock: socket.socket | None = transport.get_extra_info("socket")
    if sock is not None and config.linger is not None:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, int(config.linger))
        )
