"""The PROXY protocol parser: every family, any chunking, truncation, garbage, limits."""

from __future__ import annotations

import itertools
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framing.proxy_protocol import (
    DEFAULT_MAX_V2_LENGTH,
    PP2_TYPE_CRC32C,
    V1_MAX_LENGTH,
    V2_FIXED_LENGTH,
    V2_SIGNATURE,
    InetAddress,
    ProxyAddress,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
    Transport,
    UnixAddress,
    crc32c,
    v1_header,
    v2_header,
)

ports = st.integers(min_value=0, max_value=0xFFFF)
ipv4 = st.ip_addresses(v=4).map(lambda a: InetAddress(str(a), 0))
ipv6 = st.ip_addresses(v=6).map(lambda a: InetAddress(str(a), 0))


def with_port(address: st.SearchStrategy[InetAddress]) -> st.SearchStrategy[InetAddress]:
    return st.builds(lambda a, p: InetAddress(a.host, p), address, ports)


inet_pairs = st.one_of(
    st.tuples(with_port(ipv4), with_port(ipv4)), st.tuples(with_port(ipv6), with_port(ipv6))
)
unix_paths = st.binary(max_size=108).map(lambda b: UnixAddress(b.split(b"\0", 1)[0]))
#: TLVs of any type but CRC32C, which the parser verifies (its own tests build valid ones)
tlv_types = st.integers(min_value=0, max_value=255).filter(lambda t: t != PP2_TYPE_CRC32C)
tlvs = st.lists(st.tuples(tlv_types, st.binary(max_size=40)), max_size=4).map(tuple)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """A valid header of any version, command and family, and what it must parse to."""
    kind = draw(st.sampled_from(["v1", "v1-unknown", "v2-inet", "v2-unix", "v2-unspec", "local"]))
    if kind == "v1":
        src, dst = draw(inet_pairs)
        family = "TCP4" if ":" not in src.host else "TCP6"
        return v1_header(src, dst), {"version": 1, "family": family, "client": src, "dest": dst}
    if kind == "v1-unknown":
        return v1_header(None, None), {"version": 1, "family": "UNSPEC", "client": None}
    extensions = draw(tlvs)
    if kind == "local":
        wire = v2_header("local", tlvs=extensions)
        return wire, {"version": 2, "command": "local", "client": None}
    if kind == "v2-unspec":
        return v2_header("proxy"), {"version": 2, "family": "UNSPEC", "client": None}
    transport: Transport = draw(st.sampled_from(["stream", "dgram"]))
    src_dst: tuple[ProxyAddress, ProxyAddress]
    if kind == "v2-inet":
        inet = draw(inet_pairs)
        src_dst = inet
        family = "TCP4" if ":" not in inet[0].host else "TCP6"
    else:
        src_dst = (draw(unix_paths), draw(unix_paths))
        family = "UNIX"
    wire = v2_header("proxy", *src_dst, transport=transport, tlvs=extensions)
    expected = {
        "version": 2,
        "family": family,
        "transport": transport,
        "client": src_dst[0],
        "dest": src_dst[1],
        "tlvs": extensions,
    }
    return wire, expected


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def parse_chunks(chunks: list[bytes]) -> tuple[ProxyHeader, bytes]:
    """Feed until the header completes; return it and every byte after it."""
    parser = ProxyHeaderParser()
    for index, chunk in enumerate(chunks):
        header = parser.feed(chunk)
        if header is not None:
            return header, parser.tail + b"".join(chunks[index + 1 :])
    parser.end_of_stream()
    raise AssertionError("end_of_stream() accepted an incomplete header")


def parse_one(wire: bytes) -> ProxyHeader:
    header, rest = parse_chunks([wire])
    assert rest == b""
    return header


def check(header: ProxyHeader, expected: dict[str, object], wire: bytes) -> None:
    assert header.length == len(wire)
    assert header.version == expected["version"]
    assert header.client == expected["client"]
    assert header.command == expected.get("command", "proxy")
    for key, attribute in [("family", "family"), ("transport", "transport"), ("tlvs", "tlvs")]:
        if key in expected:
            assert getattr(header, attribute) == expected[key]
    if "dest" in expected:
        assert header.destination == expected["dest"]


