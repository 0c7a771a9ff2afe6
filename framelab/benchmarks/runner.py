"""Run a plan: servers per case, the load generator per measurement.

For each case every target's server is started (fresh, so its peak RSS
belongs to this case), then the measurements run round by round, one
target after another, the order rotating each round: slow drift of a noisy
machine spreads over all targets instead of favouring one. A target's
figure for the case is the median over its rounds; latency percentiles
come from the rounds' histograms merged. The load generator is a process
of its own (`benchmarks.loadgen`), so client and server each have a core.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from framelab.benchmarks.grid import Case, Plan
from framelab.benchmarks.histogram import LatencyHistogram
from framelab.benchmarks.loadgen import LoadSpec
from framelab.benchmarks.targets import Target
from framelab.servers.process import ServerProcess

#: called after each measurement: (done, total, description)
Progress = Callable[[int, int, str], None]


@dataclass
class Summary:
    """One target in one case: medians over the rounds."""

    target: str
    kind: str
    loop: str
    io: str
    size: int
    depth: int
    connections: int
    rounds: int = 0
    frames_per_s: float = 0.0
    payload_mb_per_s: float = 0.0
    server_cpu: float | None = None  # share of one core over the window
    #: the server's CPU per message echoed, µs: in user space, and in the kernel
    #: (syscalls, the TCP stack): which side of the system call the time goes to
    server_user_us: float | None = None
    server_system_us: float | None = None
    #: the largest share of the machine's CPU time stolen by the hypervisor in a round
    steal: float | None = None
    client_cpu: float | None = None
    peak_rss_mib: float | None = None
    latency: dict[str, Any] | None = None  # percentiles in µs (D = 1)
    checked_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    per_round_frames_per_s: list[float] = field(default_factory=list)

    @property
    def case_key(self) -> str:
        return f"{self.size}/{self.depth}"

    @property
    def ok(self) -> bool:
        return not self.errors and self.rounds > 0


def run_loadgen(spec: LoadSpec, client: str = "framelab.benchmarks.loadgen") -> dict[str, Any]:
    """One measurement in a process of its own (the `client` module); its
    JSON result, or an error."""
    timeout = spec.warmup + spec.duration + spec.drain_timeout + 60
    try:
        done = subprocess.run(
            [sys.executable, "-m", client, json.dumps(asdict(spec))],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"load generator still running after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if not lines:
        return {"error": f"load generator failed: {done.stderr.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def summarize(target: Target, case: Case, results: list[dict[str, Any]]) -> Summary:
    summary = Summary(
        target.name, target.kind, target.loop, target.io, case.size, case.depth, case.connections
    )
    good = [r for r in results if not r.get("error")]
    summary.errors = [str(r["error"]) for r in results if r.get("error")]
    summary.rounds = len(good)
    if not good:
        return summary
    summary.per_round_frames_per_s = [round(r["frames_per_s"], 1) for r in good]
    summary.frames_per_s = statistics.median(r["frames_per_s"] for r in good)
    summary.payload_mb_per_s = summary.frames_per_s * case.size / 1e6
    cpu = [r["server_cpu_s"] / r["seconds"] for r in good if r.get("server_cpu_s") is not None]
    summary.server_cpu = statistics.median(cpu) if cpu else None
    steals = [r["steal"] for r in good if r.get("steal") is not None]
    summary.steal = max(steals) if steals else None
    timed = [r for r in good if r.get("server_user_s") is not None and r["frames"]]
    if timed:
        summary.server_user_us = statistics.median(
            r["server_user_s"] / r["frames"] * 1e6 for r in timed
        )
        summary.server_system_us = statistics.median(
            (r["server_cpu_s"] - r["server_user_s"]) / r["frames"] * 1e6 for r in timed
        )
    summary.client_cpu = statistics.median(r["client_cpu_s"] / r["seconds"] for r in good)
    summary.checked_bytes = sum(r["checked_bytes"] for r in good)
    if case.depth == 1:
        merged = LatencyHistogram()
        for r in good:
            h = r["histogram"]
            merged.merge(LatencyHistogram.from_sparse(h["buckets"], h["min_ns"], h["max_ns"]))
        summary.latency = merged.summary()
    return summary


def run_plan(plan: Plan, progress: Progress | None = None) -> list[Summary]:
    total, done = plan.measurements, 0
    summaries: list[Summary] = []
    for case in plan.cases:
        results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in plan.targets}
        peaks: dict[str, float | None] = {}
        with contextlib.ExitStack() as stack:
            servers: dict[str, ServerProcess] = {}
            for target in plan.targets:
                try:
                    servers[target.name] = stack.enter_context(target.server())
                except (RuntimeError, OSError) as error:
                    results[target.name].append({"error": f"server did not start: {error}"})
            for round_ in range(plan.rounds):
                shift = round_ % len(plan.targets)
                for target in plan.targets[shift:] + plan.targets[:shift]:
                    server = servers.get(target.name)
                    if server is not None:
                        spec = LoadSpec(
                            server.host,
                            server.port,
                            case.size,
                            case.depth,
                            case.connections,
                            plan.warmup,
                            plan.duration,
                            message=target.message,
                            server_pid=server.pid,
                        )
                        results[target.name].append(run_loadgen(spec, target.client))
                    done += 1
                    if progress is not None:
                        progress(done, total, f"{case.label} · {target.name}")
            for name, server in servers.items():
                try:
                    peaks[name] = server.stats().peak_rss / (1024 * 1024)
                except OSError:
                    peaks[name] = None
        for target in plan.targets:
            summary = summarize(target, case, results[target.name])
            summary.peak_rss_mib = peaks.get(target.name)
            summaries.append(summary)
    return summaries
