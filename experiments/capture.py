"""Packet capture without tcpdump: an AF_PACKET socket, parsed in Python.

Root only. A background thread reads the headers of every frame on one
interface (256 bytes each; MSG_TRUNC gives the real length), keeps the TCP,
UDP and ICMP packets of the ports asked for, and formats them the way
tcpdump's one-line output does (`Flags [S.]`, `seq`, `ack`, `length`).
On loopback each packet is seen twice (outgoing and incoming): the outgoing
copy is dropped. On a veth end both directions are distinct packets.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from experiments.netns import socket_in

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_DETACH_FILTER = 27
SO_TIMESTAMPNS = 35  # also the control message type (SCM_TIMESTAMPNS)
_TIMESPEC = struct.Struct("qq")
_SNAPLEN = 256
_MAX_FILTER_PORTS = 100  # classic BPF jumps are 8-bit: beyond this, filter in Python only
# (type, code) -> what RFC 792 calls it
_ICMP_NAMES: dict[tuple[int | None, int | None], str] = {
    (0, 0): "echo reply",
    (3, 4): "fragmentation needed and DF set",
    (8, 0): "echo request",
    (11, 0): "time exceeded in transit",
    (11, 1): "fragment reassembly time exceeded",
}
_TCP_FLAG_LETTERS = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("U", 0x20))


@dataclass
class Packet:
    """One captured frame, decoded down to its transport header."""

    time: float
    frame_len: int  # bytes on the wire as captured (Ethernet header included)
    src: str
    dst: str
    proto: str  # "tcp", "udp", "icmp", "ip-fragment", other protocol number as text
    ip_header_len: int
    ip_total_len: int
    ip_id: int
    dont_fragment: bool
    more_fragments: bool
    fragment_offset: int
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    seq: int = 0
    ack: int = 0
    window: int = 0
    tcp_header_len: int = 0
    payload_len: int = 0
    mss_option: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    options: list[str] = field(default_factory=list)

    @property
    def flags(self) -> str:
        """tcpdump's flag string: 'S', 'S.', '.', 'P.', 'F.', 'R', 'R.'."""
        letters = "".join(ch for ch, bit in _TCP_FLAG_LETTERS if self.tcp_flags & bit)
        return letters + ("." if self.tcp_flags & 0x10 else "")

    def has(self, letter: str) -> bool:
        return letter in self.flags


def _tcp_options(data: bytes) -> tuple[int | None, list[str]]:
    mss, names, i = None, [], 0
    while i < len(data):
        kind = data[i]
        if kind == 0:
            break
        if kind == 1:
            names.append("nop")
            i += 1
            continue
        if i + 1 >= len(data) or data[i + 1] < 2:
            break
        size = data[i + 1]
        body = data[i + 2 : i + size]
        if kind == 2 and len(body) == 2:
            mss = struct.unpack("!H", body)[0]
            names.append(f"mss {mss}")
        elif kind == 3 and body:
            names.append(f"wscale {body[0]}")
        elif kind == 4:
            names.append("sackOK")
        elif kind == 8 and len(body) == 8:
            val, ecr = struct.unpack("!II", body)
            names.append(f"TS val {val} ecr {ecr}")
        else:
            names.append(f"opt-{kind}")
        i += size
    return mss, names


