"""The soak: 500 connections, random frame sizes, every reply verified; and
the soak's own checker, so a passing soak means something."""

from __future__ import annotations

import msgpack
import pytest

from framelab.clients.soak import Probes, SoakConnection, SoakOptions, SoakResult, soak, summary
from framelab.servers.config import IoStyle, Mode


@pytest.mark.parametrize(("mode", "io"), [("framed", "protocol"), ("msgpack", "streams")])
def test_500_connections_lose_nothing_and_leave_nothing(mode: Mode, io: IoStyle) -> None:
    options = SoakOptions(connections=500, seconds=1.5, max_size=128 * 1024, mode=mode, io=io)
    result = soak(options)
    print(summary(result))
    assert result.ok, result.problems
    assert result.frames > options.connections
    assert result.server_fds_after == result.server_fds_before
    assert result.server_exit == 0
    assert result.server_peak_rss is not None


async def test_the_checker_counts_lost_duplicated_and_corrupted_replies() -> None:
    options = SoakOptions(max_size=1024)
    result = SoakResult(connections=1, seconds=0)
    probes = Probes(7, options, bytes(range(256)) * 4)
    conn = SoakConnection(probes, depth=0, deadline=0, result=result)  # sends nothing itself
    sent = []
    for _ in range(6):
        payload, expected = probes.make()
        sent.append(payload)
        conn.in_flight.append(expected)
    corrupt = bytearray(sent[4])
    corrupt[-1] ^= 1  # the body's last byte, or the connection id's if the body is empty
    conn.frames_received([sent[0], sent[0], sent[2], bytes(corrupt), sent[5]])
    # 0 ok; 0 again duplicated; 2 ok after 1 is lost; the corrupt reply stands for
    # the next expected (3); 5 ok after 4 is lost
    assert (result.frames, result.duplicated, result.lost, result.corrupted) == (3, 1, 2, 1)
    assert not conn.in_flight


def test_msgpack_probes_accept_only_their_own_echo() -> None:
    options = SoakOptions(max_size=4096, mode="msgpack")
    probes = Probes(3, options, bytes(4096))
    request, (seq, length) = probes.make()
    probe = msgpack.unpackb(request)["args"]
    assert probes.read(msgpack.packb({"id": seq, "ok": True, "result": probe})) == (seq, length)
    other = Probes(4, options, bytes(4096))
    assert other.read(msgpack.packb({"id": seq, "ok": True, "result": probe})) is None
    assert probes.read(msgpack.packb({"ok": False, "error": {}})) is None
    assert probes.read(b"\xc1") is None


def test_a_soak_with_rolling_restarts_has_no_failed_connection() -> None:
    options = SoakOptions(connections=8, seconds=3.0, max_size=4096, restart_every=1.0)
    result = soak(options)
    assert result.ok, summary(result)
    assert result.restarts >= 1 and result.restarts_done == result.restarts
    assert result.connections_attempted > 100
    assert result.connections_failed == 0
    restarts = result.restarts
    assert f"restarts {restarts} (SIGHUP, {restarts} finished)" in summary(result)
