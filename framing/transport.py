"""What both asyncio adapters need from a transport, written once.

The peer's printable address, the bytes still waiting in the kernel
(FIONREAD: a graceful drain must answer them before FIN), TCP_NODELAY, and
the transport's gathering write where it really is one. The adapters
(protocol.py, streams.py) stand on this module side by side; neither
imports the other. Every call here is O(1): one getsockopt/ioctl at most.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import sys
import termios
from collections.abc import Callable
from typing import cast

from framing.decoder import BytesLike

#: a transport's writelines(), where it writes without joining
WriteLines = Callable[[list[BytesLike]], object]


def format_address(address: object) -> str:
    """'host:port' ('[v6]:port' for IPv6) of a socket address tuple."""
    if isinstance(address, tuple) and len(address) >= 2:
        host = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
        return f"{host}:{address[1]}"
    return str(address)


def peer_name(transport: asyncio.BaseTransport) -> str:
    """'host:port' of the peer, for error messages and logs."""
    return format_address(transport.get_extra_info("peername"))


def writev_lines(transport: asyncio.BaseTransport) -> WriteLines | None:
    """transport.writelines where it is one gathering write with no join
    (uvloop; asyncio from 3.12), else None: asyncio 3.11 joins (copies)."""
    if sys.version_info >= (3, 12) or type(transport).__module__.startswith("uvloop"):
        return cast(asyncio.WriteTransport, transport).writelines
    return None


def unread_kernel_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes waiting in the socket's receive queue (FIONREAD), 0 if unknown."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    value: int = struct.unpack("i", raw)[0]
    return value


def set_nodelay(transport: asyncio.BaseTransport, enabled: bool) -> None:
    """TCP_NODELAY on the transport's socket (asyncio and uvloop turn it on)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))
