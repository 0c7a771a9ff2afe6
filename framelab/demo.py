"""`framelab demo`: the main job, on loopback, with nothing to set up.

1. Sticky packets: N sends through the raw echo arrive as a different number
   of reads; through the framed echo they arrive as exactly N messages.
2. A short pass of every experiment: each claim of the source notes checked
   on this kernel, with a verdict computed from what was observed (claims
   that need root are skipped, with the reason, when not root).
3. Where the evidence went: an HTML report (every claim, its parts, ladder
   diagrams, charts, the state diagram) and, as root, one pcap file per claim.

Each part fits on a screen: the verdicts are one line per claim; `-v` prints
every experiment's full evidence as `framelab experiment run` does, and the
report and `--json` hold all of it. Servers run in-process on ephemeral
ports; nothing is left behind but the report folder.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

from framelab.common.argtypes import directory
from framelab.common.options import add_json_option, emit_json
from framelab.common.options import console as output_console

#: where the report and the pcap files go unless --report says otherwise
REPORT_DIR = Path("framelab-report")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiments",
        nargs="*",
        default=["all"],
        metavar="NAME",
        help="experiments to run (all; none given: skip them)",
    )
    add_json_option(parser, "every result")
    parser.add_argument(
        "--report",
        type=directory,
        default=REPORT_DIR,
        metavar="DIR",
        help="folder for report.html and pcaps/ (default: %(default)s)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="every experiment's full evidence too"
    )


def run(args: argparse.Namespace) -> int:
    from rich.rule import Rule

    from framelab.clients.sticky import observe_sticky, render
    from framelab.experiments import engine
    from framelab.experiments.context import QUICK_ROUNDS, RunContext
    from framelab.experiments.engine import UnknownExperiment, select
    from framelab.experiments.report import render_summary, render_verdicts

    try:
        names = select(args.experiments)
    except UnknownExperiment as exc:
        print(f"framelab demo: {exc}", file=sys.stderr)
        return 2
    console = output_console(args)
    started = time.monotonic()
    console.print(Rule("[bold]framelab demo[/]"))
    console.print(
        f"Linux {platform.release()}, Python {platform.python_version()}; "
        "everything runs on 127.0.0.1 (and, as root, in private network namespaces)."
    )
    console.print(Rule("1. Sticky packets: TCP is a byte stream, framing restores messages"))
    sticky = observe_sticky()
    render(sticky, console)

    results: list[Any] = []
    if names:
        console.print(Rule("2. The source notes' claims, checked on this kernel"))
        ctx = RunContext(rounds=QUICK_ROUNDS, quick=True)
        batch = engine.execute(names, ctx, progress=True, console=console)
        if args.verbose:
            engine.report(console, batch, verbose=True)
        render_verdicts(console, batch.results)
        render_summary(console, batch.results, batch.elapsed)
        if batch.failed:
            console.print(f"[bold red]raised an exception: {', '.join(batch.failed)}[/] (-v)")
        console.print(Rule("3. The evidence: report and packet files"))
        outputs = engine.Outputs(pcap=args.report / "pcaps", html=args.report / "report.html")
        engine.write_outputs(console, batch, outputs)
        results = batch.results
    payload = {"sticky": sticky.to_json(), "experiments": [r.to_json() for r in results]}
    written = emit_json(args, payload)
    if written:
        console.print(written)
    console.print(
        "Next: [bold]framelab bench --quick[/] (framed echo vs raw echo and Twisted), "
        "[bold]framelab experiment run NAME -v[/] (all the evidence), "
        "[bold]framelab sysctl[/] (the kernel settings, explained), [bold]framelab serve[/]."
    )
    console.print(Rule(f"done in {time.monotonic() - started:.1f} s"))
    return 0
