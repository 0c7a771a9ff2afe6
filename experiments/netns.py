"""Test hosts in network namespaces, joined by a veth pair with a real MTU.

Loopback has a 65536-byte MTU and no Ethernet, so MSS/MTU, fragmentation and
packet-loss claims need two "hosts". Both veth ends live in namespaces this
module creates (no end in the root namespace), so nothing can leave the
machine. Sockets for a host are created in its namespace by switching the
calling thread with setns(2) just for the socket() call: the socket stays in
that namespace, and the rest of the experiment runs in ordinary Python.
Needs root. Everything is removed on exit, even after a failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
NAME_PREFIX = "framelab-"
_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()

# ethtool ioctls (linux/ethtool.h): turn segmentation/receive offloads off so
# that a capture shows the segments a real wire would carry.
_SIOCETHTOOL = 0x8946
_ETHTOOL_STSO = 0x0000001F
_ETHTOOL_SGSO = 0x00000024
_ETHTOOL_SGRO = 0x0000002C


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the block with this thread in `netns` (for creating sockets there)."""
    with _setns_lock, open(f"/var/run/netns/{netns}") as target:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            try:
                yield
            finally:
                if _libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover
                    raise OSError(ctypes.get_errno(), "could not return to own namespace")
        finally:
            os.close(home)


def socket_in(
    netns: str | None, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket that belongs to `netns` (or to ours when None)."""
    if netns is None:
        return socket.socket(family, type, proto)
    with entered(netns):
        return socket.socket(family, type, proto)


def disable_offloads(netns: str, ifname: str) -> None:
    with socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as s:
        for cmd in (_ETHTOOL_STSO, _ETHTOOL_SGSO, _ETHTOOL_SGRO):
            value = struct.pack("II", cmd, 0)
            buf = ctypes.create_string_buffer(value)
            ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(buf))
            with contextlib.suppress(OSError):  # an offload the driver lacks is off
                fcntl.ioctl(s.fileno(), _SIOCETHTOOL, ifreq)


@dataclass(frozen=True)
class Host:
    """One end of the link: its namespace, interface and IPv4 address."""

    netns: str
    ifname: str
    address: str

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        return socket_in(self.netns, family, type)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True, check=check
        )

    def set_sysctl(self, name: str, value: str | int) -> None:
        path = "/proc/sys/" + name.replace(".", "/")
        self.run("sh", "-c", f"echo {value} > {path}")

    def link(self, up: bool) -> None:
        """Take this host's interface up or down (a way to lose every packet)."""
        self.run("ip", "link", "set", self.ifname, "up" if up else "down")


class VethLink:
    """Hosts a and b in their own namespaces, joined by veth with `mtu`.

    Addresses are in 10.231.0.0/24, private to the two namespaces.
    """

    def __init__(self, mtu: int = 1500, offloads: bool = False) -> None:
        tag = f"{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.mtu = mtu
        self.offloads = offloads
        self.a = Host(f"{NAME_PREFIX}{tag}-a", "veth-a", "10.231.0.1")
        self.b = Host(f"{NAME_PREFIX}{tag}-b", "veth-b", "10.231.0.2")
        # the veth pair is born in the root namespace: unique names (at most 15
        # characters) keep links made at the same time by other processes apart
        short = f"{os.getpid():x}{id(self) & 0xFFF:x}"
        self._tmp = (f"fl{short}a", f"fl{short}b")

    def __enter__(self) -> VethLink:
        try:
            for host in (self.a, self.b):
                _ip("netns", "add", host.netns)
                host.run("ip", "link", "set", "lo", "up")
            _ip("link", "add", self._tmp[0], "type", "veth", "peer", "name", self._tmp[1])
            for host, tmp in zip((self.a, self.b), self._tmp, strict=True):
                _ip("link", "set", tmp, "netns", host.netns)
                host.run("ip", "link", "set", tmp, "name", host.ifname)
                host.run("ip", "link", "set", host.ifname, "mtu", str(self.mtu))
                host.run("ip", "addr", "add", f"{host.address}/24", "dev", host.ifname)
                if not self.offloads:
                    disable_offloads(host.netns, host.ifname)
                host.run("ip", "link", "set", host.ifname, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for host in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self._tmp[0]], capture_output=True, check=False)


def leftover_namespaces() -> list[str]:
    """Namespaces this module made that still exist (should be none)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(NAME_PREFIX)]
