"""A run's captures as pcap files: one per claim, named by claim.

A claim's trace lines are tcpdump-like text (framelab/lab/packets.py), each
stamped with its time since its capture started and its frame length. They
are matched back to the captured packets they were printed from; the claim's
file then holds every packet of the connections (and datagram flows) those
lines belong to, not only the lines shown (a trace is cut to a few lines, a
pcap need not be). Packets no claim drew on are not lost: they go to one file
per experiment. Timestamps are the kernel's receive times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from framelab.experiments.pcap import Frame, pcap_bytes
from framelab.experiments.result import ClaimResult
from framelab.lab.capture import Capture
from framelab.lab.packets import Packet, format_trace

#: a trace line: stamp, the endpoints, ..., the frame length
_LINE = re.compile(r"^\s*(-?\d+\.\d+)ms IP (.+?): .*?\(frame (\d+)\)")


def line_key(line: str) -> tuple[str, str, str] | None:
    """What identifies a trace line's packet in its capture: time, endpoints, frame size."""
    match = _LINE.match(line)
    return (match[1], match[2], match[3]) if match else None


def flow_of(pkt: Packet) -> tuple[object, ...]:
    """Both directions of a TCP connection or UDP flow; any other packet is its own flow."""
    if pkt.proto in ("tcp", "udp"):
        ends = sorted([(pkt.src, pkt.sport), (pkt.dst, pkt.dport)])
        return (pkt.proto, *ends)
    return ("packet", id(pkt))


@dataclass
class RunCaptures:
    """The captures each experiment of a run made (capture.recording() around each)."""

    by_experiment: dict[str, list[Capture]] = field(default_factory=dict)

    def add(self, experiment: str, captures: Iterable[Capture]) -> None:
        self.by_experiment.setdefault(experiment, []).extend(captures)


def _indexed(captures: Sequence[Capture]) -> dict[tuple[str, str, str], tuple[int, Packet]]:
    """Every captured packet by its trace line key (capture index kept: keys are per capture)."""
    index: dict[tuple[str, str, str], tuple[int, Packet]] = {}
    for number, cap in enumerate(captures):
        packets = list(cap.packets)
        for pkt, line in zip(packets, format_trace(packets, cap.started), strict=True):
            key = line_key(line)
            if key is not None:
                index.setdefault(key, (number, pkt))
    return index


def claim_packets(result: ClaimResult, captures: Sequence[Capture]) -> list[Packet]:
    """The packets behind a claim's trace, whole flows, in time order."""
    index = _indexed(captures)
    flows: set[tuple[int, tuple[object, ...]]] = set()
    for line in result.trace:
        key = line_key(line)
        if key is not None and key in index:
            number, pkt = index[key]
            flows.add((number, flow_of(pkt)))
    chosen = [
        pkt
        for number, cap in enumerate(captures)
        for pkt in list(cap.packets)
        if (number, flow_of(pkt)) in flows
    ]
    return sorted(chosen, key=lambda p: p.time_ns)


def frames(packets: Iterable[Packet]) -> list[Frame]:
    return [Frame(p.time_ns, p.frame_len, p.data) for p in packets if p.data]


def write_pcaps(
    directory: Path, results: Sequence[ClaimResult], run: RunCaptures
) -> dict[str, Path]:
    """Write `C18.pcap` ... and `<experiment>.pcap` for the rest; {claim or experiment: path}."""
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for experiment, captures in run.by_experiment.items():
        used: set[int] = set()
        for result in results:
            if result.experiment != experiment:
                continue
            packets = claim_packets(result, captures)
            if packets:
                used.update(id(p) for p in packets)
                written[result.claim] = _write(directory / f"{result.claim}.pcap", packets)
        rest = [p for cap in captures for p in list(cap.packets) if id(p) not in used]
        if rest:
            rest.sort(key=lambda p: p.time_ns)
            written[experiment] = _write(directory / f"{experiment}.pcap", rest)
    return written


def _write(path: Path, packets: Sequence[Packet]) -> Path:
    path.write_bytes(pcap_bytes(frames(packets), snaplen=Capture.snaplen))
    return path
