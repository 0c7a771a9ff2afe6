"""What a server is told: one dataclass, one set of command-line options.

Defaults are safe: loopback only, a frame limit, a deadline for frames that
never complete, a connection cap, a shutdown deadline.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from framelab.common.argtypes import (
    duration,
    host,
    non_negative_int,
    port,
    positive_int,
    positive_size,
)
from framelab.servers.msgpack_app import MIN_FRAME
from framing import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_HIGH_WATER,
    DEFAULT_MAX_FRAME_LENGTH,
    NULL_OBSERVER,
    ConnectionObserver,
)

Mode = Literal["raw", "framed", "msgpack"]
IoStyle = Literal["protocol", "streams"]
LoopName = Literal["uvloop", "asyncio"]

#: called with (peer, bytes read) for every read of the raw echo
ReadObserver = Callable[[str, int], None]


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def default_loop() -> LoopName:
    return "uvloop" if uvloop_available() else "asyncio"


@dataclass
class ServerConfig:
    mode: Mode = "framed"
    io: IoStyle = "protocol"
    loop: LoopName = field(default_factory=default_loop)
    host: str = "127.0.0.1"
    port: int = 0
    backlog: int = 128
    nodelay: bool = True
    linger: float | None = None  # SO_LINGER seconds on accepted sockets; None: off
    max_frame: int = DEFAULT_MAX_FRAME_LENGTH
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT
    high_water: int = DEFAULT_HIGH_WATER
    max_connections: int = 1000
    shutdown_timeout: float = 10.0
    drain_delay: float = 0.0  # seconds between "draining" (health fails) and not accepting
    metrics_port: int | None = None  # Prometheus text format on 127.0.0.1:PORT/metrics
    workers: int = 1
    reuse_port: bool = False
    log_reads: bool = True  # raw mode: log each read's size
    proxy_protocol: bool = False  # a PROXY v1/v2 header first on every connection
    on_read: ReadObserver | None = None  # in-process observers only (not a CLI option)
    observer: ConnectionObserver = NULL_OBSERVER  # every framed connection's events (metrics)

    def __post_init__(self) -> None:
        if self.mode == "msgpack" and self.max_frame < MIN_FRAME:
            raise ValueError(
                f"--max-frame must be at least {MIN_FRAME} bytes in msgpack mode "
                "(room for an error reply)"
            )
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, not {self.workers}")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    a = parser.add_argument
    a("--mode", choices=get_args(Mode), default=d.mode, help="what to serve")
    a("--io", choices=get_args(IoStyle), default=d.io, help="asyncio API style")
    a("--loop", choices=get_args(LoopName), default=d.loop, help="event loop")
    a("--host", type=host, default=d.host, metavar="HOST", help="address to bind")
    a("--port", type=port, default=d.port, metavar="PORT", help="port (0: any free port, printed)")
    a("--backlog", type=non_negative_int, default=d.backlog, metavar="N", help="listen() backlog")
    a("--nodelay", action=argparse.BooleanOptionalAction, default=d.nodelay, help="TCP_NODELAY")
    a(
        "--linger",
        type=duration,
        default=None,
        metavar="SECONDS",
        help="SO_LINGER on accepted sockets (default: off)",
    )
    a(
        "--max-frame",
        type=positive_size,
        default=d.max_frame,
        metavar="BYTES",
        help="largest payload",
    )
    a(
        "--frame-timeout",
        type=duration,
        default=d.frame_timeout,
        metavar="SECONDS",
        help="a frame must be complete this long after its first byte, else the connection "
        "is closed (0: no limit); idle time between frames is not limited",
    )
    a(
        "--high-water",
        type=positive_size,
        default=d.high_water,
        metavar="BYTES",
        help="write buffer size at which reading pauses",
    )
    a(
        "--max-connections",
        type=positive_int,
        default=d.max_connections,
        metavar="N",
        help="more are accepted and closed at once",
    )
    a(
        "--shutdown-timeout",
        type=duration,
        default=d.shutdown_timeout,
        metavar="SECONDS",
        help="graceful shutdown deadline",
    )
    a(
        "--drain-delay",
        type=duration,
        default=d.drain_delay,
        metavar="SECONDS",
        help="on SIGTERM, report draining (health checks fail) this long before not accepting",
    )
    a(
        "--workers",
        type=non_negative_int,
        default=d.workers,
        metavar="N",
        help="worker processes sharing one listener (0: serve in this process, unsupervised)",
    )
    a("--metrics-port", type=int, metavar="PORT", help="serve Prometheus metrics on 127.0.0.1:PORT")
    a("--reuse-port", action="store_true", help="set SO_REUSEPORT even with one worker")
    a("--quiet", action="store_true", help="raw mode: do not log every read")
    a(
        "--proxy-protocol",
        action="store_true",
        help="behind a load balancer: require a PROXY v1/v2 header first on every connection "
        "(HAProxy's send-proxy / send-proxy-v2); logs then name the client it gives",
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        mode=args.mode,
        io=args.io,
        loop=args.loop,
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        nodelay=args.nodelay,
        linger=args.linger,
        max_frame=args.max_frame,
        frame_timeout=args.frame_timeout or None,
        high_water=args.high_water,
        max_connections=args.max_connections,
        shutdown_timeout=args.shutdown_timeout,
        drain_delay=args.drain_delay,
        metrics_port=args.metrics_port,
        workers=args.workers,
        reuse_port=args.reuse_port,
        log_reads=not args.quiet,
        proxy_protocol=args.proxy_protocol,
    )
