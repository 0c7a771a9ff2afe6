"""framelab behind a real HAProxy: PROXY v1/v2 interop, the framed health check, drain, failover.

HAProxy is Debian's package (system-packages.txt); without it every test
here skips, naming it. The interop tests run on loopback (HAProxy binds
127.0.0.1, the client 127.0.0.3, so only a PROXY header can tell the server
who the client is); the cluster tests build namespaces and need root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from reliability.support import read_frames, request

from framelab.cluster.haproxy import (
    Backend,
    CheckTiming,
    HAProxy,
    HAProxyUnavailable,
    config_text,
    find_haproxy,
    health_reply,
    health_request,
    parse_show_stat,
)
from framelab.cluster.report import failover, summarize
from framelab.cluster.run import ClusterSpec, run_cluster
from framelab.lab.netns import leftover_namespaces
from framelab.servers.config import ServerConfig
from framelab.servers.runner import BackgroundServer

try:
    HAPROXY, VERSION = find_haproxy()
except HAProxyUnavailable as exc:
    pytestmark = pytest.mark.skip(reason=str(exc))
    HAPROXY, VERSION = "", ""

FAST = CheckTiming(inter_ms=100, fall=2, rise=1, timeout_ms=500)
CLIENT_HOST = "127.0.0.3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def balanced(
    server: BackgroundServer, proxy_line: str, timing: CheckTiming = FAST
) -> Iterator[tuple[HAProxy, tuple[str, int]]]:
    """HAProxy on loopback in front of one in-process server, checked UP."""
    frontend = ("127.0.0.1", free_port())
    backends = [Backend("s1", server.host, server.port)]
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "admin.sock"
        text = config_text(frontend, backends, stats, timing, proxy_line=proxy_line)
        with HAProxy(HAPROXY, text, Path(tmp), stats) as haproxy:
            haproxy.wait_until("up", ["s1"], timeout=5)
            yield haproxy, frontend


def ask_through(frontend: tuple[str, int], op: str) -> dict[str, object]:
    with socket.create_connection(frontend, timeout=5, source_address=(CLIENT_HOST, 0)) as sock:
        sock.sendall(request(op, None, 7))
        (reply,) = [msgpack.unpackb(f) for f in read_frames(sock, 1)]
        result: dict[str, object] = reply["result"]
        result["client_port"] = sock.getsockname()[1]
        return result


@pytest.mark.parametrize(
    "proxy_line", ["send-proxy", "send-proxy-v2", "send-proxy-v2 proxy-v2-options crc32c"]
)
def test_haproxy_tells_the_server_who_the_client_is(proxy_line: str) -> None:
    config = ServerConfig(mode="msgpack", proxy_protocol=True)
    with BackgroundServer(config) as server, balanced(server, proxy_line) as (_, frontend):
        peer = ask_through(frontend, "peer")
    assert peer["host"] == CLIENT_HOST  # the header's source, not HAProxy's 127.0.0.1
    assert peer["port"] == peer["client_port"]
    assert peer["via"] == "proxy-protocol"
    assert str(peer["proxy"]).startswith("127.0.0.1:")
    assert peer["server"] == f"{server.host}:{server.port}"


def test_without_proxy_protocol_the_server_sees_the_balancer() -> None:
    """The reason for the header: in TCP mode the socket's peer is HAProxy."""
    plain = ServerConfig(mode="msgpack")
    with tempfile.TemporaryDirectory() as tmp, BackgroundServer(plain) as srv:
        frontend, stats = ("127.0.0.1", free_port()), Path(tmp) / "admin.sock"
        text = config_text(frontend, [Backend("s1", srv.host, srv.port)], stats, FAST)
        text = text.replace(" send-proxy-v2", "").replace(" check-send-proxy", "")
        with HAProxy(HAPROXY, text, Path(tmp), stats) as haproxy:
            haproxy.wait_until("up", ["s1"], timeout=5)
            peer = ask_through(frontend, "peer")
    assert peer["host"] == "127.0.0.1" and peer["via"] == "socket"


def test_the_health_check_fails_while_the_server_drains() -> None:
    config = ServerConfig(mode="msgpack", proxy_protocol=True)
    with BackgroundServer(config) as server, balanced(server, "send-proxy-v2") as (haproxy, _):

        def draining(on: bool) -> None:
            server.connections.draining = on

        server.call(lambda: draining(True))
        took = haproxy.wait_until("down", ["s1"], timeout=5)
        # fall=2 checks 100 ms apart, each failing as soon as the reply is in
        assert took < 1.5
        server.call(lambda: draining(False))
        haproxy.wait_until("up", ["s1"], timeout=5)


