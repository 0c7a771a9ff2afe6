"""`framelab bench`: framed echo throughput and latency vs raw and a peer.

    framelab bench --quick --json out.json
    framelab bench --json bench.json --plot charts/
    framelab bench --targets raw/uvloop,framed-protocol/uvloop --rounds 5
    framelab bench --cases 1024/1/10 --duration 10    # one case, longer window

Exit status: 0 when every measurement ran, was verified and met its goal;
1 if one failed (an error, a lost or corrupted echo); 3 if a goal was
missed (unless --allow-missed-goals); 2 for a usage mistake; 130 when
interrupted (Ctrl-C), after the cases that finished are reported.
Warnings say when numbers cannot mean much (one round, short windows, a
busy machine, a server that was not CPU-bound, rounds that disagree).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framelab.benchmarks import peer_env
from framelab.benchmarks.caveats import caveats, machine_load
from framelab.benchmarks.grid import PLANS, Case, Plan
from framelab.benchmarks.report import document, environment, goals, markdown, print_report
from framelab.benchmarks.runner import Progress as ProgressCallback
from framelab.benchmarks.runner import Summary, run_plan
from framelab.benchmarks.targets import BY_NAME, GRPC, MAX_FRAME, PEER
from framelab.common.argtypes import duration, positive_duration, positive_int
from framelab.common.options import add_json_option, add_plot_option, emit_json
from framelab.common.options import console as output_console

if TYPE_CHECKING:
    from rich.console import Console

PEER_EXTRA = "pip install 'framelab[peer]'"
#: peer target -> (module it imports, library to name), both from the peer extra
PEER_NEEDS = {PEER.name: ("twisted", "Twisted"), GRPC.name: ("grpc", "grpcio")}


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
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count each server's instructions per message under valgrind "
        "(about a minute per server and case), into the table and --json",
    )
    parser.add_argument(
        "--title", help="what to call this run in the report (default: the grid's name, or custom)"
    )
    parser.add_argument(
        "--allow-missed-goals",
        action="store_true",
        help="exit 0 even if a goal is missed (by default a missed goal is exit status 3)",
    )
    parser.add_argument("--list", action="store_true", help="list the servers and exit")


def build_plan(args: argparse.Namespace) -> tuple[Plan, list[str]]:
    """The plan the options describe, and notes on what was left out of it."""
    plan = PLANS["quick" if args.quick else "full"].with_timing(
        args.warmup, args.duration, args.rounds
    )
    notes = []
    if args.targets:
        plan = dataclasses.replace(plan, targets=tuple(BY_NAME[n] for n in args.targets))
    if args.cases:
        plan = dataclasses.replace(plan, cases=args.cases)
    if args.title or args.targets or args.cases:
        plan = dataclasses.replace(plan, name=args.title or "custom run")
    for target in [t for t in plan.targets if t.name in PEER_NEEDS]:
        module, library = PEER_NEEDS[target.name]
        if importlib.util.find_spec(module) is not None:
            continue
        if args.targets:  # asked for by name: a usage mistake
            raise ValueError(f"{target.name} needs {library}, which is not installed: {PEER_EXTRA}")
        plan = dataclasses.replace(plan, targets=tuple(t for t in plan.targets if t != target))
        notes.append(f"{target.name} skipped: {library} is not installed ({PEER_EXTRA})")
    for target in plan.targets:
        if (environment := target.environment) is None:
            continue
        if not peer_env.ready(environment):
            print(f"setup: the {environment} environment (once)", file=sys.stderr)
        try:
            peer_env.ensure(environment)
        except peer_env.PeerEnvironmentUnavailable as error:
            if args.targets:
                raise ValueError(f"{target.name}: {error}") from None
            plan = dataclasses.replace(plan, targets=tuple(t for t in plan.targets if t != target))
            notes.append(f"{target.name} skipped: {error}")
    return plan, notes


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
        plan, notes = build_plan(args)
    except ValueError as error:
        print(f"framelab bench: error: {error}", file=sys.stderr)
        return 2
    for note in notes:
        console.print(f"[yellow]{note}[/]")
    env = environment()
    load = machine_load()
    summaries, interrupted = _run_with_progress(plan, console)
    if interrupted:
        done = {(s.size, s.depth, s.connections) for s in summaries}
        plan = dataclasses.replace(
            plan, cases=tuple(c for c in plan.cases if (c.size, c.depth, c.connections) in done)
        )
        console.print(f"[yellow]interrupted: {len(plan.cases)} finished case(s) reported below[/]")
        if not summaries:
            return 130
    print_report(console, plan, summaries, env)
    for caveat in caveats(plan, summaries, load, env.get("cores")):
        console.print(f"[yellow]warning:[/] {caveat}")
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
    if interrupted:
        return 130
    if doc["errors"]:
        for line in doc["errors"]:
            console.print(f"[red]{line}[/]")
        return 1
    if not args.allow_missed_goals and any(g.met is False for g in goals(summaries)):
        return 3
    return 0


def _run_with_progress(plan: Plan, console: Console) -> tuple[list[Summary], bool]:
    """Run the plan one case at a time, so that Ctrl-C keeps the cases that
    finished: (their summaries, whether the run was interrupted)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    summaries: list[Summary] = []
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("starting servers", total=plan.measurements)
        finished = 0
        for case in plan.cases:
            one_case = dataclasses.replace(plan, cases=(case,))

            def advance(done: int, total: int, what: str, before: int = finished) -> None:
                bar.update(task, completed=before + done, description=what)

            callback: ProgressCallback = advance
            try:
                summaries += run_plan(one_case, callback)
            except KeyboardInterrupt:
                return summaries, True
            finished += one_case.measurements
    return summaries, False
