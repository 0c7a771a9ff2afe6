"""What a benchmark run means: ratios, goals, the machine, tables and JSON.

Ratios compare targets measured in the same run by the same client:
framed / raw (the cost of framing), uvloop / asyncio (what the loop buys),
framed / Twisted peer, streams / protocol, and compiled / pure-Python codec.
Goals (benchmarks.grid) are checked against those ratios, never against
absolute rates, which say more about the machine than about the code.
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from framelab.benchmarks.caveats import spread
from framelab.benchmarks.grid import LATENCY_GOALS, PLANS, THROUGHPUT_GOALS, Plan, human_size
from framelab.benchmarks.runner import Summary
from framelab.benchmarks.targets import (
    FRAMED,
    FRAMED_ASYNCIO,
    FRAMED_PURE,
    GRPC,
    MSGPACK,
    MSGPACK_RPC,
    PEER,
    RAW,
    READEXACTLY,
)
from framelab.common.words import plural

if TYPE_CHECKING:
    from rich.console import Console

#: (label, numerator target, denominator target)
RATIOS = (
    ("framed / raw", FRAMED.name, RAW.name),
    ("uvloop / asyncio", FRAMED.name, FRAMED_ASYNCIO.name),
    ("framed / peer", FRAMED.name, PEER.name),
    ("streams / protocol", "framed-streams/uvloop", FRAMED.name),
    ("compiled / pure", FRAMED.name, FRAMED_PURE.name),
    ("msgpack / framed", MSGPACK.name, FRAMED.name),
    ("msgpack / readexactly", MSGPACK.name, READEXACTLY.name),
    ("msgpack / gRPC", MSGPACK.name, GRPC.name),
    ("msgpack / msgpack-RPC", MSGPACK.name, MSGPACK_RPC.name),
)


#: how goals name the targets they compare
SHORT = {
    RAW.name: "raw",
    PEER.name: "Twisted peer",
    FRAMED.name: "framed",
    MSGPACK.name: "msgpack",
    READEXACTLY.name: "readexactly",
    GRPC.name: "gRPC",
    MSGPACK_RPC.name: "msgpack-RPC",
}


def short(target: str) -> str:
    return SHORT.get(target, target)


def environment() -> dict[str, Any]:
    """The machine and software a run's numbers belong to."""
    from framing import ACCELERATED
    from framing._msgpack_codec import ACCELERATED as MSGPACK_ACCELERATED

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("uvloop", "msgpack", "twisted"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        **versions,
        "compiled_codec": ACCELERATED,
        "compiled_msgpack": MSGPACK_ACCELERATED,
    }


def by_case(summaries: list[Summary]) -> dict[str, dict[str, Summary]]:
    table: dict[str, dict[str, Summary]] = {}
    for s in summaries:
        table.setdefault(s.case_key, {})[s.target] = s
    return table


def ratio(cases: dict[str, dict[str, Summary]], key: str, top: str, bottom: str) -> float | None:
    a, b = cases.get(key, {}).get(top), cases.get(key, {}).get(bottom)
    if a is None or b is None or not a.ok or not b.ok or b.frames_per_s <= 0:
        return None
    return a.frames_per_s / b.frames_per_s


def ratios(summaries: list[Summary]) -> list[dict[str, Any]]:
    cases = by_case(summaries)
    rows = []
    for key, targets in cases.items():
        any_summary = next(iter(targets.values()))
        row: dict[str, Any] = {
            "case": key,
            "size": any_summary.size,
            "depth": any_summary.depth,
        }
        for label, top, bottom in RATIOS:
            value = ratio(cases, key, top, bottom)
            if value is not None:
                row[label] = round(value, 3)
        rows.append(row)
    return rows


@dataclass
class GoalResult:
    case: str
    what: str
    goal: str
    measured: float | None
    met: bool | None  # None: not measured in this run


def goals(summaries: list[Summary]) -> list[GoalResult]:
    cases = by_case(summaries)
    out = []
    for goal in THROUGHPUT_GOALS:
        value = ratio(cases, goal.case_key, goal.of, goal.versus)
        out.append(
            GoalResult(
                goal.case_key,
                f"frames/s, {short(goal.of)} / {short(goal.versus)}",
                f">= {goal.at_least}",
                None if value is None else round(value, 3),
                None if value is None else value >= goal.at_least,
            )
        )
    for late in LATENCY_GOALS:
        mine, theirs = (
            cases.get(late.case_key, {}).get(late.of),
            cases.get(late.case_key, {}).get(late.versus),
        )
        p99: float | None = None
        if mine and theirs and mine.latency and theirs.latency and theirs.latency["p99_us"] > 0:
            p99 = mine.latency["p99_us"] / theirs.latency["p99_us"]
        out.append(
            GoalResult(
                late.case_key,
                f"p99 latency, {short(late.of)} / {short(late.versus)}",
                f"<= {late.at_most}",
                None if p99 is None else round(p99, 3),
                None if p99 is None else p99 <= late.at_most,
            )
        )
    return out


