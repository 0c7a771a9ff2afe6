"""IPv4, TCP, UDP and ICMP headers, read and written: bytes only, no sockets.

The capture (lab/capture.py) hands every frame it reads to
parse_frame(), which never raises: the interface may carry anything, and an
exception would end the capture thread and silently lose the packets an
experiment waits for. Experiments that forge what a kernel would not send (a
segment for no connection, a SYN without options, a datagram missing a
fragment) build it with the functions at the end, for a raw socket.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

ETHERNET_HEADER = 14
IPV4_HEADER = 20  # without options
TCP_HEADER = 20  # without options
UDP_HEADER = 8
ETHERTYPE_IPV4 = b"\x08\x00"
PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp"}
FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
DONT_FRAGMENT, MORE_FRAGMENTS, OFFSET_MASK = 0x4000, 0x2000, 0x1FFF
_TCP_FLAG_LETTERS = (("F", FIN), ("S", SYN), ("R", RST), ("P", PSH), ("U", URG))
# (type, code) -> what RFC 792 calls it
_ICMP_NAMES: dict[tuple[int | None, int | None], str] = {
    (0, 0): "echo reply",
    (3, 4): "fragmentation needed and DF set",
    (8, 0): "echo request",
    (11, 0): "time exceeded in transit",
    (11, 1): "fragment reassembly time exceeded",
}


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
    #: the frame's bytes as captured (at most the capture's snap length), for pcap files
    data: bytes = field(default=b"", repr=False, compare=False)
    #: the kernel's receive time, ns since the epoch (0: not from a capture)
    time_ns: int = field(default=0, repr=False, compare=False)

    @property
    def flags(self) -> str:
        """tcpdump's flag string: 'S', 'S.', '.', 'P.', 'F.', 'R', 'R.'."""
        letters = "".join(ch for ch, bit in _TCP_FLAG_LETTERS if self.tcp_flags & bit)
        return letters + ("." if self.tcp_flags & ACK else "")

    def has(self, letter: str) -> bool:
        return letter in self.flags


# -- reading --------------------------------------------------------------------------
def parse_frame(frame: bytes, frame_len: int, when: float) -> Packet | None:
    """An Ethernet frame carrying IPv4, decoded; None for anything else.

    `frame` may be cut short (the capture keeps the first 256 bytes):
    lengths come from the headers and `frame_len`, never from len(frame).
    A header too short or inconsistent to read gives None, or a Packet
    without the fields that could not be read.
    """
    if len(frame) < ETHERNET_HEADER + IPV4_HEADER or frame[12:14] != ETHERTYPE_IPV4:
        return None
    ip = frame[ETHERNET_HEADER:]
    version, ihl = ip[0] >> 4, (ip[0] & 0x0F) * 4
    if version != 4 or ihl < IPV4_HEADER or len(ip) < ihl:
        return None
    total, ident, frag = struct.unpack_from("!HHH", ip, 2)
    offset = (frag & OFFSET_MASK) * 8
    pkt = Packet(
        time=when,
        frame_len=frame_len,
        src=socket.inet_ntoa(ip[12:16]),
        dst=socket.inet_ntoa(ip[16:20]),
        proto=PROTOCOL_NAMES.get(ip[9], str(ip[9])),
        ip_header_len=ihl,
        ip_total_len=total,
        ip_id=ident,
        dont_fragment=bool(frag & DONT_FRAGMENT),
        more_fragments=bool(frag & MORE_FRAGMENTS),
        fragment_offset=offset,
        data=frame,
    )
    data_len = max(0, total - ihl)
    if offset:  # a later fragment: no transport header of its own
        pkt.proto = "ip-fragment"
        pkt.payload_len = data_len
        return pkt
    transport = ip[ihl:]
    if pkt.proto == "tcp" and len(transport) >= TCP_HEADER:
        _read_tcp(pkt, transport, data_len)
    elif pkt.proto == "udp" and len(transport) >= UDP_HEADER:
        pkt.sport, pkt.dport, udp_len = struct.unpack_from("!HHH", transport)
        pkt.payload_len = max(0, udp_len - UDP_HEADER)
    elif pkt.proto == "icmp" and len(transport) >= 2:
        _read_icmp(pkt, transport, data_len)
    return pkt


def _read_tcp(pkt: Packet, tcp: bytes, data_len: int) -> None:
    pkt.sport, pkt.dport, pkt.seq, pkt.ack = struct.unpack_from("!HHII", tcp)
    pkt.tcp_header_len = (tcp[12] >> 4) * 4
    pkt.tcp_flags = tcp[13]
    pkt.window = struct.unpack_from("!H", tcp, 14)[0]
    pkt.payload_len = max(0, data_len - pkt.tcp_header_len)
    pkt.mss_option, pkt.options = tcp_options(tcp[TCP_HEADER : pkt.tcp_header_len])


