"""framelab cluster's report from synthetic runs (no HAProxy, no namespaces); CLI mistakes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from framelab import cli
from framelab.cluster import haproxy
from framelab.cluster.haproxy import Backend, ServerStat
from framelab.cluster.load import ConnectionRecord
from framelab.cluster.report import (
    as_json,
    connections_over_time,
    draw_chart,
    failover,
    failover_sentence,
    summarize,
    time_wait_sentence,
)
from framelab.cluster.run import ClusterResult, ClusterSpec, PortBudget, Sample, TimeWaitCount

S1, S2 = "10.232.1.1:7000", "10.232.2.1:7000"


def record(
    started: float, backend: str | None, frames: int = 5, error: str | None = None
) -> ConnectionRecord:
    return ConnectionRecord(started, started + 0.05, backend, "10.232.0.1:1", frames, 0, error)


def stat(name: str, status: str, total: int, current: int = 0) -> ServerStat:
    return ServerStat(name, status, current, total, connect_errors=0, redispatched=0)


def synthetic() -> ClusterResult:
    """s2 killed at 1.0 s, seen DOWN at 1.3 s, last sent a session at 1.2 s."""
    spec = ClusterSpec(servers=2, seconds=2.0, event="kill")
    result = ClusterResult(
        spec, "2.6.12", [Backend("s1", "10.232.1.1", 7000), Backend("s2", "10.232.2.1", 7000)]
    )
    result.records = [
        record(0.1, S1),
        record(0.2, S2),
        record(0.98, S2, frames=2, error="ConnectionError: closed"),  # open at the kill
        record(1.02, None, frames=0, error="ConnectionError: closed"),
        record(1.5, S1),
    ]
    result.samples = [
        Sample(0.9, {"s1": stat("s1", "UP", 10), "s2": stat("s2", "UP", 10, 1)}),
        Sample(1.1, {"s1": stat("s1", "UP", 11), "s2": stat("s2", "UP", 11)}),
        Sample(1.2, {"s1": stat("s1", "UP", 12), "s2": stat("s2", "UP 1/2", 12)}),
        Sample(1.3, {"s1": stat("s1", "UP", 13), "s2": stat("s2", "DOWN", 12)}),
    ]
    result.event_at = 1.0
    result.victim_exit = -9
    result.time_wait = [
        TimeWaitCount("client", "to the balancer", 5),
        TimeWaitCount("balancer", "from clients", 0),
        TimeWaitCount("balancer", "to servers", 4),
        TimeWaitCount("s1", "from the balancer", 0),
    ]
    result.port_budget = PortBudget((32768, 60999), "2")
    return result


def test_summaries_count_what_clients_saw_and_what_haproxy_counted() -> None:
    rows = {s.name: s for s in summarize(synthetic())}
    assert (rows["s1"].connections, rows["s1"].frames, rows["s1"].failed) == (2, 10, 0)
    assert (rows["s2"].connections, rows["s2"].frames, rows["s2"].failed) == (2, 7, 1)
    assert rows["s2"].sessions == 12  # the last sample's stot
    assert rows["(none)"].failed == 1


def test_failover_timing_comes_from_the_samples() -> None:
    f = failover(synthetic())
    assert f is not None
    assert f.marked_down_after == pytest.approx(0.3)
    assert f.last_session_after == pytest.approx(0.2)  # stot rose 11 -> 12 at 1.2 s
    assert f.last_connection_after is None  # no client connection on s2 began after the kill
    assert (f.open_at_event, f.lost, f.unanswered) == (1, 1, 1)
    sentence = failover_sentence(f)
    assert sentence.startswith("s2 killed (SIGKILL) at 1.00 s: HAProxy marked it DOWN 300 ms later")
    assert "1 of its connections failed (1 were open at that moment)" in sentence
    assert "and 1 failed before any server answered" in sentence


def test_no_event_no_failover() -> None:
    result = synthetic()
    result.event_at = None
    assert failover(result) is None


def test_time_wait_names_who_closed_first_and_the_port_budget() -> None:
    text = time_wait_sentence(synthetic())
    assert "held by the client (to the balancer) and the balancer (to servers)" in text
    assert "32768-60999 (tcp_tw_reuse=2) allow about 471 new connections a second" in text
    quiet = synthetic()
    quiet.time_wait = [TimeWaitCount("client", "to the balancer", 0)]
    assert time_wait_sentence(quiet).startswith("no TIME_WAIT anywhere")


def test_buckets_json_and_chart(tmp_path: Path, png_magic: bytes) -> None:
    result = synthetic()
    series = connections_over_time(result)
    assert sum(series["s1"]) == 2 and sum(series["s2"]) == 2
    assert series["s1"][1] == 1  # 0.1 s falls in the second 100 ms bucket
    data = json.loads(json.dumps(as_json(result)))
    assert data["failover"]["victim"] == "s2"
    assert len(data["connections"]) == 5
    path = draw_chart(result, tmp_path / "c.png")
    assert path.read_bytes().startswith(png_magic)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--servers", "0"], "argument --servers: 0 must be 1..20"),
        (["--seconds", "1000"], "argument --seconds: 1000 must be 0.5..120"),
    ],
)
def test_out_of_range_options_are_refused_while_parsing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["cluster", *argv])
    assert exit_status.value.code == 2
    first, usage = capsys.readouterr().err.strip().splitlines()
    assert first == f"framelab cluster: error: {message}"
    assert usage.startswith("usage: framelab cluster ")


def test_a_victim_beyond_the_servers_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["cluster", "--servers", "2", "--victim", "3"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "framelab cluster: --victim must be 1..2 (or 0: the last), not 3"


def test_missing_haproxy_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(haproxy, "PLACES", ())
    assert cli.main(["cluster", "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "haproxy is not installed; install it with: apt-get install haproxy" in err
