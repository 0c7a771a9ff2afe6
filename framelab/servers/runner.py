"""One server in one process: loop, listener, signals, shutdown.

- Loop: uvloop or asyncio's default, chosen by name, one place (asyncio's
  with its out-of-descriptors back-off fixed: servers/selector_loop.py).
- Memory: freed large payload buffers stay in the heap for the next frame
  (framing/allocator.py: a fresh mmap per frame halves large-frame rates).
- Descriptors: the soft RLIMIT_NOFILE is raised (up to the hard limit) to
  fit --max-connections; if it cannot be, a warning says so at start.
- Listener: bound here (SO_REUSEADDR; SO_REUSEPORT with --reuse-port), or
  handed in (a worker gets its supervisor's); listen(backlog).
- Ready: reported (the `ready` callback) only once the server accepts.
- Stop: SIGINT/SIGTERM stop accepting, let every connection answer what it
  has received and close with FIN, and exit 0 within --shutdown-timeout;
  a second signal aborts what is left at once (exit 1). From the stop on,
  `ConnectionSet.draining` is set (health checks read it).
- Stop without loss: new handshakes are refused with a socket filter, the
  accept queue is served until EAGAIN, then the listener closes
  (servers/drain.py); a supervised worker that retires leaves the queue to
  the others. Workers and their supervisor: servers/supervisor.py.
- Background: `BackgroundServer` runs the same server in a thread, for the
  demo, the experiments and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from framelab.servers.config import ServerConfig
from framelab.servers.connections import ConnectionSet
from framelab.servers.drain import (
    HANDSHAKE_GRACE_S,
    accept_queued,
    handshakes_settled,
    refuse_new_handshakes,
)
from framelab.servers.handlers import protocol_factory, streams_factory
from framelab.servers.process import raise_fd_limit
from framelab.servers.selector_loop import SelectorLoop
from framing.allocator import keep_large_buffers_in_heap

log = logging.getLogger("framelab.server")
Ready = Callable[[str, int], None]
T = TypeVar("T")
#: descriptors a server needs besides its connections (listener, epoll,
#: signal pipe, std streams, logging, the libraries' own)
SPARE_FDS = 64
#: at a stop, how long the connections just accepted get to send their first bytes
FIRST_BYTES_GRACE = 0.05


def make_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return SelectorLoop()


def ensure_fd_headroom(max_connections: int) -> None:
    """Raise the soft descriptor limit to fit the connection cap, or warn."""
    wanted = max_connections + SPARE_FDS
    soft = raise_fd_limit(wanted)
    if soft < wanted:
        log.warning(
            "RLIMIT_NOFILE is %d, under --max-connections %d + %d spare: past about %d "
            "connections accept() will fail with EMFILE (connections then wait or are closed)",
            soft,
            max_connections,
            SPARE_FDS,
            max(soft - SPARE_FDS, 0),
        )


def run_on_loop(name: str, main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run with a chosen loop (asyncio.Runner's loop_factory, 3.11+)."""
    with asyncio.Runner(loop_factory=lambda: make_loop(name)) as runner:
        return runner.run(main)


def bind_listener(config: ServerConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if config.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Server:
    """One server on one loop: start, run until stopped, shut down gracefully."""

    def __init__(
        self,
        config: ServerConfig,
        listener: socket.socket | None = None,
        connections: ConnectionSet | None = None,
    ) -> None:
        self.config = config
        self.listener = listener
        self.connections = connections or ConnectionSet(config.max_connections)
        self.stop_requested = asyncio.Event()
        self.force_requested = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._factory: Callable[[], asyncio.BaseProtocol] | None = None
        self.leave_queue = False
        self.drained = 0  # connections taken from the accept queue at stop

    @property
    def address(self) -> tuple[str, int]:
        assert self.listener is not None
        host, port = self.listener.getsockname()[:2]
        return host, port

    async def start(self) -> None:
        if self.listener is None:
            self.listener = bind_listener(self.config)
        self._factory = self._protocol_factory()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, sock=self.listener, backlog=self.config.backlog
        )

    def _protocol_factory(self) -> Callable[[], asyncio.BaseProtocol]:
        """One factory for the listener and for connections drained at stop."""
        make = streams_factory if self.config.io == "streams" else protocol_factory
        return make(self.config, self.connections)

    def request_stop(self) -> None:
        """First call: graceful stop. Second call: abort what is left."""
        if self.stop_requested.is_set():
            self.force_requested.set()
        self.stop_requested.set()

    def request_retire(self) -> None:
        """Graceful stop that leaves the accept queue to the listener's other
        holders (a rolling restart: the replacement is already accepting)."""
        self.leave_queue = True
        self.request_stop()

    async def serve_until_stopped(self) -> int:
        await self.stop_requested.wait()
        return await self.shutdown()

    async def shutdown(self) -> int:
        """Stop accepting without losing a queued connection, then let every
        connection finish; 0 if graceful, 1 if forced."""
        self.connections.draining = True  # health checks fail from now on
        if self.config.drain_delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.force_requested.wait(), self.config.drain_delay)
        drained = await self._stop_listening()
        self.drained = drained
        self.connections.taken_from_queue(drained)
        log.info(
            "shutting down: not accepting (%d connections taken from the accept queue%s); "
            "finishing %d connections within %g s",
            drained,
            ", the rest left to the other workers" if self.leave_queue else "",
            len(self.connections.live),
            self.config.shutdown_timeout,
        )
        if self.connections.live:
            # a connection accepted a moment ago may not have sent its first bytes yet:
            # finishing it now would close it unanswered (one round trip on loopback: µs)
            await asyncio.sleep(FIRST_BYTES_GRACE)
        graceful = asyncio.ensure_future(self.connections.shutdown(self.config.shutdown_timeout))
        forced = asyncio.ensure_future(self.force_requested.wait())
        done, _ = await asyncio.wait([graceful, forced], return_when=asyncio.FIRST_COMPLETED)
        if graceful in done:
            forced.cancel()
            log.info("shut down (%d connections aborted at the deadline)", graceful.result())
            return 0
        log.warning("second signal: aborting %d connections", len(self.connections.live))
        for conn in list(self.connections.live):
            conn.abort()
        graceful.cancel()
        return 1

    async def _stop_listening(self) -> int:
        """Refuse new handshakes (unless the queue is left to others), accept
        what the kernel queued until EAGAIN, then close: nothing queued is
        reset (servers/drain.py). Returns how many were taken from the queue."""
        if self._server is None or self.listener is None:
            return 0
        spare = self.listener.dup()  # the server's close() closes the listener
        try:
            if not self.leave_queue:
                refuse_new_handshakes(spare)
            self._server.close()  # the loop stops accepting; `spare` keeps the queue
            # handshakes already under way join the queue; once none is left,
            # nothing can join it after the EAGAIN below
            if not self.leave_queue and (pending := await handshakes_settled(spare)):
                log.warning(
                    "stopping with %d handshakes still under way after %g s",
                    pending,
                    HANDSHAKE_GRACE_S,
                )
            # retiring, the queue is the other workers': they serve it, no one is rushed
            queued = [] if self.leave_queue else accept_queued(spare)
        finally:
            spare.close()
        loop, factory = asyncio.get_running_loop(), self._factory
        assert factory is not None
        results = await asyncio.gather(
            *(loop.connect_accepted_socket(factory, sock) for sock in queued),
            return_exceptions=True,
        )
        for sock, result in zip(queued, results, strict=True):
            if isinstance(result, BaseException):  # the client left meanwhile
                sock.close()
        return len(queued)


