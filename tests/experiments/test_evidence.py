"""`experiment run --pcap DIR --html PATH`: a run's evidence written, and the run saved."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from framelab.cli import main
from framelab.common import last_run
from framelab.experiments import engine, registry
from framelab.experiments.context import RunContext
from framelab.experiments.pcap import read_pcap
from framelab.experiments.registry import EXPERIMENT_MODULES, Experiment
from framelab.experiments.result import ClaimResult, Verdict
from framelab.lab.capture import Capture


def captured_run(ctx: RunContext) -> list[ClaimResult]:
    """One loopback connection, captured when root: a trace for C97, nothing for C96."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        trace: list[str] = []
        if ctx.root:
            with Capture("lo", ports=[port]) as cap:
                with socket.create_connection(("127.0.0.1", port)) as client:
                    server, _ = listener.accept()
                    client.sendall(b"ping")
                    assert server.recv(10) == b"ping"
                    server.close()
                cap.wait_for(lambda p: p.has("F") and p.sport == port)
            trace = cap.lines(port)[:2]
    return [
        ClaimResult("wire", "C97", Verdict.CONFIRMED, "seen", {"n": 1}, trace),
        ClaimResult("wire", "C96", Verdict.DIFFERS, "no trace"),
    ]


@pytest.fixture
def wire_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Experiment("wire", ("C97", "C96"), "partly", "one captured connection", captured_run)
    real_load = registry.load
    monkeypatch.setattr(engine, "load", lambda name: fake if name == "wire" else real_load(name))
    monkeypatch.setattr(engine, "EXPERIMENT_MODULES", [*EXPERIMENT_MODULES, "wire"])


@pytest.mark.usefixtures("wire_experiment")
def test_run_writes_pcaps_the_report_and_the_last_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "out" / "report.html"
    pcaps = tmp_path / "out" / "pcaps"
    assert main(["experiment", "run", "wire", "--pcap", str(pcaps), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert f"report: {html.resolve()}" in out.replace("\n", "")
    page = html.read_text()
    assert 'data-claim="C97"' in page and 'data-claim="C40"' in page  # every claim listed
    saved = {r["claim"]: r["verdict"] for r in last_run.load()}
    assert saved == {"C97": "confirmed", "C96": "differs"}
    if not RunContext().root:
        assert "captures need root" in out and not list(pcaps.glob("*.pcap"))
        return
    _, frames = read_pcap((pcaps / "C97.pcap").read_bytes())
    assert len(frames) >= 6  # the whole connection, though the trace kept 2 lines
    assert 'href="pcaps/C97.pcap"' in page
    assert not (pcaps / "C96.pcap").exists()


def test_unknown_sysctl_in_saved_run_is_harmless(tmp_path: Path) -> None:
    """A saved run from another version (extra keys, a claim the table does not know)."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps([{"claim": "C99", "verdict": "partly", "observed": "text"}]))
    assert main(["sysctl", "--results", str(path), "--json", str(tmp_path / "s.json")]) == 0
