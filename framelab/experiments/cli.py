"""`framelab experiment`: the command line of the run engine (argparse only).

    framelab experiment list
    framelab experiment run sticky nagle --quick
    framelab experiment run all --json results.json
    framelab experiment run nagle retransmission --plot charts/

Each experiment runs on its own: one that raises does not stop the others.
Its claims are reported as skipped, with the exception, and the exit status
is 1 (only then: `differs` is an answer, not a failure).

A new option is an `add_argument` in `configure()` plus one line in
`context_from()` (it reaches the experiments as a RunContext field) or in
`outputs_from()` (a file written after the run, an engine.Outputs field).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from framelab.common.argtypes import directory, link_mtu, positive_int, sysctl_setting
from framelab.common.options import (
    STDOUT,
    add_json_option,
    add_plot_option,
    emit_json,
    json_to_stdout,
)
from framelab.common.options import console as output_console
from framelab.experiments import engine
from framelab.experiments.context import DEFAULT_ROUNDS, QUICK_ROUNDS, RunContext


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the experiments, their claims, and whether they need root")
    run_help = "run experiments and report a verdict per claim"
    run_parser = actions.add_parser(
        "run",
        help=run_help,
        description=f"{run_help}. Exit status 1 if an experiment raised (a 'differs' "
        "verdict is an answer, not a failure), 2 for an unknown name.",
    )
    run_parser.add_argument("names", nargs="+", metavar="NAME", help="experiments to run, or 'all'")
    # -- options the experiments see (RunContext fields) --
    run_parser.add_argument(
        "--quick", action="store_true", help=f"the short pass ({QUICK_ROUNDS} rounds)"
    )
    run_parser.add_argument(
        "--rounds",
        type=positive_int,
        metavar="N",
        help=f"repetitions of each timed step (default {DEFAULT_ROUNDS})",
    )
    run_parser.add_argument(
        "--sysctl",
        type=sysctl_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run inside a fresh network namespace with this net.* setting (repeatable; root)",
    )
    run_parser.add_argument(
        "--mtu",
        type=link_mtu,
        metavar="N",
        help="MTU of the links experiments build between namespaces (default 1500)",
    )
    # -- what the run writes after it ends (engine.Outputs fields) --
    add_json_option(run_parser, "the results")
    run_parser.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="write the claims table (and links to --plot's charts) as Markdown; into PATH's"
        " marked region when it has one (a README regenerated in place)",
    )
    add_plot_option(run_parser, "nagle.png, retransmission.png, where the run allows")
    run_parser.add_argument(
        "--pcap",
        type=directory,
        metavar="DIR",
        help="write the packets captured for each claim into DIR as CLAIM.pcap (needs root)",
    )
    run_parser.add_argument(
        "--html", type=Path, metavar="PATH", help="write a self-contained HTML report to PATH"
    )
    # -- how the report looks --
    run_parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every observed value, not the first few"
    )


def context_from(args: argparse.Namespace) -> RunContext:
    """The settings every experiment of this run receives."""
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    return RunContext(rounds=rounds, quick=args.quick, sysctls=tuple(args.sysctl), mtu=args.mtu)


def outputs_from(args: argparse.Namespace) -> engine.Outputs:
    """The files to write once the run has ended."""
    json_file = None if args.json in (None, STDOUT) else Path(args.json)
    return engine.Outputs(
        json=json_file, markdown=args.markdown, charts=args.plot, pcap=args.pcap, html=args.html
    )


def run(args: argparse.Namespace) -> int:
    """0 when every experiment ran (whatever the verdicts), 1 if one raised, 2 on bad names."""
    from framelab.experiments.report import render_environment

    console = output_console(args)
    if args.action == "list":
        engine.list_experiments(console)
        return 0
    try:
        names = engine.select(args.names)
    except engine.UnknownExperiment as exc:
        print(f"framelab experiment run: {exc}", file=sys.stderr)
        return 2
    if args.markdown is not None:
        from framelab.experiments.markdown import MarkdownRegionError, check_region

        try:
            check_region(args.markdown)
        except (MarkdownRegionError, OSError) as exc:
            print(f"framelab experiment run: --markdown: {exc}", file=sys.stderr)
            return 2
    ctx = context_from(args)
    if ctx.sysctls and not ctx.root:
        print("framelab experiment run: --sysctl needs root (a network namespace)", file=sys.stderr)
        return 2
    render_environment(console)
    from framelab.lab.netns import SettingError

    try:
        batch = engine.execute(names, ctx, progress=True, console=console)
    except SettingError as exc:
        print(f"framelab experiment run: --sysctl {exc}", file=sys.stderr)
        return 2
    engine.report(console, batch, verbose=args.verbose)
    engine.write_outputs(console, batch, outputs_from(args))
    if json_to_stdout(args):
        emit_json(args, [result.to_json() for result in batch.results])
    return 1 if batch.failed else 0
