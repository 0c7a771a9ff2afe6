"""Headers read and written by experiments/packets.py: what the capture
parses must match what was built, and no frame may make the parser raise."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from framelab.lab.packets import (
    ACK,
    FIN,
    MORE_FRAGMENTS,
    PSH,
    SYN,
    Packet,
    format_trace,
    icmp_echo_request,
    internet_checksum,
    ipv4_header,
    parse_frame,
    tcp_segment,
    udp_fragments,
)

ETHERNET = bytes(12) + b"\x08\x00"
A, B = "10.0.0.1", "10.0.0.2"
ports = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)


def frame(ip_packet: bytes) -> bytes:
    return ETHERNET + ip_packet


def tcp_frame(segment: bytes, src: str = A, dst: str = B) -> bytes:
    return frame(ipv4_header(src, dst, socket.IPPROTO_TCP, len(segment)) + segment)


def pseudo_header(src: str, dst: str, length: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, length)


# -- the checksum ---------------------------------------------------------------------
def test_checksum_of_rfc_1071s_example() -> None:
    assert internet_checksum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7") == 0x220D


@given(st.binary(max_size=200).filter(lambda b: len(b) % 2 == 0))
def test_data_followed_by_its_checksum_sums_to_zero(data: bytes) -> None:
    """How a receiver verifies: the sum over data and checksum is all ones."""
    assert internet_checksum(data + struct.pack("!H", internet_checksum(data))) == 0


# -- TCP ------------------------------------------------------------------------------
tcp_options = st.sampled_from(
    [
        (b"", None, []),
        (b"\x02\x04\x05\xb4", 1460, ["mss 1460"]),
        (b"\x02\x04\x02\x18\x01\x03\x03\x07", 536, ["mss 536", "nop", "wscale 7"]),
        (b"\x04\x02\x08\x0a" + struct.pack("!II", 5, 0), None, ["sackOK", "TS val 5 ecr 0"]),
    ]
)


@given(
    sport=ports,
    dport=ports,
    seq=u32,
    ack=u32,
    flags=st.integers(0, 0x3F),
    window=st.integers(0, 65535),
    payload=st.binary(max_size=150),
    options=tcp_options,
)
def test_a_built_tcp_segment_parses_back_to_its_fields(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    payload: bytes,
    options: tuple[bytes, int | None, list[str]],
) -> None:
    raw_options, mss, names = options
    segment = tcp_segment((A, sport), (B, dport), seq, ack, flags, payload, window, raw_options)
    assert internet_checksum(pseudo_header(A, B, len(segment)) + segment) == 0

    pkt = parse_frame(tcp_frame(segment), 14 + 20 + len(segment), when=1.0)
    assert pkt is not None and pkt.proto == "tcp"
    assert (pkt.src, pkt.sport, pkt.dst, pkt.dport) == (A, sport, B, dport)
    assert (pkt.seq, pkt.ack, pkt.tcp_flags, pkt.window) == (seq, ack, flags, window)
    assert pkt.tcp_header_len == 20 + len(raw_options)
    assert pkt.payload_len == len(payload)
    assert (pkt.mss_option, pkt.options) == (mss, names)


def test_flag_strings_read_like_tcpdump() -> None:
    def flags(value: int) -> str:
        pkt = parse_frame(tcp_frame(tcp_segment((A, 1), (B, 2), 0, 0, value)), 54, 0.0)
        assert pkt is not None
        return pkt.flags

    assert [flags(f) for f in (SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK)] == [
        "S",
        "S.",
        ".",
        "P.",
        "F.",
    ]


def test_a_frame_cut_at_the_snap_length_keeps_its_lengths() -> None:
    """The capture reads 256 bytes of each frame: sizes come from the headers."""
    segment = tcp_segment((A, 1), (B, 2), 0, 0, ACK, bytes(1460))
    whole = tcp_frame(segment)
    pkt = parse_frame(whole[:256], len(whole), 0.0)
    assert pkt is not None
    assert (pkt.frame_len, pkt.ip_total_len, pkt.payload_len) == (1514, 1500, 1460)


# -- UDP and fragments ----------------------------------------------------------------
@given(size=st.integers(0, 5000), mtu=st.sampled_from([576, 1500, 9000]), ident=ports)
def test_udp_fragments_carry_one_id_and_cover_the_datagram_once(
    size: int, mtu: int, ident: int
) -> None:
    pieces = udp_fragments((A, 40000), (B, 7004), bytes(size), ident, mtu)
    parsed = [parse_frame(frame(p), 14 + len(p), 0.0) for p in pieces]
    assert all(p is not None for p in parsed)
    packets = [p for p in parsed if p is not None]
    assert {p.ip_id for p in packets} == {ident}
    assert [p.ip_total_len for p in packets] == [len(piece) for piece in pieces]
    assert max(len(piece) for piece in pieces) <= mtu
    first, *rest = packets
    assert first.proto == "udp" and (first.sport, first.dport) == (40000, 7004)
    assert first.payload_len == size
    assert [p.proto for p in rest] == ["ip-fragment"] * len(rest)
    assert [p.more_fragments for p in packets] == [True] * len(rest) + [False]
    offset = 0  # each fragment starts where the one before ended
    for p in packets:
        assert p.fragment_offset == offset
        offset += p.ip_total_len - p.ip_header_len
    assert offset == 8 + size


def test_a_datagram_that_fits_is_not_fragmented() -> None:
    [piece] = udp_fragments((A, 1), (B, 2), b"x", 7)
    pkt = parse_frame(frame(piece), 43, 0.0)
    assert pkt is not None and pkt.proto == "udp" and pkt.payload_len == 1
    assert not struct.unpack_from("!H", piece, 6)[0] & MORE_FRAGMENTS


# -- ICMP -----------------------------------------------------------------------------
def test_an_echo_request_is_checksummed_and_parses() -> None:
    message = icmp_echo_request(ident=1, sequence=1, payload=b"")
    # type 8, code 0, id 1, seq 1: 0x0800 + 0x0001 + 0x0001, complemented
    assert message == bytes([8, 0, 0xF7, 0xFD, 0, 1, 0, 1])
    message = icmp_echo_request(ident=7, sequence=3, payload=b"framelab")
    assert internet_checksum(message) == 0
    pkt = parse_frame(frame(ipv4_header(A, B, socket.IPPROTO_ICMP, len(message)) + message), 0, 0)
    assert pkt is not None and (pkt.proto, pkt.icmp_type, pkt.icmp_code) == ("icmp", 8, 0)


def test_an_icmp_error_names_the_ports_of_the_datagram_it_quotes() -> None:
    quoted = ipv4_header(A, B, socket.IPPROTO_UDP, 9) + struct.pack("!HHHH", 5353, 9, 9, 0)
    error = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + quoted
    pkt = parse_frame(frame(ipv4_header(B, A, socket.IPPROTO_ICMP, len(error)) + error), 70, 0.0)
    assert pkt is not None and (pkt.icmp_type, pkt.icmp_code) == (3, 3)
    assert (pkt.sport, pkt.dport) == (5353, 9)
    assert "(udp port 9 unreachable)" in format_trace([pkt], 0.0)[0]


# -- anything at all ------------------------------------------------------------------
ipv4_looking = st.builds(  # IPv4's version nibble and a transport the parser reads on
    lambda version_ihl, head, protocol, rest: (
        ETHERNET + bytes([version_ihl]) + head + bytes([protocol]) + rest
    ),
    st.integers(0x40, 0x4F),
    st.binary(min_size=8, max_size=8),
    st.sampled_from([1, 6, 17, 41]),
    st.binary(min_size=10, max_size=120),
)


@given(st.one_of(st.binary(max_size=300), ipv4_looking), st.integers(0, 70000))
def test_no_frame_makes_the_parser_raise(data: bytes, frame_len: int) -> None:
    """Whatever the interface carries: a Packet or None, never an exception
    (it would end the capture thread) and never a negative length."""
    pkt = parse_frame(data, frame_len, 0.0)
    assert pkt is None or isinstance(pkt, Packet)
    if pkt is not None:
        assert pkt.payload_len >= 0
        assert pkt.ip_header_len >= 20
        format_trace([pkt], 0.0)


def test_what_is_not_ipv4_is_none() -> None:
    segment = tcp_segment((A, 1), (B, 2), 0, 0, SYN)
    ip = ipv4_header(A, B, socket.IPPROTO_TCP, len(segment)) + segment
    assert parse_frame(bytes(12) + b"\x86\xdd" + ip, 100, 0.0) is None  # IPv6 ethertype
    assert parse_frame(ETHERNET + b"\x65" + ip[1:], 100, 0.0) is None  # version 6
    assert parse_frame(ETHERNET + b"\x44" + ip[1:], 100, 0.0) is None  # IHL under 20 bytes
    assert parse_frame(ETHERNET + b"\x4f" + ip[1:30], 100, 0.0) is None  # header cut short


# -- the trace ------------------------------------------------------------------------
def test_the_trace_numbers_each_side_from_its_own_isn() -> None:
    client, server = (A, 40000), (B, 7)
    segments = [
        (client, server, 1000, 0, SYN, b""),
        (server, client, 5000, 1001, SYN | ACK, b""),
        (client, server, 1001, 5001, ACK, b""),
        (client, server, 1001, 5001, PSH | ACK, b"hello"),
        (server, client, 5001, 1006, FIN | ACK, b""),
    ]
    packets = []
    for i, (src, dst, seq, ack, flags, payload) in enumerate(segments):
        segment = tcp_segment(src, dst, seq, ack, flags, payload)
        pkt = parse_frame(tcp_frame(segment, src[0], dst[0]), 54 + len(payload), i / 1000)
        assert pkt is not None
        packets.append(pkt)
    lines = [line.split(" IP ", 1)[1] for line in format_trace(packets, 0.0)]
    assert lines == [
        "10.0.0.1.40000 > 10.0.0.2.7: Flags [S], seq 0, win 65535, length 0 (frame 54)",
        "10.0.0.2.7 > 10.0.0.1.40000: Flags [S.], seq 0, ack 1, win 65535, length 0 (frame 54)",
        "10.0.0.1.40000 > 10.0.0.2.7: Flags [.], ack 1, win 65535, length 0 (frame 54)",
        "10.0.0.1.40000 > 10.0.0.2.7: Flags [P.], seq 1:6, ack 1, win 65535, length 5 (frame 59)",
        "10.0.0.2.7 > 10.0.0.1.40000: Flags [F.], seq 1, ack 6, win 65535, length 0 (frame 54)",
    ]
    assert format_trace(packets, 0.0)[1].startswith("    1.000ms IP ")


def test_icmp_messages_are_named_by_type_and_code() -> None:
    def line(icmp_type: int, code: int) -> str:
        message = bytes([icmp_type, code]) + bytes(6)
        ip = ipv4_header(B, A, socket.IPPROTO_ICMP, len(message)) + message
        pkt = parse_frame(frame(ip), 42, 0.0)
        assert pkt is not None
        return format_trace([pkt], 0.0)[0]

    assert line(11, 0).endswith("(time exceeded in transit) (frame 42)")
    assert line(11, 1).endswith("(fragment reassembly time exceeded) (frame 42)")
    assert line(0, 0).endswith("(echo reply) (frame 42)")
