"""Kernel readings without root: TCP_INFO, /proc/net/tcp, sysctls, netstat counters.

Each is parsed once here: struct tcp_info by its layout (linux/tcp.h), the
/proc tables by their columns. Every reader of /proc takes an optional
network namespace name, so the same code observes loopback and the veth
hosts of lab/netns.py.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from framelab.lab.netns import entered

#: kernel TCP state numbers (include/net/tcp_states.h)
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}

_TCP_INFO_FORMAT = "=8B24I4Q6I"  # by field: see _FIELD_CODES
_TCP_INFO_FIELDS = [
    "state",
    "ca_state",
    "retransmits",
    "probes",
    "backoff",
    "options",
    "wscale",
    "flags",
    "rto",
    "ato",
    "snd_mss",
    "rcv_mss",
    "unacked",
    "sacked",
    "lost",
    "retrans",
    "fackets",
    "last_data_sent",
    "last_ack_sent",
    "last_data_recv",
    "last_ack_recv",
    "pmtu",
    "rcv_ssthresh",
    "rtt",
    "rttvar",
    "snd_ssthresh",
    "snd_cwnd",
    "advmss",
    "reordering",
    "rcv_rtt",
    "rcv_space",
    "total_retrans",
    # Linux 4.x additions; zero where the kernel's struct is shorter
    "pacing_rate",
    "max_pacing_rate",
    "bytes_acked",
    "bytes_received",
    "segs_out",
    "segs_in",
    "notsent_bytes",
    "min_rtt",
    "data_segs_in",
    "data_segs_out",
]


_TCP_INFO_SIZE = struct.calcsize(_TCP_INFO_FORMAT)


_FIELD_CODES = "B" * 8 + "I" * 24 + "Q" * 4 + "I" * 6  # _TCP_INFO_FORMAT, one code a field
#: where each field ends, in bytes from the start of the struct
_FIELD_ENDS = {
    name: struct.calcsize("=" + _FIELD_CODES[: i + 1]) for i, name in enumerate(_TCP_INFO_FIELDS)
}


@dataclass(frozen=True)
class TcpInfo:
    """The stable part of struct tcp_info (linux/tcp.h); times in µs.

    `size` is how many bytes the kernel filled: a field past it reads as 0
    with `[]` and as None with `known()` (an older kernel's shorter struct).
    """

    values: dict[str, int]
    size: int = _TCP_INFO_SIZE

    @property
    def state(self) -> str:
        return TCP_STATES.get(self.values["state"], str(self.values["state"]))

    def __getitem__(self, key: str) -> int:
        return self.values[key]

    def known(self, key: str) -> int | None:
        """The field when this kernel reports it, None when its struct is shorter."""
        return self.values[key] if _FIELD_ENDS[key] <= self.size else None


def tcp_info(sock: socket.socket) -> TcpInfo:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    values = struct.unpack_from(_TCP_INFO_FORMAT, raw.ljust(_TCP_INFO_SIZE, b"\0"))
    return TcpInfo(dict(zip(_TCP_INFO_FIELDS, values, strict=True)), len(raw))


def data_segments_out(sock: socket.socket) -> int | None:
    """Segments carrying data this socket has sent so far (None: kernel too old).

    The difference across a few writes says whether they left as one segment
    each or were held back and combined, which without root cannot be seen
    any other way.
    """
    return tcp_info(sock).known("data_segs_out")


def segments_since(sock: socket.socket, before: int | None) -> int | None:
    """Data segments sent since data_segments_out() said `before` (None: unknown)."""
    now = data_segments_out(sock)
    return None if now is None or before is None else now - before


def tcp_state(sock: socket.socket) -> str:
    return tcp_info(sock).state


def errno_name(exc: BaseException | int | None) -> str | None:
    """'ECONNRESET' for an OSError (or errno), None for anything else."""
    code = exc if isinstance(exc, int) else getattr(exc, "errno", None)
    if code is None:
        return None
    return errno.errorcode.get(code, str(code))


def _read(path: str, netns: str | None = None) -> str:
    """A /proc file as `netns` shows it: read by this thread inside the namespace
    (/proc/net is the process's namespace; /proc/thread-self/net and
    /proc/sys/net are the thread's), with no process started."""
    if netns is None:
        with open(path) as fh:
            return fh.read()
    own = path.replace("/proc/net/", "/proc/thread-self/net/", 1)
    with entered(netns), open(own) as fh:
        return fh.read()


def sysctl(name: str, netns: str | None = None) -> str | None:
    """A sysctl's value as text ('net.ipv4.tcp_tw_reuse'), None if it does not exist."""
    path = "/proc/sys/" + name.replace(".", "/")
    if netns is None and not os.path.exists(path):
        return None
    try:
        return _read(path, netns).strip()
    except OSError:
        return None


def sysctls(names: list[str], netns: str | None = None) -> dict[str, str | None]:
    return {name: sysctl(name, netns) for name in names}


@dataclass(frozen=True)
class ProcTcpEntry:
    """One row of /proc/net/tcp{,6}: endpoints, state, queues, timer."""

    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    tx_queue: int
    rx_queue: int
    timer: int  # 0 none, 1 retransmit, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe
    timer_seconds: float
    retransmits: int
    inode: int


def _decode_address(text: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
    return host, int(port_hex, 16)


def proc_net_tcp(netns: str | None = None) -> list[ProcTcpEntry]:
    """Every TCP socket of the namespace, IPv4 and IPv6."""
    ticks = os.sysconf("SC_CLK_TCK")
    entries = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text = _read(path, netns)
        except OSError:
            continue
        for line in text.splitlines()[1:]:
            f = line.split()
            tx, rx = (int(x, 16) for x in f[4].split(":"))
            timer, when = f[5].split(":")
            entries.append(
                ProcTcpEntry(
                    local=_decode_address(f[1]),
                    remote=_decode_address(f[2]),
                    state=TCP_STATES.get(int(f[3], 16), f[3]),
                    tx_queue=tx,
                    rx_queue=rx,
                    timer=int(timer, 16),
                    timer_seconds=int(when, 16) / ticks,
                    retransmits=int(f[6], 16),
                    inode=int(f[9]),
                )
            )
    return entries


def tcp_entry(
    local: tuple[str, int], remote: tuple[str, int], netns: str | None = None
) -> ProcTcpEntry | None:
    """The socket with exactly this 4-tuple (TIME_WAIT ones included), if any."""
    for entry in proc_net_tcp(netns):
        if entry.local == local and entry.remote == remote:
            return entry
    return None


def endpoint_state(
    local: tuple[str, int], remote: tuple[str, int], netns: str | None = None
) -> str | None:
    """The state of one end of a connection; None once the kernel forgot it."""
    entry = tcp_entry(local, remote, netns)
    return entry.state if entry else None


def connections_on_port(port: int, netns: str | None = None) -> list[ProcTcpEntry]:
    """Sockets whose local or remote port is `port` (both ends of a loopback pair)."""
    return [e for e in proc_net_tcp(netns) if port in (e.local[1], e.remote[1])]


def netstat_counters(netns: str | None = None) -> dict[str, int]:
    """TcpExt, Tcp, Ip, Udp... counters as 'TcpExt.TCPAbortOnClose' -> value."""
    counters: dict[str, int] = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        lines = _read(path, netns).splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=False):
            prefix, names = header.split(":", 1)
            _, nums = values.split(":", 1)
            for name, num in zip(names.split(), nums.split(), strict=False):
                counters[f"{prefix}.{name}"] = int(num)
    return counters


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters that changed between two netstat_counters() readings."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def selected_delta(
    before: dict[str, int], after: dict[str, int], names: Iterable[str]
) -> dict[str, int]:
    """The change of the named counters ('TcpExt.ListenOverflows'), zeros included."""
    changed = counter_delta(before, after)
    return {name: changed.get(name, 0) for name in names}


#: SIOCOUTQNSD (linux/sockios.h): bytes in the send queue not yet sent
SIOCOUTQNSD = 0x894B


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes the kernel holds in the send queue without having sent them (SIOCOUTQNSD)."""
    value: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0" * 4))[0]
    return value
