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
import itertools
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


#: every topology this process builds gets its own number (id() of a freed object
#: comes back at once, and two links built after each other then shared names)
_TOPOLOGIES = itertools.count(1)


def unique_tags() -> tuple[str, str]:
    """(a namespace tag, a short tag for 15-byte interface names), unique per process
    (the short one for the last 4096 topologies: long gone by then)."""
    number = next(_TOPOLOGIES)
    return f"{os.getpid()}-{number:x}", f"{os.getpid():x}{number & 0xFFF:03x}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the block with this thread in `netns` (for creating sockets there)."""
    with _setns_lock, moved_into(netns):
        yield


@contextmanager
def moved_into(netns: str) -> Iterator[None]:
    """This thread in `netns` for the block, then back; no lock (a whole run may live there)."""
    with open(f"/var/run/netns/{netns}") as target:
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

    Addresses are in 10.231.0.0/24, private to the two namespaces. `mtu`
    None leaves the kernel's default for a new veth.
    """

    def __init__(self, mtu: int | None = 1500, offloads: bool = False) -> None:
        tag, short = unique_tags()
        self.mtu = mtu
        self.offloads = offloads
        self.a = Host(f"{NAME_PREFIX}{tag}-a", "veth-a", "10.231.0.1")
        self.b = Host(f"{NAME_PREFIX}{tag}-b", "veth-b", "10.231.0.2")
        self._tmp = (f"fl{short}a", f"fl{short}b")

    def __enter__(self) -> VethLink:
        try:
            for host in (self.a, self.b):
                _new_namespace(host.netns)
            _join((self.a, self.b), self._tmp, self.mtu, self.offloads)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _remove([self.a.netns, self.b.netns], [self._tmp[0]])


class RoutedPath:
    """Hosts a and b on two links with a router r between them: a - r - b.

    a is 10.231.1.1 and b 10.231.2.1, each with a default route via r
    (10.231.1.254 and 10.231.2.254), which forwards: for claims about TTL,
    routing and ICMP errors from a hop in the middle. MTU 1500 everywhere.
    """

    def __init__(self) -> None:
        tag, short = unique_tags()
        self.a = Host(f"{NAME_PREFIX}{tag}-a", "veth-a", "10.231.1.1")
        self.r_a = Host(f"{NAME_PREFIX}{tag}-r", "veth-ra", "10.231.1.254")
        self.r_b = Host(f"{NAME_PREFIX}{tag}-r", "veth-rb", "10.231.2.254")
        self.b = Host(f"{NAME_PREFIX}{tag}-b", "veth-b", "10.231.2.1")
        self._tmp = ((f"fl{short}a", f"fl{short}r"), (f"fl{short}s", f"fl{short}b"))

    @property
    def namespaces(self) -> list[str]:
        return [self.a.netns, self.r_a.netns, self.b.netns]

    def __enter__(self) -> RoutedPath:
        try:
            for netns in self.namespaces:
                _new_namespace(netns)
            _join((self.a, self.r_a), self._tmp[0], 1500, offloads=False)
            _join((self.r_b, self.b), self._tmp[1], 1500, offloads=False)
            self.r_a.set_sysctl("net.ipv4.ip_forward", 1)
            self.a.run("ip", "route", "add", "default", "via", self.r_a.address)
            self.b.run("ip", "route", "add", "default", "via", self.r_b.address)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _remove(self.namespaces, [self._tmp[0][0], self._tmp[1][0]])


class Star:
    """A hub host joined to each spoke host by a veth link of its own.

    For a load balancer (the hub) between clients and servers (the spokes):
    spoke i sits on 10.232.i.0/24 as .1, the hub's end of that link is .254.
    No routes between spokes: each talks to the hub only, as through a real
    balancer. MTU 1500; offloads stay on (a load, not a capture).
    """

    SUBNET = "10.232"

    def __init__(self, spokes: list[str]) -> None:
        if not 0 < len(spokes) < 250 or len(set(spokes)) != len(spokes):
            raise ValueError("between 1 and 249 distinct spoke names")
        tag, short = unique_tags()
        self.hub_netns = f"{NAME_PREFIX}{tag}-hub"
        self.spokes: dict[str, Host] = {}
        self.hub_ends: dict[str, Host] = {}
        self._tmp: dict[str, tuple[str, str]] = {}
        for i, name in enumerate(spokes):
            net = f"{self.SUBNET}.{i}"
            self.spokes[name] = Host(f"{NAME_PREFIX}{tag}-{name}", "veth0", f"{net}.1")
            self.hub_ends[name] = Host(self.hub_netns, f"veth{i}", f"{net}.254")
            self._tmp[name] = (f"fl{short}h{i}", f"fl{short}s{i}")

    @property
    def namespaces(self) -> list[str]:
        return [self.hub_netns, *(host.netns for host in self.spokes.values())]

    def __enter__(self) -> Star:
        try:
            for netns in self.namespaces:
                _new_namespace(netns)
            for name, spoke in self.spokes.items():
                _join((self.hub_ends[name], spoke), self._tmp[name], 1500, offloads=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        _remove(self.namespaces, [pair[0] for pair in self._tmp.values()])


def _new_namespace(netns: str) -> None:
    _ip("netns", "add", netns)
    subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)


def _join(ends: tuple[Host, Host], names: tuple[str, str], mtu: int | None, offloads: bool) -> None:
    """A veth pair between two hosts' namespaces, renamed, addressed (/24), up.

    It is born in the root namespace: unique names (at most 15 characters)
    keep links made at the same time by other processes apart.
    """
    _ip("link", "add", names[0], "type", "veth", "peer", "name", names[1])
    for host, name in zip(ends, names, strict=True):
        _ip("link", "set", name, "netns", host.netns)
        host.run("ip", "link", "set", name, "name", host.ifname)
        if mtu is not None:
            host.run("ip", "link", "set", host.ifname, "mtu", str(mtu))
        host.run("ip", "addr", "add", f"{host.address}/24", "dev", host.ifname)
        if not offloads:
            disable_offloads(host.netns, host.ifname)
        host.run("ip", "link", "set", host.ifname, "up")


def _remove(namespaces: list[str], links: list[str]) -> None:
    """Delete namespaces (their veth ends go with them) and any link left in ours."""
    for netns in namespaces:
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)
    for link in links:
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)


def leftover_namespaces(every_process: bool = False) -> list[str]:
    """Namespaces this process made here that still exist (should be none).

    Names carry the pid of the process that made them, so another program
    (a second test run on the same machine) does not count; `every_process`
    lists them all.
    """
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    prefix = NAME_PREFIX if every_process else f"{NAME_PREFIX}{os.getpid()}-"
    return [n for n in names if n.startswith(prefix)]


class SettingError(ValueError):
    """A --sysctl the kernel refused: its name and why."""


def write_sysctl(name: str, value: str | int, netns: str | None = None) -> None:
    """Set net.* `name` in `netns` (this thread's namespace when None)."""
    path = "/proc/sys/" + name.replace(".", "/")
    with entered(netns) if netns else contextlib.nullcontext():
        try:
            with open(path, "w") as handle:
                handle.write(f"{value}\n")
        except FileNotFoundError:
            raise SettingError(f"{name}: no such setting on this kernel") from None
        except OSError as exc:
            raise SettingError(f"{name}={value}: refused ({os.strerror(exc.errno or 0)})") from None


@contextmanager
def fresh_namespace(
    settings: dict[str, str] | None = None, lo_mtu: int | None = None
) -> Iterator[str]:
    """Run the block with this thread in a new network namespace with `settings`.

    Sockets, /proc/net reads (through /proc/self, i.e. the main thread: call
    this from it), threads and programs started inside belong to the new
    namespace, so a whole experiment runs there untouched by the host's
    settings. The namespace is removed afterwards, even after a failure.
    """
    name = f"{NAME_PREFIX}{os.getpid()}-run{next(_run_numbers)}"
    _new_namespace(name)
    try:
        for key, value in (settings or {}).items():
            write_sysctl(key, value, name)
        if lo_mtu is not None:
            _ip("-n", name, "link", "set", "lo", "mtu", str(lo_mtu))
        with moved_into(name):
            yield name
    finally:
        _remove([name], [])


_run_numbers = itertools.count()


def settings_namespace(
    settings: tuple[tuple[str, str], ...],
) -> contextlib.AbstractContextManager[str | None]:
    """A fresh namespace with `settings` for the whole run, or this host's when there are none."""
    if not settings:
        return contextlib.nullcontext()
    return fresh_namespace(dict(settings))


def run_settings(sysctls: tuple[tuple[str, str], ...], mtu: int | None) -> dict[str, object]:
    """What the results were observed under: settings asked for, loopback's routes, MTU."""
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "namespace": "fresh, with the settings below" if sysctls else "this host's",
        "sysctls": dict(sysctls),
        "link_mtu": mtu or 1500,
        "loopback_routes": [r for r in routes if " lo " in f"{r} " or r.endswith(" lo")],
    }
