"""When a benchmark's numbers cannot mean much, say so next to them.

A rate is worth reading only when the run could measure it. Each check
below looks at what this run observed and returns a sentence, or nothing:
- one round per cell: there is no spread, and one unlucky window decides;
- short windows: a fraction of a second is dominated by start-up noise;
- a busy machine: the load average when the run started, against the cores;
- a server that was not CPU-bound in a throughput case (D > 1): its rate is
  then what the client or the machine allowed, not what the server can do;
- a cell whose rounds spread widely (min-max over the median);
- a cell in one of whose windows the hypervisor ran someone else on this
  virtual machine's CPUs (steal, from /proc/stat): the machine was shared.
Cost: one pass over the summaries.
"""

from __future__ import annotations

import os

from framelab.benchmarks.grid import Plan, human_size
from framelab.benchmarks.runner import Summary

#: below this share of one core, a throughput case's server was waiting
CPU_BOUND = 0.85
#: windows shorter than this are mostly warm-up noise
SHORT_WINDOW = 0.5
#: rounds spreading more than this (min-max over the median) are noisy
NOISY_SPREAD = 0.15
#: a load average above this share of the cores means others want the CPU
BUSY_LOAD = 0.5
#: steal above this share of the CPUs' time in a window: other tenants' load
STOLEN = 0.03


def spread(summary: Summary) -> float | None:
    """(max - min) / median of the rounds' frames/s; None with fewer than 2."""
    rounds = summary.per_round_frames_per_s
    if len(rounds) < 2 or summary.frames_per_s <= 0:
        return None
    return (max(rounds) - min(rounds)) / summary.frames_per_s


def machine_load() -> float | None:
    """The 1-minute load average, if this system has one."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def caveats(
    plan: Plan, summaries: list[Summary], load: float | None, cores: int | None
) -> list[str]:
    out = []
    if plan.rounds == 1:
        out.append("one round per cell: no spread is known, one window decides (use --rounds 3)")
    if plan.duration < SHORT_WINDOW:
        out.append(f"windows of {plan.duration:g} s are short: rates carry start-up noise")
    if load is not None and cores and load > BUSY_LOAD * cores:
        out.append(
            f"the machine was busy when the run started (load average {load:.1f} on "
            f"{cores} cores): rates may be low and uneven"
        )
    idle, noisy, stolen = [], [], []
    for s in summaries:
        where = f"{s.target} {human_size(s.size)} D={s.depth} C={s.connections}"
        if s.ok and s.depth > 1 and s.server_cpu is not None and s.server_cpu < CPU_BOUND:
            idle.append(f"{where} ({s.server_cpu:.0%})")
        noise = spread(s) if s.ok else None
        if noise is not None and noise > NOISY_SPREAD:
            noisy.append(f"{where} ({noise:.0%})")
        if s.ok and s.steal is not None and s.steal > STOLEN:
            stolen.append(f"{where} ({s.steal:.0%})")
    if idle:
        out.append(
            "not CPU-bound (server's share of a core) in a throughput case, so the rate is the "
            f"client's or the machine's limit, not the server's: {', '.join(idle)}"
        )
    if noisy:
        out.append(f"rounds disagree (min-max over the median): {', '.join(noisy)}")
    if stolen:
        out.append(
            "the hypervisor gave this machine's CPU time to others during a window "
            f"(steal, the most in a round): {', '.join(stolen)}"
        )
    return out
