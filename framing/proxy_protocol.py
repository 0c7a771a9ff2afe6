"""Sans-IO PROXY protocol (v1 text and v2 binary): bytes in, the client's address out.

A load balancer in TCP mode (HAProxy's `send-proxy` / `send-proxy-v2`) opens
its own connection to the server, so the socket's peer is the balancer. It
therefore writes one PROXY header first, naming the original connection's
source and destination; the framed stream starts right after it. This module
reads that header (ProxyHeaderParser) and writes one (v1_header, v2_header),
following the specification in HAProxy's doc/proxy-protocol.txt:

- v1: ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`` or ``PROXY UNKNOWN...\\r\\n``,
  at most 107 bytes with the CRLF.
- v2: a 12-byte signature, version/command, family/transport, a 16-bit length,
  then the addresses (INET 12 bytes, INET6 36, UNIX 216, UNSPEC none) and TLVs.
  LOCAL (the balancer's own health checks) carries no client: the
  connection's own endpoints apply. A CRC-32C TLV, when present, is checked.

Cost bound: at most `max_length` + 16 bytes are ever buffered (107 for v1),
whatever the chunk sizes, and each byte is scanned a bounded number of times,
so a peer that sends garbage or trickles a header one byte at a time costs
O(header) memory and time. Only the bytes that can belong to the header are
taken from a chunk; the rest (the first frames) is handed back untouched as
`tail`. Garbage is refused as soon as a byte contradicts both signatures, an
oversized v2 header as soon as its length field is in, before its body is
buffered. Errors are sticky: after one, every call raises it again.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from framing.errors import FramingError

V1_PREFIX = b"PROXY "
#: the longest v1 line the specification allows, CRLF included
V1_MAX_LENGTH = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: signature, version/command, family/transport, 16-bit length
V2_FIXED_LENGTH = 16
#: largest v2 address block + TLVs accepted by default: the addresses need at
#: most 216 bytes; HAProxy's TLVs (unique id, SSL details, authority) fit easily
DEFAULT_MAX_V2_LENGTH = 2048

#: the TLV carrying a CRC-32C of the whole header (HAProxy: proxy-v2-options crc32c)
PP2_TYPE_CRC32C = 0x03

_V2_FIXED = struct.Struct("!12sBBH")
_INET = struct.Struct("!4s4sHH")
_INET6 = struct.Struct("!16s16sHH")
_UNIX = struct.Struct("!108s108s")
_TLV = struct.Struct("!BH")

Command = Literal["local", "proxy"]
Family = Literal["TCP4", "TCP6", "UNIX", "UNSPEC"]
Transport = Literal["stream", "dgram", "unspec"]
ErrorKind = Literal["garbage", "malformed", "oversized", "truncated"]

_V2_COMMANDS: dict[int, Command] = {0x0: "local", 0x1: "proxy"}
#: the only family/transport bytes the specification allows
_V2_FAMILIES: dict[int, tuple[Family, Transport]] = {
    0x00: ("UNSPEC", "unspec"),
    0x11: ("TCP4", "stream"),
    0x12: ("TCP4", "dgram"),
    0x21: ("TCP6", "stream"),
    0x22: ("TCP6", "dgram"),
    0x31: ("UNIX", "stream"),
    0x32: ("UNIX", "dgram"),
}
_FAMILY_BYTES = {names: byte for byte, names in _V2_FAMILIES.items()}
_ADDRESS_SIZES: dict[Family, int] = {
    "UNSPEC": 0,
    "TCP4": _INET.size,
    "TCP6": _INET6.size,
    "UNIX": _UNIX.size,
}


class ProxyHeaderError(FramingError):
    """The connection did not start with a valid PROXY header.

    `kind` says how: "garbage" (neither signature), "malformed" (a field the
    specification does not allow), "oversized" (longer than the limit), or
    "truncated" (the stream ended inside it); `received` is how many header
    bytes had arrived.
    """

    def __init__(self, kind: ErrorKind, reason: str, received: int) -> None:
        super().__init__(kind, reason, received)
        self.kind = kind
        self.reason = reason
        self.received = received

    def describe(self) -> str:
        return (
            f"bad PROXY protocol header ({self.kind}): {self.reason} "
            f"({self.received} header bytes received)"
        )


#: builds the error for the bytes received so far
_Fail = Callable[[ErrorKind, str], ProxyHeaderError]


@dataclass(frozen=True)
class InetAddress:
    """An IPv4 or IPv6 address and port, printed as logs name peers."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class UnixAddress:
    """A UNIX socket path (the NUL padding removed)."""

    path: bytes

    def __str__(self) -> str:
        return "unix:" + self.path.decode("utf-8", "backslashreplace")


