"""X1: closing one listener of an SO_REUSEPORT group, with and without
net.ipv4.tcp_migrate_req: why a naive reuseport restart loses connections.

Not one of the notes' claims: the server's rolling restart depends on it
(servers/supervisor.py). In a fresh namespace for each setting, two
listeners share a port with SO_REUSEPORT; clients connect (the kernel
hashes each to one listener's own accept queue) and send a byte; nobody
accepts. Then listener A is closed and we look: which clients were reset,
and how many connections listener B can now accept. TCP_INFO on each
listener says how many were queued where (tcpi_unacked on a listener is its
accept queue's length). The trace: the RST segments a capture on the
namespace's loopback saw.

Expected (Linux 5.14+): with tcp_migrate_req=0 the connections queued on A
are reset (RST to each client) and B keeps only its own; with 1 they move
to B, which accepts them all, and no client is reset.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from framelab.experiments.context import RunContext
from framelab.experiments.registry import Experiment
from framelab.experiments.result import ClaimResult, Part, judge_parts, skipped
from framelab.lab.capture import Capture
from framelab.lab.kernel import errno_name, tcp_info
from framelab.lab.netns import fresh_namespace
from framelab.lab.sockets import LOOPBACK, address_of, close_all

NAME = "reuseport"
CLAIM = "X1"
CLIENTS = 16  # the chance that the hash puts all on one listener: 2 in 65536


def reuseport_listener(port: int) -> socket.socket:
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(CLIENTS)
    except BaseException:
        sock.close()
        raise
    return sock


def client_outcome(sock: socket.socket) -> str:
    """What a queued client reads once the listeners are settled: 'alive' if
    nothing (its connection waits, or was accepted), or the errno."""
    sock.setblocking(False)
    try:
        data = sock.recv(1)
    except BlockingIOError:
        return "alive"
    except OSError as error:
        return errno_name(error) or str(error)
    return "EOF" if not data else "data"


def close_one_of_a_group(migrate: int, capture: bool) -> dict[str, Any]:
    """In a fresh namespace with tcp_migrate_req=`migrate`: queue clients on
    two reuseport listeners, close A, see who is reset and what B accepts."""
    with fresh_namespace({"net.ipv4.tcp_migrate_req": str(migrate)}):
        first = reuseport_listener(0)
        port = address_of(first)[1]
        second = reuseport_listener(port)
        clients: list[socket.socket] = []
        trace: list[str] = []
        try:
            cap = Capture("lo", ports=[port]) if capture else None
            with cap if cap is not None else contextlib.nullcontext():
                for _ in range(CLIENTS):
                    client = socket.create_connection((LOOPBACK, port), timeout=2.0)
                    client.sendall(b"x")
                    clients.append(client)
                queued_a = tcp_info(first)["unacked"]
                queued_b = tcp_info(second)["unacked"]
                first.close()
                second.setblocking(False)
                accepted = []
                try:
                    while True:
                        accepted.append(second.accept()[0])
                except BlockingIOError:
                    pass
                for sock in accepted:
                    sock.recv(1)  # read the byte: closing them later sends FIN, not RST
                outcomes = [client_outcome(c) for c in clients]
                if cap is not None:
                    cap.wait_for(lambda p: "R" in p.flags, timeout=0.5 if migrate else 2.0)
                    trace = [line for line in cap.lines(port) if "Flags [R" in line]
                close_all(accepted)
        finally:
            close_all([second, *clients])
            first.close()
    return {
        "tcp_migrate_req": migrate,
        "clients": CLIENTS,
        "queued_on_closed": queued_a,
        "queued_on_other": queued_b,
        "accepted_by_other": len(accepted),
        "clients_reset": outcomes.count("ECONNRESET"),
        "outcomes": sorted(set(outcomes)),
        "trace": trace,
    }


def judge_x1(off: dict[str, Any], on: dict[str, Any]) -> list[Part]:
    """Pure: the parts of X1 from the two runs' observations."""
    lost = off["queued_on_closed"]
    return [
        Part(
            "with tcp_migrate_req=0, closing a listener resets the connections in its queue",
            None
            if lost == 0
            else off["clients_reset"] == lost
            and off["accepted_by_other"] == off["queued_on_other"],
            f"{lost} of {off['clients']} clients were queued on the closed listener,"
            f" {off['clients_reset']} were reset; the other listener accepted"
            f" {off['accepted_by_other']} (its own {off['queued_on_other']})",
        ),
        Part(
            "with tcp_migrate_req=1 they are accepted by the other listener",
            None
            if on["queued_on_closed"] == 0
            else on["clients_reset"] == 0 and on["accepted_by_other"] == on["clients"],
            f"{on['queued_on_closed']} were queued on the closed listener; the other accepted"
            f" {on['accepted_by_other']} of {on['clients']}, {on['clients_reset']} reset",
        ),
    ]


def run(ctx: RunContext) -> list[ClaimResult]:
    if not ctx.root:
        return [skipped(NAME, CLAIM, "needs root: a fresh network namespace per setting")]
    try:
        off, on = close_one_of_a_group(0, capture=True), close_one_of_a_group(1, capture=True)
    except OSError as error:  # a kernel without tcp_migrate_req (before 5.14)
        return [skipped(NAME, CLAIM, f"could not set net.ipv4.tcp_migrate_req: {error}")]
    trace = [f"tcp_migrate_req=0: {line}" for line in off.pop("trace")]
    trace += [f"tcp_migrate_req=1: {line}" for line in on.pop("trace")]
    parts = judge_x1(off, on)
    return [judge_parts(NAME, CLAIM, parts, {"migrate_off": off, "migrate_on": on}, trace=trace)]


EXPERIMENT = Experiment(
    name=NAME,
    claims=(CLAIM,),
    needs_root="yes",
    description=(
        "closing one listener of an SO_REUSEPORT group: its queued connections reset,"
        " or moved to the other with tcp_migrate_req=1"
    ),
    run=run,
)