def _read_icmp(pkt: Packet, icmp: bytes, data_len: int) -> None:
    """Type and code; for an error, the ports of the datagram it quotes."""
    pkt.icmp_type, pkt.icmp_code = icmp[0], icmp[1]
    pkt.payload_len = max(0, data_len - 8)
    quoted = icmp[8:]
    if len(quoted) >= IPV4_HEADER:
        quoted_ihl = (quoted[0] & 0x0F) * 4
        if quoted_ihl >= IPV4_HEADER and len(quoted) >= quoted_ihl + 4:
            pkt.sport, pkt.dport = struct.unpack_from("!HH", quoted, quoted_ihl)


def tcp_options(data: bytes) -> tuple[int | None, list[str]]:
    """The MSS option's value (if any) and tcpdump's names for every option."""
    mss, names, i = None, [], 0
    while i < len(data):
        kind = data[i]
        if kind == 0:  # end of options
            break
        if kind == 1:
            names.append("nop")
            i += 1
            continue
        if i + 1 >= len(data) or data[i + 1] < 2:  # no room for a length, or a bad one
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


def format_trace(packets: list[Packet], started: float) -> list[str]:
    """tcpdump-like lines; TCP sequence numbers relative to each side's ISN."""
    isn: dict[tuple[str, int], int] = {}
    out = []
    for p in packets:
        stamp = f"{(p.time - started) * 1000:9.3f}ms"
        if p.proto == "tcp":
            text = _tcp_line(p, isn)
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


def _tcp_line(p: Packet, isn: dict[tuple[str, int], int]) -> str:
    here, there = (p.src, p.sport), (p.dst, p.dport)
    if p.has("S"):
        isn[here] = p.seq
    base = isn.setdefault(here, p.seq)
    text = f"{p.src}.{p.sport} > {p.dst}.{p.dport}: Flags [{p.flags}]"
    if p.payload_len or p.has("S") or p.has("F"):
        start = (p.seq - base) & 0xFFFFFFFF
        end = (start + p.payload_len) & 0xFFFFFFFF
        text += f", seq {start}" + (f":{end}" if p.payload_len else "")
    if p.tcp_flags & ACK:
        text += f", ack {(p.ack - isn.get(there, p.ack)) & 0xFFFFFFFF}"
    text += f", win {p.window}"
    if p.options and p.has("S"):
        text += f", options [{','.join(p.options)}]"
    return text + f", length {p.payload_len}"


# -- writing --------------------------------------------------------------------------
def internet_checksum(data: bytes) -> int:
    """RFC 1071: the ones' complement of the ones' complement sum of 16-bit words."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def ipv4_header(
    src: str, dst: str, proto: int, payload_len: int, ident: int = 0, fragment: int = 0
) -> bytes:
    """20 bytes, TTL 64, checksum 0: the kernel fills it in for a raw IPPROTO_RAW socket.

    `fragment`: the flags and offset field (DONT_FRAGMENT, MORE_FRAGMENTS | offset // 8).
    """
    return struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, IPV4_HEADER + payload_len, ident, fragment, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip


def tcp_segment(
    src: tuple[str, int],
    dst: tuple[str, int],
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    window: int = 65535,
    options: bytes = b"",
) -> bytes:
    """A TCP header (+ options, padded to 32 bits, + payload), checksummed over
    the IPv4 pseudo-header: what a raw IPPROTO_TCP socket sends as it is."""
    options += b"\0" * (-len(options) % 4)
    header_len = TCP_HEADER + len(options)
    header = struct.pack(
        "!HHIIBBHHH", src[1], dst[1], seq, ack, (header_len // 4) << 4, flags, window, 0, 0
    )
    header += options
    pseudo = socket.inet_aton(src[0]) + socket.inet_aton(dst[0])
    pseudo += struct.pack("!BBH", 0, socket.IPPROTO_TCP, header_len + len(payload))
    checksum = internet_checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:] + payload


def udp_fragments(
    src: tuple[str, int], dst: tuple[str, int], payload: bytes, ident: int, mtu: int = 1500
) -> list[bytes]:
    """A UDP datagram (checksum 0: none) cut into IPv4 fragments, header
    included, the way a kernel cuts it for `mtu`."""
    piece = (mtu - IPV4_HEADER) // 8 * 8  # fragment offsets count 8-byte units
    data = struct.pack("!HHHH", src[1], dst[1], UDP_HEADER + len(payload), 0) + payload
    fragments = []
    for offset in range(0, len(data), piece):
        chunk = data[offset : offset + piece]
        more = MORE_FRAGMENTS if offset + piece < len(data) else 0
        fragment = more | offset // 8
        header = ipv4_header(src[0], dst[0], socket.IPPROTO_UDP, len(chunk), ident, fragment)
        fragments.append(header + chunk)
    return fragments


def icmp_echo_request(ident: int, sequence: int, payload: bytes) -> bytes:
    """An ICMP echo request (type 8), checksummed."""
    header = struct.pack("!BBHHH", 8, 0, 0, ident, sequence)
    checksum = internet_checksum(header + payload)
    return header[:2] + struct.pack("!H", checksum) + header[4:] + payload
