"""HAProxy as a child process: find it, write its configuration, run it, read its stats.

The configuration is the one the README documents: TCP mode, round robin,
`send-proxy-v2` to every server, and a framed health check (`tcp-check`
sends the msgpack `health` request as one frame and expects the reply frame
byte for byte; `min-recv` makes a wrong reply fail at once instead of
waiting for `timeout check`). Health checks carry a PROXY v2 LOCAL header
(`check-send-proxy`), which servers with --proxy-protocol accept.
HAProxy runs in the foreground (-db) inside the balancer's namespace; its
stats socket (a UNIX socket in the run's temporary directory) is how the
cluster sees which servers are UP and how many sessions each got.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import msgpack

from framelab.servers import msgpack_app
from framing.encoder import encode_frame

INSTALL_HINT = "install it with: apt-get install haproxy (Debian/Ubuntu)"
MIN_VERSION = (2, 0)
#: where Debian and source installs put it, for a PATH without sbin
PLACES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
_VERSION = re.compile(r"HAProxy version (\d+)\.(\d+)(?:\.(\d+))?")


class HAProxyUnavailable(RuntimeError):
    """No usable haproxy binary; the message says how to install one."""


def find_haproxy() -> tuple[str, str]:
    """(path, version) of the haproxy binary, or HAProxyUnavailable."""
    path = shutil.which("haproxy") or next((p for p in PLACES if Path(p).exists()), None)
    if path is None:
        raise HAProxyUnavailable(f"haproxy is not installed; {INSTALL_HINT}")
    out = subprocess.run([path, "-v"], capture_output=True, text=True, check=False).stdout
    match = _VERSION.search(out)
    if match is None:
        raise HAProxyUnavailable(f"{path} -v printed no version ({out[:80]!r}); {INSTALL_HINT}")
    version = tuple(int(part) for part in match.groups() if part is not None)
    if version[:2] < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise HAProxyUnavailable(f"haproxy {match.group(0)} is older than {wanted}; {INSTALL_HINT}")
    return path, ".".join(map(str, version))


# -- the health check's bytes --------------------------------------------------
def health_request() -> bytes:
    """The frame HAProxy sends: the msgpack request {"op": "health", "id": 0}."""
    return encode_frame(msgpack.packb({"op": "health", "id": 0}))


def health_reply() -> bytes:
    """The frame a serving server answers, computed by the application itself."""
    reply = msgpack_app.handle_request({"op": "health", "id": 0})
    assert reply["ok"], reply
    return encode_frame(msgpack.packb(reply))


@dataclass(frozen=True)
class Backend:
    name: str
    host: str
    port: int


@dataclass(frozen=True)
class CheckTiming:
    """How fast HAProxy notices a server going away or coming back."""

    inter_ms: int = 200
    fall: int = 2
    rise: int = 2
    timeout_ms: int = 1000


def health_check_lines(timing: CheckTiming = CheckTiming()) -> list[str]:
    """The backend lines that make HAProxy check a framelab server with a frame."""
    reply = health_reply()
    return [
        "option tcp-check",
        f"tcp-check send-binary {health_request().hex()}",
        f"tcp-check expect min-recv {len(reply)} binary {reply.hex()}",
        f"default-server send-proxy-v2 check check-send-proxy "
        f"inter {timing.inter_ms}ms fall {timing.fall} rise {timing.rise}",
    ]


def config_text(
    bind: tuple[str, int],
    backends: Sequence[Backend],
    stats_socket: Path,
    timing: CheckTiming = CheckTiming(),
    proxy_line: str = "send-proxy-v2",
) -> str:
    """A complete haproxy.cfg for one frontend balancing over `backends`."""
    backend_lines = health_check_lines(timing)
    if proxy_line != "send-proxy-v2":
        backend_lines[-1] = backend_lines[-1].replace("send-proxy-v2", proxy_line)
    lines = [
        "global",
        f"    stats socket {stats_socket} mode 600 level admin",
        "    maxconn 4096",
        "defaults",
        "    mode tcp",
        "    timeout connect 1s",
        "    timeout client 30s",
        "    timeout server 30s",
        f"    timeout check {timing.timeout_ms}ms",
        "    retries 3",
        "    option redispatch 1",  # a connection refused by a dead server goes to another
        "frontend framelab",
        f"    bind {bind[0]}:{bind[1]}",
        "    default_backend servers",
        "backend servers",
        "    balance roundrobin",
        *(f"    {line}" for line in backend_lines),
        *(f"    server {b.name} {b.host}:{b.port}" for b in backends),
    ]
    return "\n".join(lines) + "\n"


# -- stats ---------------------------------------------------------------------
@dataclass(frozen=True)
class ServerStat:
    """One server's row of `show stat`."""

    name: str
    status: str  # UP, DOWN, "UP 1/2" (going down), MAINT, ...
    current: int  # sessions now (scur)
    total: int  # sessions so far (stot)
    connect_errors: int  # econ
    redispatched: int  # wredis

    @property
    def up(self) -> bool:
        return self.status.startswith("UP") and "/" not in self.status


def parse_show_stat(text: str, backend: str = "servers") -> dict[str, ServerStat]:
    """The server rows of a `show stat` CSV answer, by server name."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    stats = {}
    for row in rows:
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        stats[row["svname"]] = ServerStat(
            name=row["svname"],
            status=row.get("status", ""),
            current=int(row.get("scur") or 0),
            total=int(row.get("stot") or 0),
            connect_errors=int(row.get("econ") or 0),
            redispatched=int(row.get("wredis") or 0),
        )
    return stats


def stats_command(path: Path, command: str, timeout: float = 2.0) -> str:
    """One command on HAProxy's stats socket, its whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode()


class HAProxy:
    """haproxy -db -f CONFIG as a child, optionally inside a namespace.

    `stats_socket` must be the path the configuration's `stats socket` names.
    """

    def __init__(
        self,
        binary: str,
        config: str,
        workdir: Path,
        stats_socket: Path,
        netns: str | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(config)
        self.netns = netns
        self.stats_socket = stats_socket
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "haproxy.log"

    def __enter__(self) -> HAProxy:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        check = subprocess.run(
            [self.binary, "-c", "-f", str(self.config_path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejected its configuration: {check.stdout}{check.stderr}")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [*prefix, self.binary, "-db", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:  # ready once its stats socket answers
            try:
                stats_command(self.stats_socket, "show info")
                return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"haproxy did not start: {self.log_text()}") from None
                time.sleep(0.02)

    def stats(self) -> dict[str, ServerStat]:
        return parse_show_stat(stats_command(self.stats_socket, "show stat"))

    def wait_until(self, condition: str, servers: Sequence[str], timeout: float = 10.0) -> float:
        """Wait until every named server is "up" or "down"; the seconds it took."""
        started = time.monotonic()
        while True:
            stats = self.stats()
            if all((stats[s].up if condition == "up" else not stats[s].up) for s in servers):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                states = {s: stats[s].status for s in servers}
                raise TimeoutError(f"servers not {condition} after {timeout} s: {states}")
            time.sleep(0.02)

    def log_text(self) -> str:
        return self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