ProxyAddress = InetAddress | UnixAddress


@dataclass(frozen=True)
class ProxyHeader:
    """What a PROXY header said about the original connection."""

    version: int
    command: Command
    family: Family
    transport: Transport
    source: ProxyAddress | None
    destination: ProxyAddress | None
    #: v2 type-length-value extensions, in order (type, value)
    tlvs: tuple[tuple[int, bytes], ...] = ()
    #: bytes the header took on the wire
    length: int = 0

    @property
    def client(self) -> ProxyAddress | None:
        """The original client, or None when the connection's own peer
        applies (v2 LOCAL, v2 UNSPEC, v1 UNKNOWN)."""
        return self.source if self.command == "proxy" else None


class ProxyHeaderParser:
    """Reads one PROXY header (v1 or v2) from the start of a stream.

    `feed(data)` returns the header once complete (None until then); the
    bytes after it in that chunk are in `tail`, and belong to the protocol
    that follows. `end_of_stream()` raises if the stream ended before the
    header did.
    """

    __slots__ = ("_buf", "_error", "_scanned", "header", "max_v2_length", "tail")

    def __init__(self, max_v2_length: int = DEFAULT_MAX_V2_LENGTH) -> None:
        if not 0 <= max_v2_length <= 0xFFFF:
            raise ValueError("max_v2_length must be 0..65535")
        self.max_v2_length = max_v2_length
        self.header: ProxyHeader | None = None
        self.tail = b""
        self._buf = bytearray()
        self._scanned = 0  # v1: bytes already searched for the line end
        self._error: ProxyHeaderError | None = None

    @property
    def received(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> ProxyHeader | None:
        if self.header is not None:
            raise RuntimeError("the PROXY header is complete; feed the stream's next layer")
        if self._error is not None:
            raise self._error
        try:
            return self._feed(memoryview(data).cast("B"))
        except ProxyHeaderError as error:
            self._error = error
            raise

    def end_of_stream(self) -> None:
        if self.header is not None:
            return
        if self._error is not None:
            raise self._error
        what = "before a PROXY header" if not self._buf else "inside the PROXY header"
        self._error = self._fail("truncated", f"the stream ended {what}")
        raise self._error

    # -- internals -------------------------------------------------------
    def _feed(self, data: memoryview) -> ProxyHeader | None:
        taken = 0
        while taken < len(data):
            want = self._wanted() - len(self._buf)
            chunk = data[taken : taken + want]
            self._buf += chunk
            taken += len(chunk)
            header = self._parse()
            if header is not None:
                self.header = header
                self.tail = bytes(self._buf[header.length :]) + bytes(data[taken:])
                self._buf = bytearray()
                return header
        return None

    def _wanted(self) -> int:
        """How long the header can be, given what has arrived (an upper bound for v1)."""
        buf = self._buf
        if buf[:1] == V2_SIGNATURE[:1]:
            if len(buf) < V2_FIXED_LENGTH:
                return V2_FIXED_LENGTH
            return V2_FIXED_LENGTH + int.from_bytes(buf[14:16], "big")
        return V1_MAX_LENGTH if buf else 1

    def _parse(self) -> ProxyHeader | None:
        buf = self._buf
        prefix = len(buf)
        if buf[:1] == V2_SIGNATURE[:1]:
            if buf[: min(prefix, 12)] != V2_SIGNATURE[: min(prefix, 12)]:
                raise self._fail("garbage", "neither a PROXY v1 nor a v2 signature")
            return self._parse_v2() if prefix >= V2_FIXED_LENGTH else None
        if buf[: min(prefix, 6)] != V1_PREFIX[: min(prefix, 6)]:
            raise self._fail("garbage", "neither a PROXY v1 nor a v2 signature")
        return self._parse_v1()

    def _fail(self, kind: ErrorKind, reason: str) -> ProxyHeaderError:
        return ProxyHeaderError(kind, reason, len(self._buf))

    def _parse_v1(self) -> ProxyHeader | None:
        buf = self._buf
        end = buf.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(buf)
            if len(buf) >= V1_MAX_LENGTH:
                raise self._fail("oversized", f"no CRLF within {V1_MAX_LENGTH} bytes (v1)")
            return None
        if end == 0 or buf[end - 1] != 0x0D:
            raise self._fail("malformed", "v1 line ends with LF, not CRLF")
        line = bytes(buf[: end - 1])
        return _v1_fields(line, end + 1, self._fail)

    def _parse_v2(self) -> ProxyHeader | None:
        buf = self._buf
        _, version_command, family_byte, length = _V2_FIXED.unpack_from(buf)
        if version_command >> 4 != 2:
            raise self._fail("malformed", f"v2 version nibble is {version_command >> 4}, not 2")
        command = _V2_COMMANDS.get(version_command & 0x0F)
        if command is None:
            raise self._fail("malformed", f"v2 command {version_command & 0x0F} is not LOCAL/PROXY")
        if length > self.max_v2_length:
            raise self._fail(
                "oversized",
                f"v2 header declares {length} bytes after its 16, "
                f"over the limit of {self.max_v2_length}",
            )
        if len(buf) < V2_FIXED_LENGTH + length:
            return None
        body = bytes(buf[V2_FIXED_LENGTH : V2_FIXED_LENGTH + length])
        total = V2_FIXED_LENGTH + length
        names = _V2_FAMILIES.get(family_byte)
        if command == "local":
            # the specification: the receiver ignores the block, family included
            family, transport = names or ("UNSPEC", "unspec")
            return ProxyHeader(2, command, family, transport, None, None, (), total)
        if names is None:
            raise self._fail("malformed", f"v2 family/transport byte 0x{family_byte:02x}")
        family, transport = names
        need = _ADDRESS_SIZES[family]
        if length < need:
            raise self._fail(
                "malformed", f"v2 {family} addresses need {need} bytes, the header has {length}"
            )
        source, destination = _v2_addresses(family, body)
        tlvs = _v2_tlvs(body[need:], self._fail)
        _check_crc32c(bytes(buf[:total]), V2_FIXED_LENGTH + need, tlvs, self._fail)
        return ProxyHeader(2, command, family, transport, source, destination, tlvs, total)


def _v1_fields(line: bytes, length: int, fail: _Fail) -> ProxyHeader:
    """Split a v1 line (no CRLF) into its fields, each checked."""
    parts = line.split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        # the specification: whatever follows UNKNOWN is ignored
        return ProxyHeader(1, "proxy", "UNSPEC", "unspec", None, None, (), length)
    if len(parts) != 6:
        raise fail("malformed", f"v1 line has {len(parts)} space-separated fields, not 6")
    _, protocol, src, dst, sport, dport = parts
    if protocol not in (b"TCP4", b"TCP6"):
        raise fail("malformed", f"v1 protocol {_show(protocol)} is not TCP4, TCP6 or UNKNOWN")
    family: Family = "TCP4" if protocol == b"TCP4" else "TCP6"
    source = InetAddress(_v1_ip(src, family, fail), _v1_port(sport, fail))
    destination = InetAddress(_v1_ip(dst, family, fail), _v1_port(dport, fail))
    return ProxyHeader(1, "proxy", family, "stream", source, destination, (), length)


def _v1_ip(text: bytes, family: Family, fail: _Fail) -> str:
    try:
        value = text.decode("ascii")
        if "%" in value:  # ipaddress accepts IPv6 scope ids; the specification does not
            raise ValueError(value)
        address = ipaddress.IPv4Address(value) if family == "TCP4" else ipaddress.IPv6Address(value)
    except (UnicodeDecodeError, ValueError):
        raise fail("malformed", f"v1 {family} address {_show(text)} is not valid") from None
    return str(address)


def _v1_port(text: bytes, fail: _Fail) -> int:
    valid = text.isdigit() and len(text) <= 5 and (text == b"0" or not text.startswith(b"0"))
    if not valid or int(text) > 0xFFFF:
        raise fail("malformed", f"v1 port {_show(text)} is not 0..65535")
    return int(text)


def _show(field: bytes) -> str:
    """A header field for an error message: short, printable."""
    return repr(field[:48])[1:]


def _v2_addresses(family: Family, body: bytes) -> tuple[ProxyAddress | None, ProxyAddress | None]:
    if family == "TCP4":
        src, dst, sport, dport = _INET.unpack_from(body)
        return (
            InetAddress(str(ipaddress.IPv4Address(src)), sport),
            InetAddress(str(ipaddress.IPv4Address(dst)), dport),
        )
    if family == "TCP6":
        src, dst, sport, dport = _INET6.unpack_from(body)
        return (
            InetAddress(str(ipaddress.IPv6Address(src)), sport),
            InetAddress(str(ipaddress.IPv6Address(dst)), dport),
        )
    if family == "UNIX":
        src_path, dst_path = _UNIX.unpack_from(body)
        return UnixAddress(src_path.split(b"\0", 1)[0]), UnixAddress(dst_path.split(b"\0", 1)[0])
    return None, None


def _v2_tlvs(block: bytes, fail: _Fail) -> tuple[tuple[int, bytes], ...]:
    """The TLVs after the addresses; each must fit inside the declared length."""
    tlvs = []
    at = 0
    while at < len(block):
        if len(block) - at < _TLV.size:
            raise fail("malformed", f"v2 TLV header cut short: {len(block) - at} of 3 bytes")
        kind, size = _TLV.unpack_from(block, at)
        at += _TLV.size
        if size > len(block) - at:
            raise fail(
                "malformed",
                f"v2 TLV 0x{kind:02x} declares {size} bytes, {len(block) - at} remain",
            )
        tlvs.append((kind, block[at : at + size]))
        at += size
    return tuple(tlvs)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`; a header is at most a few KiB, so a table loop will do."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _check_crc32c(
    header: bytes, tlv_start: int, tlvs: tuple[tuple[int, bytes], ...], fail: _Fail
) -> None:
    """A CRC-32C TLV, if present, must match the header computed with its value zeroed."""
    at = tlv_start
    for kind, value in tlvs:
        at += _TLV.size
        if kind == PP2_TYPE_CRC32C:
            if len(value) != 4:
                raise fail("malformed", f"v2 CRC32C TLV has {len(value)} bytes, not 4")
            zeroed = header[:at] + bytes(4) + header[at + 4 :]
            if crc32c(zeroed) != int.from_bytes(value, "big"):
                raise fail("malformed", "v2 CRC32C does not match the header")
        at += len(value)


# -- writing headers (clients, tests, and a lab that plays the balancer) ----
def v1_header(source: InetAddress | None, destination: InetAddress | None) -> bytes:
    """A v1 line; with no addresses, ``PROXY UNKNOWN``."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    version = ipaddress.ip_address(source.host).version
    if ipaddress.ip_address(destination.host).version != version:
        raise ValueError("source and destination must be the same IP version")
    protocol = "TCP4" if version == 4 else "TCP6"
    line = f"PROXY {protocol} {source.host} {destination.host} {source.port} {destination.port}\r\n"
    return line.encode("ascii")


def v2_header(
    command: Command,
    source: ProxyAddress | None = None,
    destination: ProxyAddress | None = None,
    *,
    transport: Transport = "stream",
    tlvs: tuple[tuple[int, bytes], ...] = (),
    checksum: bool = False,
) -> bytes:
    """A v2 header. LOCAL or no addresses: family UNSPEC with no address block.
    `checksum` appends a CRC-32C TLV over the whole header."""
    if command == "local" or source is None or destination is None:
        family: Family = "UNSPEC"
        block = b""
        transport = "unspec"
    elif isinstance(source, UnixAddress) and isinstance(destination, UnixAddress):
        family = "UNIX"
        block = _UNIX.pack(source.path, destination.path)
    elif isinstance(source, InetAddress) and isinstance(destination, InetAddress):
        src = ipaddress.ip_address(source.host)
        dst = ipaddress.ip_address(destination.host)
        if src.version != dst.version:
            raise ValueError("source and destination must be the same IP version")
        family = "TCP4" if src.version == 4 else "TCP6"
        layout = _INET if src.version == 4 else _INET6
        block = layout.pack(src.packed, dst.packed, source.port, destination.port)
    else:
        raise ValueError("source and destination must be the same kind of address")
    if checksum:
        tlvs = (*tlvs, (PP2_TYPE_CRC32C, bytes(4)))
    block += b"".join(_TLV.pack(kind, len(value)) + value for kind, value in tlvs)
    family_byte = _FAMILY_BYTES[(family, transport)] if family != "UNSPEC" else 0x00
    command_bits = 0x1 if command == "proxy" else 0x0
    header = _V2_FIXED.pack(V2_SIGNATURE, 0x20 | command_bits, family_byte, len(block)) + block
    if checksum:  # the CRC's own 4 bytes are the last ones, zero while computing
        header = header[:-4] + crc32c(header).to_bytes(4, "big")
    return header