def document(plan: Plan, summaries: list[Summary], env: dict[str, Any]) -> dict[str, Any]:
    """The --json output."""
    return {
        "environment": env,
        "plan": {
            "name": plan.name,
            "warmup_s": plan.warmup,
            "duration_s": plan.duration,
            "rounds": plan.rounds,
            "targets": [t.name for t in plan.targets],
            "cases": [asdict(c) for c in plan.cases],
        },
        "results": [asdict(s) for s in summaries],
        "ratios": ratios(summaries),
        "goals": [asdict(g) for g in goals(summaries)],
        "errors": [f"{s.target} {s.case_key}: {e}" for s in summaries for e in s.errors],
    }


# -- tables ------------------------------------------------------------------
def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def cpu_split(s: Summary) -> str:
    """The server's CPU per message, 'user + kernel' µs ('-' when not measured)."""
    if s.server_user_us is None or s.server_system_us is None:
        return "-"
    return f"{s.server_user_us:.2f} + {s.server_system_us:.2f}"


def print_report(
    console: Console, plan: Plan, summaries: list[Summary], env: dict[str, Any]
) -> None:
    from rich.table import Table

    console.print(
        f"[bold]framelab bench[/] ({run_title(plan)}: {plan.warmup:g} s warm-up, "
        f"{plan.duration:g} s window, median of {plan.rounds}) on {env['cpu']}, "
        f"{env['cores']} cores, {env['kernel']}, Python {env['python']}, "
        f"uvloop {env['uvloop']}, compiled codec: {'yes' if env['compiled_codec'] else 'no'}, "
        f"compiled msgpack: {'yes' if env.get('compiled_msgpack') else 'no'}"
    )
    cases = by_case(summaries)
    for targets in cases.values():
        first = next(iter(targets.values()))
        latency = first.depth == 1
        title = f"{human_size(first.size)}, D={first.depth}, C={first.connections}"
        table = Table(title=title, title_justify="left", show_edge=False)
        for header in (
            "server",
            "frames/s",
            "spread",
            "MB/s",
            "vs raw",
            "server CPU",
            "µs/frame user + kernel",
            "peak RSS MiB",
        ):
            table.add_column(header, justify="left" if header == "server" else "right")
        if latency:
            for p in ("p50 µs", "p90 µs", "p99 µs", "p99.9 µs"):
                table.add_column(p, justify="right")
        raw = targets.get(RAW.name)
        for s in targets.values():
            if not s.ok:
                table.add_row(s.target, f"[red]error: {'; '.join(s.errors)[:80]}[/]")
                continue
            vs_raw = s.frames_per_s / raw.frames_per_s if raw is not None and raw.ok else None
            cells = [
                s.target,
                _num(s.frames_per_s),
                spread_label(s),
                _num(s.payload_mb_per_s, 1),
                _num(vs_raw, 2),
                "-" if s.server_cpu is None else f"{s.server_cpu:.0%}",
                cpu_split(s),
                _num(s.peak_rss_mib, 1),
            ]
            if latency and s.latency is not None:
                cells += [_num(s.latency[k], 0) for k in ("p50_us", "p90_us", "p99_us", "p99.9_us")]
            table.add_row(*cells)
        console.print(table)
        console.print()
    print_ratios(console, summaries)
    print_goals(console, goals(summaries))


def print_ratios(console: Console, summaries: list[Summary]) -> None:
    from rich.table import Table

    rows = ratios(summaries)
    labels = [label for label, _, _ in RATIOS if any(label in r for r in rows)]
    table = Table(title="ratios of frames/s (same run, same client)", title_justify="left")
    table.add_column("case")
    for label in labels:
        table.add_column(label, justify="right")
    for r in rows:
        table.add_row(
            case_label(r["size"], r["depth"]), *(_num(r.get(label), 2) for label in labels)
        )
    console.print(table)


def run_title(plan: Plan) -> str:
    """'full grid', 'quick grid', or the title a custom run was given."""
    return f"{plan.name} grid" if plan.name in PLANS else plan.name


def spread_label(s: Summary) -> str:
    """The rounds' min-max as a share of the median ('4%'); '-' for one round."""
    value = spread(s)
    return "-" if value is None else f"{value:.0%}"


def goal_tally(results: list[GoalResult]) -> str:
    """'2 of 9 goals missed', 'all 9 goals met', and how many this run could not check."""
    checked = [g for g in results if g.met is not None]
    missed = [g for g in checked if not g.met]
    if not checked:
        text = "no goal checked"
    elif missed:
        text = f"{len(missed)} of {plural(len(checked), 'goal')} missed"
    else:
        text = f"all {plural(len(checked), 'goal')} met" if len(checked) > 1 else "the 1 goal met"
    unchecked = len(results) - len(checked)
    if unchecked:
        text += f"; {unchecked} not checked (their case or server was not in this run)"
    return text