@given(headers(), st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_gives_the_header_and_leaves_the_stream_intact(
    built: tuple[bytes, dict[str, object]], stream: bytes, cuts: list[int]
) -> None:
    wire, expected = built
    header, rest = parse_chunks(split(wire + stream, cuts))
    check(header, expected, wire)
    assert rest == stream


@given(headers())
def test_one_byte_chunks(built: tuple[bytes, dict[str, object]]) -> None:
    wire, expected = built
    header, rest = parse_chunks([wire[i : i + 1] for i in range(len(wire))])
    check(header, expected, wire)
    assert rest == b""


@given(headers(), st.data())
def test_every_truncation_is_reported_with_what_arrived(
    built: tuple[bytes, dict[str, object]], data: st.DataObject
) -> None:
    wire, _ = built
    cut = data.draw(st.integers(min_value=0, max_value=len(wire) - 1))
    parser = ProxyHeaderParser()
    assert parser.feed(wire[:cut]) is None
    with pytest.raises(ProxyHeaderError) as caught:
        parser.end_of_stream()
    assert caught.value.kind == "truncated"
    assert caught.value.received == cut
    assert f"{cut} header bytes received" in str(caught.value)


@given(st.binary(min_size=1, max_size=400), st.lists(st.integers(min_value=0), max_size=10))
def test_garbage_is_refused_or_parsed_never_buffered_past_the_limit(
    junk: bytes, cuts: list[int]
) -> None:
    parser = ProxyHeaderParser()
    try:
        for chunk in split(junk, cuts):
            if parser.feed(chunk) is not None:
                break
    except ProxyHeaderError as error:
        assert error.kind in ("garbage", "malformed", "oversized")
        with pytest.raises(ProxyHeaderError) as again:  # the failure is sticky
            parser.feed(b"PROXY UNKNOWN\r\n")
        assert again.value is error
    assert parser.received <= max(V1_MAX_LENGTH, V2_FIXED_LENGTH + DEFAULT_MAX_V2_LENGTH)


@given(st.binary(min_size=1).filter(lambda b: b[0] not in b"P\r"))
def test_a_wrong_first_byte_is_garbage_at_once(junk: bytes) -> None:
    with pytest.raises(ProxyHeaderError) as caught:
        ProxyHeaderParser().feed(junk)
    assert caught.value.kind == "garbage"
    assert caught.value.received == 1


@given(st.integers(min_value=0, max_value=11), st.integers(min_value=0, max_value=255))
def test_a_wrong_signature_byte_is_garbage_as_soon_as_it_arrives(at: int, byte: int) -> None:
    if byte == V2_SIGNATURE[at]:
        return
    signature = bytearray(V2_SIGNATURE)
    signature[at] = byte
    parser = ProxyHeaderParser()
    if at == 0 and byte == ord("P"):
        return  # that is v1's first byte
    with pytest.raises(ProxyHeaderError) as caught:
        parser.feed(bytes(signature[: at + 1]))
    assert caught.value.kind == "garbage"


def test_the_specification_examples() -> None:
    header = parse_one(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n")
    assert (header.version, header.family, header.transport) == (1, "TCP4", "stream")
    assert header.client == InetAddress("192.168.0.1", 56324)
    assert header.destination == InetAddress("192.168.0.11", 443)
    assert str(header.client) == "192.168.0.1:56324"
    header = parse_one(b"PROXY TCP6 ::1 2001:db8::1 1 65535\r\n")
    assert str(header.client) == "[::1]:1"
    # the worst case the specification sizes its buffer for: 107 bytes
    longest = b"PROXY UNKNOWN " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n"
    assert len(longest) == V1_MAX_LENGTH
    assert parse_one(longest).client is None
    assert parse_one(b"PROXY UNKNOWN\r\n").family == "UNSPEC"


def test_v2_bytes_written_by_hand() -> None:
    """Independent of v2_header: the layout spelled out from the specification."""
    local = V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
    header = parse_one(local)
    assert (header.command, header.client, header.length) == ("local", None, 16)
    body = bytes([127, 0, 0, 2, 10, 0, 0, 1]) + struct.pack("!HH", 40000, 7000)
    body += bytes([0x04, 0x00, 0x02, 0xAA, 0xBB])  # a NOOP TLV
    inet = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
    header = parse_one(inet)
    assert header.client == InetAddress("127.0.0.2", 40000)
    assert header.destination == InetAddress("10.0.0.1", 7000)
    assert header.tlvs == ((0x04, b"\xaa\xbb"),)
    assert v2_header("proxy", header.client, header.destination, tlvs=header.tlvs) == inet


def test_local_ignores_the_address_block() -> None:
    """LOCAL: the receiver discards the block, family included (the specification)."""
    wire = V2_SIGNATURE + bytes([0x20, 0x7F]) + struct.pack("!H", 5) + b"\xff" * 5
    header = parse_one(wire)
    assert (header.command, header.client) == ("local", None)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "port '65536'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "port '01'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "port '-1'"),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", "TCP4 address '::1'"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "TCP6 address '1.2.3.4'"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "TCP6 address"),
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "TCP4 address"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "7 space-separated fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "5 space-separated fields"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol 'UDP4'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF, not CRLF"),
    ],
)
def test_malformed_v1_lines_name_the_field(line: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError) as caught:
        ProxyHeaderParser().feed(line)
    assert caught.value.kind == "malformed"
    assert reason in str(caught.value)


