"""Classic libpcap files, written and read: bytes only, no sockets.

The format every capture tool reads (tcpdump, tshark, Wireshark): a 24-byte
file header, then per packet a 16-byte record header (time, bytes kept,
bytes on the wire) and the bytes kept. We write the nanosecond variant
(magic a1b23c4d) so the kernel's receive timestamps (SO_TIMESTAMPNS) keep
their precision, little-endian, LINKTYPE_ETHERNET: an AF_PACKET socket on
loopback or a veth end returns whole Ethernet frames. Linear in the bytes
written; the reader exists for the tests and refuses what it cannot parse.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC_NANOSECONDS = 0xA1B23C4D
MAGIC_MICROSECONDS = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
VERSION = (2, 4)
_FILE_HEADER = struct.Struct("<IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, link
_RECORD_HEADER = struct.Struct("<IIII")  # seconds, fraction, bytes kept, bytes on the wire


@dataclass(frozen=True)
class Frame:
    """One captured frame: when the kernel received it, its real length, the bytes kept."""

    time_ns: int
    wire_len: int
    data: bytes


def pcap_bytes(frames: Iterable[Frame], snaplen: int = 65535) -> bytes:
    """A whole pcap file holding `frames` in the order given."""
    out = bytearray(
        _FILE_HEADER.pack(MAGIC_NANOSECONDS, *VERSION, 0, 0, snaplen, LINKTYPE_ETHERNET)
    )
    for frame in frames:
        kept = frame.data[:snaplen]
        seconds, nanoseconds = divmod(frame.time_ns, 1_000_000_000)
        wire_len = max(frame.wire_len, len(kept))
        out += _RECORD_HEADER.pack(seconds, nanoseconds, len(kept), wire_len)
        out += kept
    return bytes(out)


class PcapError(ValueError):
    """Not a pcap file we can read: what was wrong, and where."""


def read_pcap(data: bytes) -> tuple[int, list[Frame]]:
    """(link type, frames) of a classic pcap file, either byte order, µs or ns."""
    if len(data) < _FILE_HEADER.size:
        raise PcapError(f"{len(data)} bytes: shorter than the {_FILE_HEADER.size}-byte header")
    magic_le = struct.unpack_from("<I", data)[0]
    magic_be = struct.unpack_from(">I", data)[0]
    if magic_le in (MAGIC_NANOSECONDS, MAGIC_MICROSECONDS):
        order, magic = "<", magic_le
    elif magic_be in (MAGIC_NANOSECONDS, MAGIC_MICROSECONDS):
        order, magic = ">", magic_be
    else:
        raise PcapError(f"magic {data[:4].hex()} is not a classic pcap magic")
    scale = 1 if magic == MAGIC_NANOSECONDS else 1000
    *_, snaplen, linktype = struct.unpack_from(order + "IHHiIII", data)
    record = struct.Struct(order + "IIII")
    frames, offset = [], _FILE_HEADER.size
    while offset < len(data):
        if offset + record.size > len(data):
            raise PcapError(f"record header cut short at byte {offset}")
        seconds, fraction, kept, wire_len = record.unpack_from(data, offset)
        offset += record.size
        if kept > snaplen or offset + kept > len(data):
            raise PcapError(f"record at byte {offset} claims {kept} bytes (snaplen {snaplen})")
        body = data[offset : offset + kept]
        offset += kept
        frames.append(Frame(seconds * 1_000_000_000 + fraction * scale, wire_len, body))
    return linktype, frames
