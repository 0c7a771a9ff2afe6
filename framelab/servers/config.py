"""What a server is told: one dataclass, one set of command-line options.

Defaults are safe: loopback only, a frame limit, a deadline for frames that
never complete, a connection cap, a shutdown deadline.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

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


def _default(help_text: str, value: object) -> str:
    """The help text with the default said in words (the parser's own default
    is left unset, so that it can tell an option given from one left out)."""
    shown = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    return f"{help_text} (default: {shown})"


def add_server_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The server's options; returns them (a config file's keys are their names).

    No option puts a default in the namespace: what `args` holds is what the
    command line gave, so it can override a config file key by key.
    """
    d = ServerConfig()
    unset = argparse.SUPPRESS
    options = []

    def a(*flags: str, **kwargs: Any) -> None:
        options.append(parser.add_argument(*flags, default=unset, **kwargs))

    a("--mode", choices=get_args(Mode), help=_default("what to serve", d.mode))
    a("--io", choices=get_args(IoStyle), help=_default("asyncio API style", d.io))
    a("--loop", choices=get_args(LoopName), help=_default("event loop", d.loop))
    a("--host", type=host, metavar="HOST", help=_default("address to bind", d.host))
    a(
        "--port",
        type=port,
        metavar="PORT",
        help=_default("port (0: any free port, printed)", d.port),
    )
    a("--backlog", type=non_negative_int, metavar="N", help=_default("listen() backlog", d.backlog))
    a("--nodelay", action=argparse.BooleanOptionalAction, help=_default("TCP_NODELAY", d.nodelay))
    a(
        "--linger",
        type=duration,
        metavar="SECONDS",
        help="SO_LINGER on accepted sockets (default: off)",
    )
    a(
        "--max-frame",
        type=positive_size,
        metavar="BYTES",
        help=_default("largest payload", d.max_frame),
    )
    a(
        "--frame-timeout",
        type=duration,
        metavar="SECONDS",
        help=_default(
            "a frame must be complete this long after its first byte, else the connection "
            "is closed (0: no limit); idle time between frames is not limited",
            d.frame_timeout,
        ),
    )
    a(
        "--high-water",
        type=positive_size,
        metavar="BYTES",
        help=_default("write buffer size at which reading pauses", d.high_water),
    )
    a(
        "--max-connections",
        type=positive_int,
        metavar="N",
        help=_default("more are accepted and closed at once", d.max_connections),
    )
    a(
        "--shutdown-timeout",
        type=duration,
        metavar="SECONDS",
        help=_default("graceful shutdown deadline", d.shutdown_timeout),
    )
    a(
        "--drain-delay",
        type=duration,
        metavar="SECONDS",
        help=_default(
            "on SIGTERM, report draining (health checks fail) this long before not accepting",
            d.drain_delay,
        ),
    )
    a(
        "--workers",
        type=non_negative_int,
        metavar="N",
        help=_default(
            "worker processes sharing one listener (0: serve in this process, unsupervised)",
            d.workers,
        ),
    )
    a(
        "--metrics-port",
        type=port,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT",
    )
    a("--reuse-port", action="store_true", help="set SO_REUSEPORT even with one worker")
    a("--quiet", action="store_true", help="raw mode: do not log every read")
    a(
        "--proxy-protocol",
        action="store_true",
        help="behind a load balancer: require a PROXY v1/v2 header first on every connection "
        "(HAProxy's send-proxy / send-proxy-v2); logs then name the client it gives",
    )
    return options


def server_options() -> list[argparse.Action]:
    """The server's options, outside any command line (to check a file's keys)."""
    return add_server_arguments(argparse.ArgumentParser(add_help=False))


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The server options the command line gave, by option name (dest)."""
    names = {option.dest for option in server_options()}
    return {name: value for name, value in vars(args).items() if name in names}


def config_from_options(values: dict[str, Any]) -> ServerConfig:
    """A ServerConfig from option values by dest: what is not given is the default.

    ValueError if the combination is not valid (ServerConfig's own checks)."""
    fields = dict(values)
    if "quiet" in fields:
        fields["log_reads"] = not fields.pop("quiet")
    if fields.get("frame_timeout") == 0:  # 0 on the command line: no limit
        fields["frame_timeout"] = None
    return ServerConfig(**fields)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return config_from_options(given_options(args))