def print_goals(console: Console, results: list[GoalResult]) -> None:
    """The goals this run measured (the others only counted), then the tally."""
    from rich.table import Table

    checked = [g for g in results if g.met is not None]
    if checked:
        table = Table(title="goals (same run)", title_justify="left")
        for header in ("case", "measure", "goal", "measured", "met"):
            table.add_column(header, justify="right" if header in ("measured", "met") else "left")
        for g in checked:
            met = "[green]yes[/]" if g.met else "[red]no[/]"
            table.add_row(key_label(g.case), g.what, g.goal, _num(g.measured, 2), met)
        console.print(table)
    missed = any(g.met is False for g in results)
    console.print(f"[{'red' if missed else 'green'}]{goal_tally(results)}[/]")


# -- Markdown (for the README) ---------------------------------------------------
def markdown(plan: Plan, summaries: list[Summary], env: dict[str, Any]) -> str:
    """Frames/s per server and case, latency at D = 1, ratios and goals."""
    cases = by_case(summaries)
    keys = list(cases)
    labels = {k: key_label(k) for k in keys}
    lines = [
        f"`framelab bench` ({run_title(plan)}: {plan.warmup:g} s warm-up, {plan.duration:g} s "
        f"window, median of {plan.rounds}), {env['date'][:10]}, on {env['cpu']} "
        f"({env['cores']} cores), {env['kernel']}, Python {env['python']}, uvloop "
        f"{env['uvloop']}, compiled codec: {'yes' if env['compiled_codec'] else 'no'}, "
        f"compiled msgpack: {'yes' if env.get('compiled_msgpack') else 'no'}.",
        "",
        "Frames/s echoed (server CPU share of one core in brackets):",
        "",
        "| server | " + " | ".join(labels[k] for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    targets = list(dict.fromkeys(s.target for s in summaries))
    for target in targets:
        cells = []
        for k in keys:
            s = cases[k].get(target)
            if s is None or not s.ok:
                cells.append("-")
            else:
                cpu = "" if s.server_cpu is None else f" ({s.server_cpu:.0%})"
                cells.append(f"{_num(s.frames_per_s)}{cpu}")
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The server's CPU per message, µs, in user space + in the kernel (syscalls, TCP):",
        "",
        "| server | " + " | ".join(labels[k] for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for target in targets:
        split = [cases[k].get(target) for k in keys]
        cells = ["-" if s is None or not s.ok else cpu_split(s) for s in split]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    timed = [k for k in keys if next(iter(cases[k].values())).depth == 1]
    lines += ["", "Latency at D = 1, p50 / p99 / p99.9 in µs:", ""]
    lines += ["| server | " + " | ".join(labels[k] for k in timed) + " |"]
    lines += ["|---|" + "---:|" * len(timed)]
    for target in targets:
        cells = []
        for k in timed:
            s = cases[k].get(target)
            lat = s.latency if s is not None and s.ok else None
            cells.append(
                "-"
                if lat is None
                else " / ".join(_num(lat[p]) for p in ("p50_us", "p99_us", "p99.9_us"))
            )
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    rows = ratios(summaries)
    names = [label for label, _, _ in RATIOS if any(label in r for r in rows)]
    lines += ["", "Ratios of frames/s:", "", "| case | " + " | ".join(names) + " |"]
    lines += ["|---|" + "---:|" * len(names)]
    for r in rows:
        lines.append(
            f"| {case_label(r['size'], r['depth'])} | "
            + " | ".join(_num(r.get(n), 2) for n in names)
            + " |"
        )
    lines += [
        "",
        "Goals (same run; gRPC with its own client):",
        "",
        "| case | measure | goal | measured | met |",
    ]
    lines += ["|---|---|---|---:|---|"]
    results = goals(summaries)
    for g in results:
        if g.met is None:  # not in this run: counted in the tally below, not listed
            continue
        met = "yes" if g.met else "**no**"
        lines.append(
            f"| {key_label(g.case)} | {g.what} | {g.goal} | {_num(g.measured, 2)} | {met} |"
        )
    lines += ["", goal_tally(results) + "."]
    return "\n".join(lines) + "\n"


def case_label(size: int, depth: int) -> str:
    """'64 KiB D=1': how a case is named in every table."""
    return f"{human_size(size)} D={depth}"


def key_label(key: str) -> str:
    """case_label() of a 'SIZE/DEPTH' key (Summary.case_key, GoalResult.case)."""
    size, depth = key.split("/")
    return case_label(int(size), int(depth))