def parse_frame(frame: bytes, frame_len: int, when: float) -> Packet | None:
    """Decode an Ethernet frame carrying IPv4 (others: None)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    total, ident, frag = struct.unpack_from("!HHH", ip, 2)
    proto_num = ip[9]
    src = socket.inet_ntoa(ip[12:16])
    dst = socket.inet_ntoa(ip[16:20])
    offset = (frag & 0x1FFF) * 8
    pkt = Packet(
        time=when,
        frame_len=frame_len,
        src=src,
        dst=dst,
        proto={6: "tcp", 17: "udp", 1: "icmp"}.get(proto_num, str(proto_num)),
        ip_header_len=ihl,
        ip_total_len=total,
        ip_id=ident,
        dont_fragment=bool(frag & 0x4000),
        more_fragments=bool(frag & 0x2000),
        fragment_offset=offset,
    )
    if offset:
        pkt.proto = "ip-fragment"
        pkt.payload_len = total - ihl
        return pkt
    l4 = ip[ihl:]
    if pkt.proto == "tcp" and len(l4) >= 20:
        pkt.sport, pkt.dport, pkt.seq, pkt.ack = struct.unpack_from("!HHII", l4)
        pkt.tcp_header_len = (l4[12] >> 4) * 4
        pkt.tcp_flags = l4[13]
        pkt.window = struct.unpack_from("!H", l4, 14)[0]
        pkt.payload_len = total - ihl - pkt.tcp_header_len
        pkt.mss_option, pkt.options = _tcp_options(l4[20 : pkt.tcp_header_len])
    elif pkt.proto == "udp" and len(l4) >= 8:
        pkt.sport, pkt.dport, udp_len = struct.unpack_from("!HHH", l4)
        pkt.payload_len = udp_len - 8
    elif pkt.proto == "icmp" and len(l4) >= 2:
        pkt.icmp_type, pkt.icmp_code = l4[0], l4[1]
        pkt.payload_len = total - ihl - 8
        if len(l4) >= 8 + 20 + 4:  # the quoted datagram's ports
            inner = l4[8:]
            inner_ihl = (inner[0] & 0x0F) * 4
            pkt.sport, pkt.dport = struct.unpack_from("!HH", inner, inner_ihl)
    return pkt


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


class Capture:
    """Capture on `interface` (in `netns`, if given) while the block runs.

    `ports`: keep only packets to or from these ports (ICMP errors quoting
    them, and IP fragments, are kept too). An empty set keeps everything.
    """

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
        self._realtime_offset = 0.0  # time.time() - time.monotonic()

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
        self._realtime_offset = time.time() - self.started
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()
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
            pkt = parse_frame(bytes(buf[: min(size, _SNAPLEN)]), size, self._when(ancillary))
            if pkt is not None and self._keep(pkt):
                with self._changed:
                    self.packets.append(pkt)
                    self._changed.notify_all()

    def _when(self, ancillary: list[tuple[int, int, bytes]]) -> float:
        """The kernel's timestamp of a packet, on the time.monotonic() scale."""
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                return float(seconds + nanoseconds / 1e9 - self._realtime_offset)
        return time.monotonic()

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


def format_trace(packets: list[Packet], started: float) -> list[str]:
    """tcpdump-like lines; TCP sequence numbers relative to each side's ISN."""
    isn: dict[tuple[str, int], int] = {}
    out = []
    for p in packets:
        stamp = f"{(p.time - started) * 1000:9.3f}ms"
        if p.proto == "tcp":
            here, there = (p.src, p.sport), (p.dst, p.dport)
            if p.has("S"):
                isn[here] = p.seq
            base = isn.setdefault(here, p.seq)
            text = f"{p.src}.{p.sport} > {p.dst}.{p.dport}: Flags [{p.flags}]"
            if p.payload_len or p.has("S") or p.has("F"):
                start = (p.seq - base) & 0xFFFFFFFF
                end = (start + p.payload_len) & 0xFFFFFFFF
                text += f", seq {start}" + (f":{end}" if p.payload_len else "")
            if p.tcp_flags & 0x10:
                text += f", ack {(p.ack - isn.get(there, p.ack)) & 0xFFFFFFFF}"
            text += f", win {p.window}"
            if p.options and p.has("S"):
                text += f", options [{','.join(p.options)}]"
            text += f", length {p.payload_len}"
        elif p.proto == "udp":
            text = f"{p.src}.{p.sport} > {p.dst}.{p.dport}: UDP, length {p.payload_len}"
            if p.more_fragments:
                text += f" (frag id {p.ip_id}, offset 0, more fragments)"
        elif p.proto == "icmp":
            text = f"{p.src} > {p.dst}: ICMP type {p.icmp_type} code {p.icmp_code}"
            if p.icmp_type == 3 and p.icmp_code == 3:
                text += f" (udp port {p.dport} unreachable)"
            elif (p.icmp_type, p.icmp_code) in _ICMP_NAMES:
                text += f" ({_ICMP_NAMES[p.icmp_type, p.icmp_code]})"
        elif p.proto == "ip-fragment":
            more = ", more fragments" if p.more_fragments else ""
            text = (
                f"{p.src} > {p.dst}: IP fragment id {p.ip_id}, offset {p.fragment_offset}"
                f", length {p.payload_len}{more}"
            )
        else:
            text = f"{p.src} > {p.dst}: proto {p.proto}"
        out.append(f"{stamp} IP {text} (frame {p.frame_len})")
    return out
