"""`framelab bench`: framed echo throughput and latency vs raw and a peer.

    framelab bench --quick --json out.json
    framelab bench --json bench.json --plot charts/
    framelab bench --targets raw/uvloop,framed-protocol/uvloop --rounds 5
    framelab bench --cases 1024/1/10 --duration 10    # one case, longer window

Exit status: 0 when every measurement ran and was verified, 1 if any
failed (an error, a lost or corrupted echo), 3 with --strict when a goal
was missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framelab.benchmarks.grid import PLANS, Case, Plan
from framelab.benchmarks.report import document, environment, goals, markdown, print_report
from framelab.benchmarks.runner import Progress as ProgressCallback
from framelab.benchmarks.runner import Summary, run_plan
from framelab.benchmarks.targets import BY_NAME, MAX_FRAME
from framelab.common.argtypes import duration, positive_duration, positive_int
from framelab.common.options import add_json_option, add_plot_option, emit_json
from framelab.common.options import console as output_console

if TYPE_CHECKING:
    from rich.console import Console


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="reduced grid, under a minute")
    add_json_option(parser, "the results (with the machine they ran on)")
    add_plot_option(parser, "throughput.png, latency.png")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write Markdown tables")
    parser.add_argument(
        "--targets",
        type=target_names,
        metavar="NAME,...",
        help="comma-separated servers (default: the plan's; --list shows them)",
    )
    parser.add_argument(
        "--cases",
        type=parse_cases,
        metavar="S/D/C,...",
        help="comma-separated SIZE/DEPTH/CONNECTIONS, e.g. 64/32/10,1048576/1/2 "
        "(default: the plan's)",
    )
    parser.add_argument(
        "--warmup",
        type=duration,
        metavar="SECONDS",
        help="seconds before each window (default: the plan's)",
    )
    parser.add_argument(
        "--duration",
        type=positive_duration,
        metavar="SECONDS",
        help="seconds per window (default: the plan's)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        metavar="N",
        help="measurements per case and server (default: the plan's)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 3 if a goal is missed")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count each server's instructions per message under valgrind "
        "(about a minute per server and case), into the table and --json",
    )
    parser.add_argument("--list", action="store_true", help="list the servers and exit")


def build_plan(args: argparse.Namespace) -> Plan:
    plan = PLANS["quick" if args.quick else "full"].with_timing(
        args.warmup, args.duration, args.rounds
    )
    if args.targets:
        plan = dataclasses.replace(plan, targets=tuple(BY_NAME[n] for n in args.targets))
    if args.cases:
        plan = dataclasses.replace(plan, cases=args.cases)
    return plan


def target_names(text: str) -> list[str]:
    """An argparse type: comma-separated server names, each one known."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown target(s) {', '.join(unknown) or repr(text)}; see --list"
        )
    return names


def parse_cases(text: str) -> tuple[Case, ...]:
    """An argparse type: SIZE/DEPTH/CONNECTIONS[,...], each in range."""
    cases = []
    for item in text.split(","):
        try:
            size, depth, connections = (int(part) for part in item.split("/"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad case {item!r}: want SIZE/DEPTH/CONNECTIONS"
            ) from None
        if not 0 <= size <= MAX_FRAME - 1024 or depth < 1 or connections < 1:
            raise argparse.ArgumentTypeError(
                f"bad case {item!r}: size 0..{MAX_FRAME - 1024}, depth and connections >= 1"
            )
        cases.append(Case(size, depth, connections))
    return tuple(cases)


def _count_instructions(plan: Plan, console: Console) -> list[dict[str, Any]]:
    from framelab.benchmarks.instructions import count

    counts = []
    for case in plan.cases:
        for target in plan.targets:
            counted = count(target, case)
            per = "-" if counted.per_message is None else f"{counted.per_message:,.0f}"
            console.print(
                f"instructions per message, {case.label}, {target.name}: {per}"
                + (f" ({counted.error})" if counted.error else "")
            )
            counts.append(dataclasses.asdict(counted))
    return counts


def run(args: argparse.Namespace) -> int:
    console = output_console(args)
    if args.list:
        for name in BY_NAME:
            console.print(name)
        return 0
    try:
        plan = build_plan(args)
    except ValueError as error:
        print(f"framelab bench: error: {error}", file=sys.stderr)
        return 2
    env = environment()
    summaries = _run_with_progress(plan, console)
    print_report(console, plan, summaries, env)
    doc = document(plan, summaries, env)
    if args.instructions:
        doc["instructions"] = _count_instructions(plan, console)
    written = emit_json(args, doc)
    if written:
        console.print(written)
    if args.markdown:
        args.markdown.write_text(markdown(plan, summaries, env))
        console.print(f"wrote {args.markdown}")
    if args.plot:
        from framelab.benchmarks.plot import write_charts

        for path in write_charts(summaries, args.plot):
            console.print(f"wrote {path}")
    if doc["errors"]:
        for line in doc["errors"]:
            console.print(f"[red]{line}[/]")
        return 1
    if args.strict and any(g.met is False for g in goals(summaries)):
        return 3
    return 0


def _run_with_progress(plan: Plan, console: Console) -> list[Summary]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting servers", total=plan.measurements)

        def advance(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, description=what)

        callback: ProgressCallback = advance
        return run_plan(plan, callback)
