"""Packet capture without tcpdump: an AF_PACKET socket, parsed in Python.

Root only. A background thread reads the headers of every frame on one
interface (256 bytes each; MSG_TRUNC gives the real length), keeps the TCP,
UDP and ICMP packets of the ports asked for, decoded by lab/packets.py
(which also formats them the way tcpdump's one-line output does).
On loopback each packet is seen twice (outgoing and incoming): the outgoing
copy is dropped. On a veth end both directions are distinct packets.
Each packet keeps its captured bytes and the kernel's receive time, and
`recording()` collects every capture a block of code made, so a run can
write them out as pcap files afterwards (experiments/pcap_export.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

from framelab.lab.netns import socket_in
from framelab.lab.packets import Packet, format_trace, parse_frame

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
SO_TIMESTAMPNS = 35  # also the control message type (SCM_TIMESTAMPNS)
_TIMESPEC = struct.Struct("qq")
_SNAPLEN = 256
_MAX_FILTER_PORTS = 100  # classic BPF jumps are 8-bit: beyond this, filter in Python only


def port_filter(ports: Iterable[int]) -> bytes:
    """A classic BPF program for an Ethernet-framed interface: keep IPv4 TCP/UDP
    frames to or from `ports`, every ICMP message and every non-first fragment
    (Capture._keep() decides on those), drop the rest in the kernel.

    Without it, every frame on the interface is queued to the capture socket
    and charged to its buffer at full size, so other loopback traffic (a
    benchmark, another test run) can fill it and the packets we want are lost.
    """
    ld_h_abs, ld_b_abs, ld_h_ind, ldx_msh = 0x28, 0x30, 0x48, 0xB1
    jeq, jset, ret = 0x15, 0x45, 0x06
    code: list[tuple[int, str | int, str | int, int]] = [
        (ld_h_abs, 0, 0, 12),  # ethertype
        (jeq, 0, "drop", 0x0800),
        (ld_b_abs, 0, 0, 23),  # IP protocol
        (jeq, "keep", 0, 1),  # ICMP
        (jeq, "ports", 0, 6),  # TCP
        (jeq, "ports", "drop", 17),  # UDP
    ]
    labels = {"ports": len(code)}
    code += [
        (ld_h_abs, 0, 0, 20),  # flags + fragment offset
        (jset, "keep", 0, 0x1FFF),  # a later fragment has no ports: keep it
        (ldx_msh, 0, 0, 14),  # X = IP header length
    ]
    for offset in (14, 16):  # source port, destination port
        code.append((ld_h_ind, 0, 0, offset))
        code += [(jeq, "keep", 0, port) for port in sorted(ports)]
    labels["drop"] = len(code)
    code.append((ret, 0, 0, 0))
    labels["keep"] = len(code)
    code.append((ret, 0, 0, 0xFFFFFFFF))  # whole frame: MSG_TRUNC still gives its length

    def jump(target: str | int, index: int) -> int:
        return labels[target] - index - 1 if isinstance(target, str) else target

    return b"".join(
        struct.pack("HBBI", op, jump(jt, i), jump(jf, i), k)
        for i, (op, jt, jf, k) in enumerate(code)
    )


_recordings: list[list[Capture]] = []


def realtime_offset_ns(samples: int = 7) -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC, to well under a microsecond.

    The kernel stamps packets on the realtime clock and experiments time
    themselves on the monotonic one. One reading of each, a call apart, was
    off by up to 3 us, enough to put a FIN sent by close() before a
    timestamp taken just before close(): the realtime reading is bracketed
    by two monotonic ones, and the tightest bracket of a few is kept.
    """
    best: tuple[int, int] | None = None
    for _ in range(samples):
        before = time.monotonic_ns()
        now = time.time_ns()
        after = time.monotonic_ns()
        if best is None or after - before < best[0]:
            best = (after - before, now - (before + after) // 2)
    assert best is not None
    return best[1]


@contextlib.contextmanager
def recording() -> Iterator[list[Capture]]:
    """Every Capture started while the block runs, in start order."""
    captures: list[Capture] = []
    _recordings.append(captures)
    try:
        yield captures
    finally:
        _recordings.remove(captures)


class Capture:
    """Capture on `interface` (in `netns`, if given) while the block runs.

    `ports`: keep only packets to or from these ports (ICMP errors quoting
    them, and IP fragments, are kept too). An empty set keeps everything.
    """

    snaplen = _SNAPLEN

    def __init__(
        self, interface: str = "lo", ports: Iterable[int] = (), netns: str | None = None
    ) -> None:
        self.interface = interface
        self.ports = set(ports)
        self.netns = netns
        self.packets: list[Packet] = []
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.started = 0.0
        self._realtime_offset_ns = 0  # CLOCK_REALTIME - CLOCK_MONOTONIC

    def add_port(self, port: int) -> None:
        self.ports.add(port)
        self._attach_filter()

    def _attach_filter(self) -> None:
        """Let the kernel drop other ports' frames (see port_filter)."""
        if self._sock is None or not self.ports:
            return
        if len(self.ports) > _MAX_FILTER_PORTS:
            with contextlib.suppress(FileNotFoundError):  # none attached
                self._sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_FILTER, 0)
            return
        program = port_filter(self.ports)
        buf = ctypes.create_string_buffer(program, len(program))
        fprog = struct.pack("HP", len(program) // 8, ctypes.addressof(buf))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def __enter__(self) -> Capture:
        sock = socket_in(self.netns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        # the kernel's receive time for each packet: a busy machine may run the
        # capture thread late, and experiments compare packet times with theirs
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock = sock
        self._attach_filter()
        sock.bind((self.interface, 0))
        sock.settimeout(0.02)
        self.started = time.monotonic()
        self._realtime_offset_ns = realtime_offset_ns()
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()
        for captures in _recordings:
            captures.append(self)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Drain what the kernel already queued, then stop."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        if self._sock is not None:
            self._sock.close()

    def _keep(self, pkt: Packet) -> bool:
        if not self.ports or pkt.proto == "ip-fragment":
            return True
        return pkt.sport in self.ports or pkt.dport in self.ports

    def _loop(self) -> None:
        assert self._sock is not None
        buf = bytearray(_SNAPLEN)
        skip_outgoing = self.interface == "lo"
        while True:
            try:
                size, ancillary, _, addr = self._sock.recvmsg_into(
                    [buf], socket.CMSG_SPACE(_TIMESPEC.size), socket.MSG_TRUNC
                )
            except TimeoutError:
                if self._stop.is_set():
                    return
                continue
            if skip_outgoing and addr[2] == PACKET_OUTGOING:
                continue
            stamp_ns = self._stamp_ns(ancillary)
            pkt = parse_frame(bytes(buf[: min(size, _SNAPLEN)]), size, self._when(stamp_ns))
            if pkt is not None and self._keep(pkt):
                pkt.time_ns = stamp_ns
                with self._changed:
                    self.packets.append(pkt)
                    self._changed.notify_all()

    @staticmethod
    def _stamp_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
        """The kernel's receive time of a packet, ns since the epoch (now, if it gave none)."""
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                return int(seconds * 1_000_000_000 + nanoseconds)
        return time.time_ns()

    def _when(self, stamp_ns: int) -> float:
        """A receive time on the time.monotonic() scale, which experiments compare with."""
        return (stamp_ns - self._realtime_offset_ns) / 1e9

    def wait_for(self, predicate: Callable[[Packet], bool], timeout: float = 2.0) -> Packet | None:
        """Block until a captured packet matches (the event to await, not a sleep)."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for pkt in self.packets[seen:]:
                    if predicate(pkt):
                        return pkt
                seen = len(self.packets)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def tcp(self, port: int | None = None) -> list[Packet]:
        return [
            p
            for p in list(self.packets)
            if p.proto == "tcp" and (port is None or port in (p.sport, p.dport))
        ]

    def lines(self, port: int | None = None) -> list[str]:
        selected = [p for p in list(self.packets) if port is None or port in (p.sport, p.dport)]
        return format_trace(selected, self.started)
