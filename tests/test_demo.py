"""`framelab demo`, the README's main job: it runs and reports, on its own, in a screen a part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_sticky_demo_and_experiments(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    command = [sys.executable, "-m", "framelab", "demo", "--experiments", "sticky", "flush"]
    done = subprocess.run(
        [*command, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # the report folder goes to the current directory
        env={**os.environ, "COLUMNS": "100"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Sticky packets" in done.stdout and "Verdicts" in done.stdout
    data = json.loads(out.read_text())
    sticky = data["sticky"]
    assert sticky["framing_restored"] is True
    claims = {r["claim"]: r["verdict"] for r in data["experiments"]}
    assert {"C06", "C17", "C20", "C31"} <= set(claims)
    assert set(claims.values()) <= {"confirmed", "partly", "differs", "skipped"}
    # the evidence is in the report, not on the screen
    report = tmp_path / "framelab-report" / "report.html"
    assert report.is_file() and f"report: {report}" in done.stdout
    assert "Flags [" not in done.stdout  # no packet traces without -v
    assert len(done.stdout.splitlines()) < 60