def test_a_v1_line_without_crlf_is_oversized_at_107_bytes() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15)) is None
    with pytest.raises(ProxyHeaderError) as caught:
        parser.feed(b"x" + b"\r\n")
    assert caught.value.kind == "oversized"
    assert parser.received == V1_MAX_LENGTH


def v2(version_command: int, family: int, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([version_command, family]) + struct.pack("!H", size) + body


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (v2(0x11, 0x11, bytes(12)), "version nibble is 1"),
        (v2(0x22, 0x11, bytes(12)), "command 2"),
        (v2(0x21, 0x13, bytes(12)), "family/transport byte 0x13"),
        (v2(0x21, 0x41, bytes(12)), "family/transport byte 0x41"),
        (v2(0x21, 0x11, bytes(8)), "TCP4 addresses need 12 bytes, the header has 8"),
        (v2(0x21, 0x21, bytes(12)), "TCP6 addresses need 36 bytes"),
        (v2(0x21, 0x31, bytes(200)), "UNIX addresses need 216 bytes"),
        (v2(0x21, 0x11, bytes(12) + b"\x01\x00\x05ab"), "TLV 0x01 declares 5 bytes, 2 remain"),
        (v2(0x21, 0x11, bytes(12) + b"\x01\x00"), "TLV header cut short: 2 of 3"),
    ],
)
def test_malformed_v2_headers_name_the_field(wire: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError) as caught:
        ProxyHeaderParser().feed(wire)
    assert caught.value.kind == "malformed"
    assert reason in str(caught.value)


def test_an_oversized_v2_header_is_refused_before_its_body_arrives() -> None:
    parser = ProxyHeaderParser(max_v2_length=100)
    with pytest.raises(ProxyHeaderError) as caught:
        parser.feed(v2(0x21, 0x11, b"", length=101))  # the 16 fixed bytes only
    assert caught.value.kind == "oversized"
    assert "declares 101 bytes after its 16, over the limit of 100" in str(caught.value)
    assert parser.received == V2_FIXED_LENGTH
    at_the_limit = v2(0x21, 0x11, bytes(12) + b"\x04\x00\x55" + bytes(85))
    assert parse_chunks([at_the_limit])[0].length == 116


def test_a_large_chunk_is_not_copied_into_the_parser() -> None:
    stream = b"\x00\x00\x00\x05hello" * 100_000
    parser = ProxyHeaderParser()
    header = parser.feed(v1_header(InetAddress("10.0.0.1", 1), InetAddress("10.0.0.2", 2)) + stream)
    assert header is not None
    assert parser.tail == stream
    assert parser.received == 0


def test_the_error_names_the_peer_when_the_adapter_sets_it() -> None:
    with pytest.raises(ProxyHeaderError) as caught:
        ProxyHeaderParser().feed(b"\x00\x00\x00\x05hello")
    caught.value.peer = "10.0.0.9:4000"
    assert str(caught.value).endswith("(peer 10.0.0.9:4000)")
    assert "neither a PROXY v1 nor a v2 signature" in str(caught.value)


def test_feeding_after_the_header_is_a_programming_error() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN\r\n") is not None
    parser.end_of_stream()  # complete: nothing to report
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


def test_writers_refuse_mixed_address_kinds() -> None:
    with pytest.raises(ValueError, match="same IP version"):
        v1_header(InetAddress("1.2.3.4", 1), InetAddress("::1", 2))
    with pytest.raises(ValueError, match="same kind"):
        v2_header("proxy", InetAddress("1.2.3.4", 1), UnixAddress(b"/x"))


def test_the_readme_example_runs() -> None:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), re.S)
    [example] = [b for b in blocks if "ProxyHeaderParser()" in b]
    exec(compile(example, "README.md", "exec"), {})  # its asserts check the parse


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check input (RFC 3720, B.4)


@given(inet_pairs, st.data())
def test_a_checksummed_header_parses_and_any_changed_address_byte_is_refused(
    pair: tuple[InetAddress, InetAddress], data: st.DataObject
) -> None:
    wire = v2_header("proxy", *pair, checksum=True)
    header = parse_one(wire)
    assert header.client == pair[0] and header.tlvs[-1][0] == 0x03
    addresses = 12 if ":" not in pair[0].host else 36
    at = data.draw(st.integers(min_value=16, max_value=16 + addresses - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    tampered = bytearray(wire)
    tampered[at] ^= flip
    with pytest.raises(ProxyHeaderError, match="CRC32C does not match"):
        ProxyHeaderParser().feed(bytes(tampered))
