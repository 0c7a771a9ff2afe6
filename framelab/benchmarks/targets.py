"""The servers a benchmark measures, each started in a process of its own.

A target is a command line that prints `listening on HOST:PORT` once it
accepts connections: `framelab serve` in one of its modes, or the Twisted
peer. Its process is the server itself (no shell in between), so its CPU
time and peak RSS can be read from /proc (servers.process).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from framelab.benchmarks import peer_env
from framelab.servers.process import ServerProcess

#: the frame limit every server gets: above the largest payload measured
MAX_FRAME = 2 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """One server configuration: a stable name, what it is, how to start it."""

    name: str  # e.g. "framed-protocol/uvloop"
    kind: str  # raw | framed | msgpack | peer
    loop: str  # uvloop | asyncio | twisted | grpc
    io: str  # protocol | streams | "-"
    env: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    #: a peer's module (`python -m MODULE --port 0 ARGS`) and what it speaks
    module: str = "framelab.benchmarks.twisted_echo"
    args: tuple[str, ...] = ()
    speaks: str = "bytes"  # bytes | msgpack | grpc | msgpack-rpc (peers only)
    #: a peer run by the interpreter of an environment of its own
    #: (benchmarks/peer_env.py), as a script: framelab is not installed there
    environment: str | None = None

    @property
    def message(self) -> str:
        """What the load generator sends: plain payloads or msgpack echo requests."""
        if self.kind == "peer":
            return self.speaks
        return "msgpack" if self.kind == "msgpack" else "bytes"

    @property
    def client(self) -> str:
        """The load generator's module: gRPC needs its own client."""
        return CLIENTS.get(self.message, "framelab.benchmarks.loadgen")

    def server(self, wrapper: Sequence[str] = (), start_timeout: float = 20.0) -> ServerProcess:
        """The server, to start with `with` (started on entry, killed on exit);
        `wrapper` runs it under another program (valgrind, for instruction counts)."""
        if self.environment is not None:
            python = peer_env.ensure(self.environment)
            script = importlib.util.find_spec(self.module)
            assert script is not None and script.origin is not None, self.module
            peer = [*wrapper, str(python), script.origin, "--port", "0", *self.args]
            return ServerProcess([], command=peer, env=self.env, start_timeout=start_timeout)
        if self.kind == "peer":
            peer = [*wrapper, sys.executable, "-m", self.module, "--port", "0", *self.args]
            return ServerProcess([], command=peer, env=self.env, start_timeout=start_timeout)
        serve = [*wrapper, sys.executable, "-m", "framelab", "serve", "--port", "0"]
        options = ["--mode", self.kind, "--io", self.io, "--loop", self.loop, "--quiet"]
        options += ["--max-frame", str(MAX_FRAME), "--log-level", "WARNING"]
        if wrapper:  # the wrapper must see the process that serves: no supervisor
            options += ["--workers", "0"]
        return ServerProcess(options, command=serve, env=self.env, start_timeout=start_timeout)


#: the load generator of each RPC stack that needs a client of its own
CLIENTS = {
    "grpc": "framelab.benchmarks.grpc_load",
    "msgpack-rpc": "framelab.benchmarks.msgpackrpc_load",
}


def framelab_target(kind: str, io: str, loop: str) -> Target:
    name = f"{kind}/{loop}" if kind == "raw" else f"{kind}-{io}/{loop}"
    return Target(name, kind, loop, io if kind != "raw" else "protocol")


RAW = framelab_target("raw", "protocol", "uvloop")
FRAMED = framelab_target("framed", "protocol", "uvloop")
FRAMED_ASYNCIO = framelab_target("framed", "protocol", "asyncio")
#: the framed echo without the compiled codec loops (framing/_codec.py)
FRAMED_PURE = Target(
    "framed-protocol-pure/uvloop", "framed", "uvloop", "protocol", {"FRAMELAB_PURE_PYTHON": "1"}
)
PEER = Target("twisted-peer", "peer", "twisted", "-")
MSGPACK = framelab_target("msgpack", "protocol", "uvloop")
#: what users write by hand: readexactly per header and payload, same app
READEXACTLY = Target(
    "msgpack-readexactly/uvloop",
    "peer",
    "uvloop",
    "streams",
    module="framelab.benchmarks.readexactly_peer",
    speaks="msgpack",
)
#: the RPC stack people pick instead, driven by its own Python client
GRPC = Target(
    "grpc-aio", "peer", "grpc", "-", module="framelab.benchmarks.grpc_echo", speaks="grpc"
)

ALL_TARGETS: list[Target] = [
    RAW,
    framelab_target("raw", "protocol", "asyncio"),
    FRAMED,
    FRAMED_ASYNCIO,
    framelab_target("framed", "streams", "uvloop"),
    framelab_target("framed", "streams", "asyncio"),
    FRAMED_PURE,
    MSGPACK,
    framelab_target("msgpack", "protocol", "asyncio"),
    READEXACTLY,
    PEER,
]
#: the msgpack-RPC library from PyPI (MessagePack-RPC on Tornado), with our asyncio client
MSGPACK_RPC = Target(
    "msgpack-rpc-python",
    "peer",
    "tornado",
    "-",
    module="framelab.benchmarks.msgpackrpc_echo",
    speaks="msgpack-rpc",
    environment="msgpack-rpc-python",
)
#: the RPC comparison: a client of its own per stack, so a table of its own
RPC_TARGETS: list[Target] = [MSGPACK, GRPC, MSGPACK_RPC]
BY_NAME = {t.name: t for t in [*ALL_TARGETS, GRPC, MSGPACK_RPC]}