async def serve(
    config: ServerConfig,
    ready: Ready,
    listener: socket.socket | None = None,
    *,
    supervised: bool = False,
    connections: ConnectionSet | None = None,
) -> int:
    """Run one server with signal handling until SIGINT/SIGTERM.

    SIGINT/SIGTERM: graceful stop (new handshakes refused, the accept queue
    served); a second one aborts. Supervised (a worker sharing the
    supervisor's listener), SIGUSR2 retires it: it stops accepting and
    leaves the queue to the workers that stay; SIGHUP is the supervisor's.
    """
    ensure_fd_headroom(config.max_connections)
    keep_large_buffers_in_heap(config.max_frame)
    server = Server(config, listener, connections)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop)
    if supervised:
        loop.add_signal_handler(signal.SIGUSR2, server.request_retire)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # the worker held these while starting (servers/worker.py): handled from now on
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGUSR2})
    ready(*server.address)
    return await server.serve_until_stopped()


class BackgroundServer:
    """The same server in a thread with its own loop, for in-process use.

    with BackgroundServer(ServerConfig(mode="raw")) as srv:
        connect to srv.host, srv.port
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.host = ""
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.exit_code: int | None = None

    def __enter__(self) -> BackgroundServer:
        self._thread = threading.Thread(target=self._main, name="framelab-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def server(self) -> Server:
        assert self._server is not None
        return self._server

    @property
    def connections(self) -> ConnectionSet:
        return self.server.connections

    def wait_for_connections(self, at_most: int, timeout: float = 5.0) -> int:
        """Block until at most `at_most` connections are open (awaits their
        close events on the server's loop); returns the count then."""
        assert self._loop is not None

        async def settle() -> int:
            live = self.connections.live
            while len(live) > at_most:
                await asyncio.wait([c.closed for c in live], return_when=asyncio.FIRST_COMPLETED)
            return len(live)

        future = asyncio.run_coroutine_threadsafe(settle(), self._loop)
        return future.result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        """Run `fn` on the server's loop and return its result: the safe way to
        look at loop state from another thread (e.g. asyncio.all_tasks())."""
        assert self._loop is not None

        async def on_loop() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(on_loop(), self._loop).result(timeout)

    def stop(self) -> None:
        if self._thread is None:
            return
        server = self._server
        if self._loop is not None and server is not None and not server.stop_requested.is_set():
            with contextlib.suppress(RuntimeError):  # it stopped and closed its loop meanwhile
                self._loop.call_soon_threadsafe(server.request_stop)
        self._thread.join(timeout=self.config.shutdown_timeout + 5)
        self._thread = None

    def _main(self) -> None:
        async def main() -> int:
            self._loop = asyncio.get_running_loop()
            self._server = Server(self.config)
            try:
                await self._server.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                return 1
            self.host, self.port = self._server.address
            self._ready.set()
            return await self._server.serve_until_stopped()

        try:
            self.exit_code = run_on_loop(self.config.loop, main())
        except BaseException as exc:  # pragma: no cover - reported to the caller
            self._error = exc
            self._ready.set()
            print(f"background server failed: {exc!r}", file=sys.stderr)
