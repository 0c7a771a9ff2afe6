"""`framelab cluster`'s run: hosts, servers, balancer, load, one failure, what was seen.

Hosts are network namespaces in a star (lab/netns.py `Star`): the
balancer in the middle, one link to the client, one to each server. Each
server is `framelab serve --mode msgpack --proxy-protocol` in its own
namespace; HAProxy balances over them with send-proxy-v2 and the framed
health check (cluster/haproxy.py). The load (cluster/load.py) runs from the
client namespace; part way through, one server is killed (SIGKILL) or
drained (SIGTERM: it fails its health check for --drain-delay seconds while
still serving, then stops accepting and finishes what it has). Meanwhile
HAProxy's stats are sampled every 50 ms. At the end the TIME_WAIT sockets
of every namespace are counted, by side, to show who closed first.
Everything made is removed on the way out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from framelab.cluster.haproxy import (
    Backend,
    CheckTiming,
    HAProxy,
    ServerStat,
    config_text,
    find_haproxy,
)
from framelab.cluster.load import ConnectionRecord, LoadSpec, run_load
from framelab.lab.kernel import proc_net_tcp, sysctl
from framelab.lab.netns import Star
from framelab.servers.process import ServerProcess

Event = Literal["kill", "drain", "none"]
SERVER_PORT = 7000
FRONTEND_PORT = 7000
SAMPLE_INTERVAL = 0.05
#: Linux's fixed TIME_WAIT (TCP_TIMEWAIT_LEN, include/net/tcp.h)
TIME_WAIT_SECONDS = 60


@dataclass(frozen=True)
class ClusterSpec:
    servers: int = 3
    seconds: float = 6.0
    workers: int = 4
    frames_per_connection: int = 20
    pause: float = 0.005
    event: Event = "kill"
    event_at: float = 0.4  # fraction of the load's duration
    victim: int = 0  # 1-based server number; 0: the last one
    drain_delay: float = 2.0
    timing: CheckTiming = field(default_factory=CheckTiming)
    proxy_line: str = "send-proxy-v2"

    @property
    def victim_name(self) -> str:
        return f"s{self.victim or self.servers}"


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load began
    servers: dict[str, ServerStat]


@dataclass(frozen=True)
class TimeWaitCount:
    """TIME_WAIT sockets on one side of one hop, after the load."""

    host: str  # namespace role: client, balancer, s1...
    side: str  # which connections: "to the balancer", "from clients", "to servers", ...
    count: int


@dataclass(frozen=True)
class PortBudget:
    """What bounds new connections from the balancer to one server while
    TIME_WAIT holds their 4-tuples: the balancer namespace's settings."""

    port_range: tuple[int, int]  # net.ipv4.ip_local_port_range
    tw_reuse: str  # net.ipv4.tcp_tw_reuse (2: loopback only)

    @property
    def ports(self) -> int:
        return self.port_range[1] - self.port_range[0] + 1

    @property
    def per_second(self) -> float:
        """New connections per second to one server address that TIME_WAIT
        (60 s on Linux) allows when the balancer closes first and no reuse applies."""
        return self.ports / TIME_WAIT_SECONDS


