"""The RPC peers of the benchmark: the readexactly server, grpc.aio and
msgpack-rpc-python, each measured by its client, their ratios and goals in
the bench JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from framelab.benchmarks import peer_env
from framelab.benchmarks.grpc_load import run_load as grpc_run_load
from framelab.benchmarks.loadgen import LoadSpec, run_load
from framelab.benchmarks.msgpackrpc_load import run_load as msgpackrpc_run_load
from framelab.benchmarks.targets import GRPC, MSGPACK_RPC, READEXACTLY
from framelab.servers.runner import run_on_loop


def test_readexactly_peer_answers_like_the_msgpack_server() -> None:
    with READEXACTLY.server() as server:
        spec = LoadSpec(server.host, server.port, 200, 4, 2, 0.05, 0.2, message="msgpack")
        result = run_on_loop("asyncio", run_load(spec))
    assert result.error is None, result.error  # every reply byte-checked against the tape
    assert result.frames > 0 and result.checked_bytes > 0


def test_grpc_client_checks_every_reply() -> None:
    pytest.importorskip("grpc")
    with GRPC.server() as server:
        spec = LoadSpec(server.host, server.port, 64, 2, 2, 0.05, 0.2, message="grpc")
        result = run_on_loop("asyncio", grpc_run_load(spec))
        empty = run_on_loop(
            "asyncio", grpc_run_load(LoadSpec(server.host, server.port, 0, 1, 1, 0.0, 0.1))
        )
    assert result.error is None, result.error
    assert result.frames > 0 and result.checked_bytes >= result.frames * 64
    assert empty.error is None and empty.frames > 0 and empty.latency is not None  # D = 1 timed


@pytest.mark.slow
def test_the_msgpack_rpc_library_answers_our_client_from_its_own_environment() -> None:
    """msgpack-rpc-python runs in an environment of its own (its msgpack-python
    0.5 and Tornado 4 must not replace ours); our asyncio client checks every
    reply, at 1 MiB too."""
    assert MSGPACK_RPC.environment is not None
    try:
        peer_env.ensure(MSGPACK_RPC.environment)
    except peer_env.PeerEnvironmentUnavailable as error:
        pytest.skip(f"no package index to make the peer's environment: {error}")
    with MSGPACK_RPC.server() as server:
        small = LoadSpec(server.host, server.port, 64, 4, 2, 0.05, 0.2, message="msgpack-rpc")
        large = LoadSpec(server.host, server.port, 1 << 20, 1, 1, 0.0, 0.2, message="msgpack-rpc")
        results = [run_on_loop("asyncio", msgpackrpc_run_load(spec)) for spec in (small, large)]
    for spec, result in zip((small, large), results, strict=True):
        assert result.error is None, result.error
        assert result.frames > 0 and result.checked_bytes >= result.frames * spec.size
    assert results[1].latency is not None  # D = 1 is timed
    assert msgpack.version >= (1, 0)  # ours was not replaced by the peer's


def test_rpc_goals_are_measured_in_one_run(tmp_path: Path) -> None:
    pytest.importorskip("grpc")
    out = tmp_path / "bench.json"
    targets = f"msgpack-protocol/uvloop,{READEXACTLY.name},{GRPC.name}"
    grid = ["--targets", targets, "--cases", "64/32/2,1024/1/2"]
    timing = ["--warmup", "0.1", "--duration", "0.3", "--rounds", "1"]
    # a missed goal is what bench reports, not what this test asserts
    output = ["--json", str(out), "--allow-missed-goals"]
    done = subprocess.run(
        [sys.executable, "-m", "framelab", "bench", *grid, *timing, *output],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["errors"] == []
    ratios = {row["case"]: row for row in doc["ratios"]}
    assert ratios["64/32"]["msgpack / gRPC"] > 0 and ratios["1024/1"]["msgpack / readexactly"] > 0
    goals = {(g["case"], g["what"]): g for g in doc["goals"]}
    assert goals[("64/32", "frames/s, msgpack / gRPC")]["met"] is not None
    assert goals[("1024/1", "p99 latency, msgpack / gRPC")]["measured"] > 0
