"""Validated argparse types: the one place every subcommand's numbers are checked.

A value is checked for its range when the command line is parsed, before
anything starts, so a mistake costs one line naming the option and the value
(argparse prints `argument --port: 70000 is not a port (0-65535)`), never a
traceback from deep inside a server. Each type is a plain function from the
text to the value, raising `argparse.ArgumentTypeError` with a sentence that
names the text it was given.

Also here: how the commands print an address (`[::1]:7091`, as a URL would),
so that every message names one the same way.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
import socket
from collections.abc import Callable
from pathlib import Path

#: binary multiples accepted by `size`: 64K, 1M, 8MiB, 1GiB (K/k and KiB mean 1024)
SIZE_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
#: a DNS name: labels of letters, digits and hyphens (RFC 1123), dots between
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$", re.IGNORECASE)
#: extensions that make a --plot value look like a file where a directory is wanted
IMAGE_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def _whole(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """A whole number of at least 1 (a count of connections, rounds, workers)."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (a backlog, a seed)."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def positive_float(text: str) -> float:
    """A number above 0: a duration or timeout for which 0 would mean nothing sensible."""
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def non_negative_float(text: str) -> float:
    """A number of at least 0: a duration where 0 is meaningful (off, at once)."""
    value = _real(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


#: seconds; named for what they hold so that help texts and readers agree
duration = non_negative_float
positive_duration = positive_float


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in low..high (for options with a hard ceiling)."""

    def parse(text: str) -> int:
        value = _whole(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} must be {low}..{high}")
        return value

    parse.__name__ = f"int {low}..{high}"  # what argparse names in its own messages
    return parse


def float_between(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number in low..high."""

    def parse(text: str) -> float:
        value = _real(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} must be {low:g}..{high:g}")
        return value

    parse.__name__ = f"number {low:g}..{high:g}"
    return parse


def port(text: str) -> int:
    """A TCP port, 0-65535 (0: let the kernel pick). Checked here because the
    socket layer would otherwise wrap a larger number or fail with a traceback."""
    value = _whole(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535)")
    return value


def size(text: str) -> int:
    """A number of bytes, 0 or more: 1048576, 64K, 1M, 8MiB (multiples of 1024)."""
    match = SIZE_PATTERN.match(text)
    if match is None and text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more bytes")
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size in bytes (for example 1024, 64K, 8M)"
        )
    digits, suffix = match.groups()
    return int(digits) * SIZE_SUFFIXES[suffix.lower()]


def positive_size(text: str) -> int:
    """A number of bytes, at least 1 (a frame limit, a write buffer mark)."""
    value = size(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1 byte")
    return value


def host(text: str) -> str:
    """An IP address or a host name that resolves here.

    Resolved once while parsing, so an unknown name is a usage error with its
    own line instead of a socket error later. A literal address is checked
    without asking any resolver."""
    literal = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        return literal
    if not HOST_NAME.match(literal):
        raise argparse.ArgumentTypeError(f"{text!r} is not a host name or an IP address")
    try:
        socket.getaddrinfo(literal, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise argparse.ArgumentTypeError(
            f"unknown host {literal!r} ({exc.strerror or 'cannot resolve it'})"
        ) from None
    return literal


def host_port(text: str) -> tuple[str, int]:
    """HOST:PORT, with an IPv6 address in brackets: 127.0.0.1:7000, [::1]:7000."""
    where, colon, number = text.rpartition(":")
    if not colon or not where or (":" in where and not where.startswith("[")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT (for example 127.0.0.1:7000 or [::1]:7000)"
        )
    return host(where), port(number)


def directory(text: str) -> Path:
    """A directory to write files into (created when needed). A name ending in
    .png and the like is refused: every --plot takes a directory."""
    path = Path(text)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r} looks like a file name; give a directory (the charts are named inside it)"
        )
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    return path


def address(host_name: str, port_number: int) -> str:
    """HOST:PORT as users write it: IPv6 in brackets, [::1]:7091."""
    if ":" in host_name:
        return f"[{host_name}]:{port_number}"
    return f"{host_name}:{port_number}"


def sysctl_setting(text: str) -> tuple[str, str]:
    """An argparse type: 'net.ipv4.tcp_syncookies=2' -> ('net.ipv4.tcp_syncookies', '2')."""
    key, equals, value = text.partition("=")
    if not equals or not key or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    if not key.startswith("net.") or "/" in key or ".." in key:
        raise argparse.ArgumentTypeError(f"{key!r}: only net.* settings belong to a namespace")
    return key, value


def link_mtu(text: str) -> int:
    """An argparse type: an IPv4 link MTU, 68 (RFC 791's minimum) to 65535."""
    value = int(text)
    if not 68 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value}: an MTU is 68 to 65535")
    return value