@dataclass
class ClusterResult:
    spec: ClusterSpec
    haproxy_version: str
    backends: list[Backend]
    records: list[ConnectionRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    event_at: float | None = None  # seconds since the load began
    victim_exit: int | None = None  # the victim's exit status (drain: 0 expected)
    time_wait: list[TimeWaitCount] = field(default_factory=list)
    port_budget: PortBudget | None = None
    victim_log: list[str] = field(default_factory=list)

    def backend_name(self, address: str | None) -> str:
        for backend in self.backends:
            if address == f"{backend.host}:{backend.port}":
                return backend.name
        return "(none)" if address is None else address


def server_command(netns: str) -> list[str]:
    return ["ip", "netns", "exec", netns, sys.executable, "-m", "framelab", "serve"]


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every with-block cleans up: it goes to
    whatever handles SIGINT now (inside asyncio.run, the runner, which cancels
    the load's task instead of raising in the middle of the loop)."""

    def interrupt(signum: int, frame: Any) -> None:
        on_sigint = signal.getsignal(signal.SIGINT)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
        else:  # SIGINT ignored (a background job): unwind anyway
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Sampler(threading.Thread):
    """Reads HAProxy's stats every SAMPLE_INTERVAL until stopped."""

    def __init__(self, haproxy: HAProxy, origin: float) -> None:
        super().__init__(name="haproxy-stats", daemon=True)
        self.haproxy = haproxy
        self.origin = origin
        self.samples: list[Sample] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            stopping = self.stopped.is_set()  # one last sample after the load ended
            with contextlib.suppress(OSError):
                stats = self.haproxy.stats()
                self.samples.append(Sample(time.monotonic() - self.origin, stats))
            if stopping:
                return
            self.stopped.wait(SAMPLE_INTERVAL)


def run_cluster(spec: ClusterSpec, progress: bool = False) -> ClusterResult:
    """Build the cluster, run the load with its failure, tear everything down."""
    binary, version = find_haproxy()
    if os.geteuid() != 0:
        raise PermissionError("framelab cluster needs root (it creates network namespaces)")
    if not 1 <= (spec.victim or spec.servers) <= spec.servers:
        raise ValueError(f"--victim must be 1..{spec.servers}")
    names = [f"s{i + 1}" for i in range(spec.servers)]
    with (
        _sigterm_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="framelab-cluster-") as tmp,
        Star(["client", *names]) as star,
        contextlib.ExitStack() as stack,
    ):
        backends = [Backend(n, star.spokes[n].address, SERVER_PORT) for n in names]
        result = ClusterResult(spec, version, backends)
        servers: dict[str, ServerProcess] = {}
        for backend in backends:
            args = ["--mode", "msgpack", "--proxy-protocol", "--host", backend.host]
            args += ["--port", str(backend.port), "--log-level", "WARNING"]
            if spec.event == "drain":
                args += ["--drain-delay", str(spec.drain_delay)]
            command = server_command(star.spokes[backend.name].netns)
            server = servers[backend.name] = ServerProcess(args, command=command)
            stack.callback(server.kill)  # before start: an interrupt while starting kills it too
            server.start()
        frontend = (star.hub_ends["client"].address, FRONTEND_PORT)
        stats = Path(tmp) / "admin.sock"
        config = config_text(frontend, backends, stats, spec.timing, spec.proxy_line)
        haproxy = HAProxy(binary, config, Path(tmp), stats, star.hub_netns)
        stack.callback(haproxy.stop)
        haproxy.start()
        haproxy.wait_until("up", names)
        if progress:
            print(f"cluster up: haproxy {version}, servers {', '.join(names)}", file=sys.stderr)
        origin = time.monotonic()
        sampler = _Sampler(haproxy, origin)
        sampler.start()
        try:
            load = LoadSpec(
                frontend,
                star.spokes["client"].netns,
                workers=spec.workers,
                seconds=spec.seconds,
                frames_per_connection=spec.frames_per_connection,
                pause=spec.pause,
            )
            victim = servers[spec.victim_name]
            result.records, result.event_at = asyncio.run(
                _load_with_event(load, origin, spec, victim)
            )
            if spec.event == "drain":
                result.victim_exit = victim.wait(spec.drain_delay + 15)
            elif spec.event == "kill":
                result.victim_exit = victim.wait(5)
            result.victim_log = victim.log[-20:]
        finally:
            sampler.stopped.set()
            sampler.join()
            result.samples = sampler.samples
        result.time_wait = count_time_wait(star, backends, frontend)
        result.port_budget = port_budget(star.hub_netns)
    return result


def port_budget(netns: str) -> PortBudget | None:
    ports = sysctl("net.ipv4.ip_local_port_range", netns)
    reuse = sysctl("net.ipv4.tcp_tw_reuse", netns)
    if ports is None or reuse is None:
        return None
    low, high = (int(p) for p in ports.split())
    return PortBudget((low, high), reuse.strip())


async def _load_with_event(
    load: LoadSpec, origin: float, spec: ClusterSpec, victim: ServerProcess
) -> tuple[list[ConnectionRecord], float | None]:
    async def strike() -> float | None:
        if spec.event == "none":
            return None
        await asyncio.sleep(spec.seconds * spec.event_at)
        at = time.monotonic() - origin
        victim.send_signal(signal.SIGKILL if spec.event == "kill" else signal.SIGTERM)
        return at

    records, event_at = await asyncio.gather(run_load(load, origin), strike())
    return records, event_at


def count_time_wait(
    star: Star, backends: list[Backend], frontend: tuple[str, int]
) -> list[TimeWaitCount]:
    """TIME_WAIT sockets per host and side: each one is a connection its side closed first."""

    def waiting(netns: str) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        return [(e.local, e.remote) for e in proc_net_tcp(netns) if e.state == "TIME_WAIT"]

    counts = [TimeWaitCount("client", "to the balancer", len(waiting(star.spokes["client"].netns)))]
    hub = waiting(star.hub_netns)
    counts.append(
        TimeWaitCount("balancer", "from clients", sum(1 for loc, _ in hub if loc == frontend))
    )
    server_ports = {(b.host, b.port) for b in backends}
    counts.append(
        TimeWaitCount("balancer", "to servers", sum(1 for _, rem in hub if rem in server_ports))
    )
    for backend in backends:
        rows = waiting(star.spokes[backend.name].netns)
        counts.append(TimeWaitCount(backend.name, "from the balancer", len(rows)))
    return counts
