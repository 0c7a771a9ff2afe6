"""C05: ping is ICMP echo; traceroute reads ICMP errors; ping can be ignored.

Three namespaces, a - r - b, with r routing between two links
(lab/netns.RoutedPath). From a:
- ping: an ICMP echo request (type 8) to b, answered by an echo reply
  (type 0) with the same identifier and sequence number;
- traceroute: UDP probes to an unused port of b with TTL 1, 2, ...: the
  router answers TTL 1 with time exceeded (type 11 code 0), and b answers
  the probe that reaches it with port unreachable (type 3 code 3), which
  is how traceroute knows it has arrived;
- b with net.ipv4.icmp_echo_ignore_all=1 (a per-namespace sysctl) no
  longer answers ping, though it still routes and answers UDP probes.
ICMP is read with a raw socket in a's namespace; the capture on a's link
shows the same exchange. Needs root; the namespaces go away on any exit.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.capture import Capture
from framelab.lab.netns import Host, RoutedPath, socket_in
from framelab.lab.packets import icmp_echo_request

NAME = "icmp"
PROBE_PORT = 33434  # traceroute's first port
WAIT_S = 1.0
ECHO_REPLY, UNREACHABLE, TIME_EXCEEDED = 0, 3, 11


@dataclass(frozen=True)
class IcmpSeen:
    """An ICMP message that answered us: who sent it, type, code, and when."""

    source: str
    type: int
    code: int
    ms: float

    def to_json(self) -> dict[str, Any]:
        return {"from": self.source, "type": self.type, "code": self.code, "ms": self.ms}


@dataclass(frozen=True)
class IcmpRun:
    """What C05 is judged on: the ping, the traceroute, and both again with ping ignored."""

    echo: IcmpSeen | None
    hops: list[IcmpSeen | None]
    ignored: IcmpSeen | None  # the ping with icmp_echo_ignore_all=1 (None: not answered)
    probe_after: list[IcmpSeen | None]  # the traceroute with icmp_echo_ignore_all=1
    router: str
    target: str

    def to_json(self) -> dict[str, Any]:
        def each(hops: list[IcmpSeen | None]) -> list[dict[str, Any] | None]:
            return [h.to_json() if h else None for h in hops]

        return {
            "ping": self.echo.to_json() if self.echo else None,
            "traceroute": each(self.hops),
            "ping_with_icmp_echo_ignore_all": self.ignored.to_json() if self.ignored else None,
            "traceroute_with_icmp_echo_ignore_all": each(self.probe_after),
            "router": self.router,
            "target": self.target,
        }


def run(ctx: RunContext) -> list[ClaimResult]:
    if not ctx.root:
        return [skipped(NAME, "C05", "needs root: three hosts in network namespaces, raw sockets")]
    return [check_c05()]


def check_c05() -> ClaimResult:
    with RoutedPath() as path, Capture(path.a.ifname, netns=path.a.netns) as cap:
        echo = ping(path.a, path.b.address, sequence=1)
        hops = traceroute(path.a, path.b.address, max_ttl=4)
        path.b.set_sysctl("net.ipv4.icmp_echo_ignore_all", 1)
        ignored = ping(path.a, path.b.address, sequence=2)
        probe_after = traceroute(path.a, path.b.address, max_ttl=4)
        cap.stop()
        seen = IcmpRun(echo, hops, ignored, probe_after, path.r_a.address, path.b.address)
        return judge_c05(seen, cap.lines())


def judge_c05(seen: IcmpRun, trace: list[str]) -> ClaimResult:
    """C05 from what was seen: an echo reply, time exceeded then unreachable, ping ignored."""
    route = [(h.source, h.type, h.code) if h else None for h in seen.hops]
    router, target = seen.router, seen.target
    rtt = f"{seen.echo.ms:.3f} ms" if seen.echo else "no reply"
    echo_type = f"type {seen.echo.type}" if seen.echo else "nothing"
    named = {TIME_EXCEEDED: "time exceeded", UNREACHABLE: "unreachable"}

    def hop(entry: tuple[str, int, int] | None) -> str:
        if entry is None:
            return "no answer"
        source, kind, code = entry
        return f"{named.get(kind, 'ICMP')} {kind}/{code} from {source}"

    parts = [
        Part(
            "ping is ICMP echo request and reply",
            seen.echo is not None and seen.echo.type == ECHO_REPLY,
            f"an echo request (type 8) to {target} was answered with {echo_type} in {rtt}",
        ),
        Part(
            "traceroute uses ICMP time exceeded (TTL) and destination unreachable",
            route[:2] == [(router, TIME_EXCEEDED, 0), (target, UNREACHABLE, 3)],
            "UDP probes: " + "; ".join(f"TTL {i}: {hop(e)}" for i, e in enumerate(route, 1)),
        ),
        Part(
            "a host can be made to ignore ping",
            seen.ignored is None and seen.probe_after[-1:] != [None],
            "with icmp_echo_ignore_all=1 the echo request got "
            + ("no reply" if seen.ignored is None else f"a reply (type {seen.ignored.type})")
            + "; the host "
            + ("still answered" if seen.probe_after[-1:] != [None] else "no longer answered")
            + " traceroute's UDP probe",
        ),
    ]
    return judge_parts(NAME, "C05", parts, seen.to_json(), trace=trace)


def ping(host: Host, destination: str, sequence: int) -> IcmpSeen | None:
    """One echo request from `host`; the matching echo reply, or None."""
    ident = os.getpid() & 0xFFFF
    with socket_in(host.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw:
        sent = time.monotonic()
        raw.sendto(icmp_echo_request(ident, sequence, b"framelab"), (destination, 0))

        def matches(icmp: bytes) -> bool:
            return icmp[0] == ECHO_REPLY and struct.unpack_from("!HH", icmp, 4) == (
                ident,
                sequence,
            )

        return receive(raw, sent, matches)


def traceroute(host: Host, destination: str, max_ttl: int) -> list[IcmpSeen | None]:
    """UDP probes with growing TTL until the destination says port unreachable."""
    hops: list[IcmpSeen | None] = []
    with (
        socket_in(host.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw,
        socket_in(host.netns, socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        udp.bind((host.address, 0))
        source_port = udp.getsockname()[1]
        for ttl in range(1, max_ttl + 1):
            udp.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            sent = time.monotonic()
            udp.sendto(b"probe", (destination, PROBE_PORT))

            def quotes_our_probe(icmp: bytes) -> bool:
                if icmp[0] not in (TIME_EXCEEDED, UNREACHABLE) or len(icmp) < 8 + 20 + 4:
                    return False
                inner = icmp[8:]
                ihl = (inner[0] & 0x0F) * 4
                return struct.unpack_from("!HH", inner, ihl) == (source_port, PROBE_PORT)

            hop = receive(raw, sent, quotes_our_probe)
            hops.append(hop)
            if hop is not None and hop.type == UNREACHABLE:
                break
    return hops


def receive(raw: socket.socket, sent: float, wanted: Callable[[bytes], bool]) -> IcmpSeen | None:
    """The first ICMP message `wanted(icmp_bytes)` accepts within WAIT_S."""
    deadline = sent + WAIT_S
    while (left := deadline - time.monotonic()) > 0:
        raw.settimeout(left)
        try:
            packet, (source, _) = raw.recvfrom(2048)
        except TimeoutError:
            return None
        icmp = packet[(packet[0] & 0x0F) * 4 :]
        if len(icmp) >= 8 and wanted(icmp):
            ms = round((time.monotonic() - sent) * 1000, 3)
            return IcmpSeen(source, icmp[0], icmp[1], ms)
    return None


EXPERIMENT = Experiment(
    name=NAME,
    claims=("C05",),
    needs_root="yes",
    description="ping and traceroute across a router namespace; a host that ignores ping",
    run=run,
)