def test_the_documented_check_bytes() -> None:
    """The README quotes these lines; they must be what the cluster sends."""
    assert health_request().hex() == "0000000f82a26f70a66865616c7468a2696400"
    reply = "0000001883a2696400a26f6bc3a6726573756c74a773657276696e67"
    assert health_reply().hex() == reply
    assert msgpack.unpackb(health_reply()[4:]) == {"id": 0, "ok": True, "result": "serving"}


def test_show_stat_rows_are_parsed() -> None:
    text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
        "wretr,wredis,status,\n"
        "servers,s1,0,0,2,5,,40,0,0,,0,,3,0,0,1,UP,\n"
        "servers,s2,0,0,0,5,,10,0,0,,0,,0,0,0,0,DOWN,\n"
        "servers,BACKEND,0,0,2,5,,50,0,0,0,0,,3,0,0,1,UP,\n"
    )
    stats = parse_show_stat(text)
    assert set(stats) == {"s1", "s2"}
    assert (stats["s1"].current, stats["s1"].total, stats["s1"].connect_errors) == (2, 40, 3)
    assert stats["s1"].up and not stats["s2"].up


# -- the cluster: namespaces, several servers ------------------------------------
def small(event: str, **changes: object) -> ClusterSpec:
    return ClusterSpec(
        servers=2,
        seconds=2.0,
        workers=3,
        frames_per_connection=10,
        event=event,  # type: ignore[arg-type]
        event_at=0.35,
        drain_delay=1.5,  # well past fall x inter (200 ms), even on a loaded machine
        timing=FAST,
        **changes,  # type: ignore[arg-type]
    )


@pytest.mark.root
@pytest.mark.slow
def test_cluster_peer_op_sees_the_client_namespace_and_failover_corrupts_nothing() -> None:
    result = run_cluster(small("kill"))
    assert leftover_namespaces() == []
    clients = {r.client.rsplit(":", 1)[0] for r in result.records if r.client is not None}
    assert clients == {"10.232.0.1"}  # the client namespace's address, through HAProxy
    summaries = {s.name: s for s in summarize(result)}
    assert sum(s.corrupted for s in summaries.values()) == 0
    assert summaries["s1"].frames > 0 and summaries["s2"].frames > 0
    f = failover(result)
    assert f is not None and f.marked_down_after is not None
    assert f.marked_down_after < 2.0
    assert f.exit_status == -9
    # once DOWN, nothing more went to the dead server
    down_at = f.at + f.marked_down_after
    assert not [
        r
        for r in result.records
        if r.backend and r.backend.startswith("10.232.2.") and r.started > down_at
    ]
    # the survivors took the rest: every connection after the kill that began
    # once it was DOWN completed
    assert all(r.error is None for r in result.records if r.started > down_at + 0.1)


@pytest.mark.root
@pytest.mark.slow
def test_cluster_drain_loses_no_connection() -> None:
    result = run_cluster(small("drain"))
    f = failover(result)
    assert f is not None
    assert f.exit_status == 0
    assert f.marked_down_after is not None and f.marked_down_after < 1.0  # before it stopped
    failed = [r for r in result.records if r.error is not None]
    assert failed == []
    assert sum(s.corrupted for s in summarize(result)) == 0
    # it served until the balancer moved away, then nothing new reached it
    assert f.last_connection_after is None or f.last_connection_after < f.marked_down_after + 0.1


def interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_cluster_leaves_no_namespace_or_process(sig: int) -> None:
    command = [sys.executable, "-m", "framelab", "cluster", "--servers", "2", "--seconds", "60"]
    child = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background (`cmd &`) ignores SIGINT, and so
        # would the cluster: it must get Ctrl-C as a terminal's foreground job does
        preexec_fn=interruptible,
    )
    try:
        assert child.stderr is not None
        assert child.stderr.readline().startswith("cluster up")
        mine = f"framelab-{child.pid}-"
        namespaces = [n for n in leftover_namespaces(every_process=True) if n.startswith(mine)]
        assert len(namespaces) == 4  # the balancer, the client, two servers
        inside = [
            int(pid)
            for name in namespaces
            for pid in subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
        ]
        assert len(inside) == 5  # HAProxy, and two servers: a supervisor and a worker each
        child.send_signal(sig)
        assert child.wait(20) == 130
    finally:
        if child.poll() is None:  # failed: still clean up what it made
            child.send_signal(signal.SIGINT)  # a second one aborts at once
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)
            child.kill()
            child.wait()
            _remove_remains(mine)
    left = [n for n in leftover_namespaces(every_process=True) if n.startswith(mine)]
    assert left == []
    assert [pid for pid in inside if Path(f"/proc/{pid}").exists()] == []


def _remove_remains(prefix: str) -> None:
    """What a cluster killed before its cleanup left: processes in its
    namespaces, then the namespaces (test hygiene only)."""
    for name in leftover_namespaces(every_process=True):
        if not name.startswith(prefix):
            continue
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False)
