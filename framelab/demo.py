"""`framelab demo`: the main job, on loopback, with nothing to set up.

1. Sticky packets: N sends through the raw echo arrive as a different number
   of reads; through the framed echo they arrive as exactly N messages.
2. A short pass of every experiment: each claim of the source notes checked
   on this kernel, with a verdict computed from what was observed (claims
   that need root are skipped, with the reason, when not root).
Servers run in-process on ephemeral ports; nothing is left behind.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any

from framelab.common.options import add_json_option, emit_json
from framelab.common.options import console as output_console


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiments",
        nargs="*",
        default=["all"],
        metavar="NAME",
        help="experiments to run (all; none given: skip them)",
    )
    add_json_option(parser, "every result")


def run(args: argparse.Namespace) -> int:
    from rich.rule import Rule

    from framelab.clients.sticky import observe_sticky, render
    from framelab.experiments.context import QUICK_ROUNDS, RunContext
    from framelab.experiments.engine import UnknownExperiment, run_experiments, select
    from framelab.experiments.report import render_verdicts

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
        results = run_experiments(names, ctx, progress=True, console=console)
        render_verdicts(console, results)
    payload = {"sticky": sticky.to_json(), "experiments": [r.to_json() for r in results]}
    written = emit_json(args, payload)
    if written:
        console.print(written)
    console.print(
        "Next: [bold]framelab bench --quick[/] (framed echo vs raw echo and Twisted), "
        "[bold]framelab experiment run NAME -v[/] (all the evidence), [bold]framelab serve[/]."
    )
    console.print(Rule(f"done in {time.monotonic() - started:.1f} s"))
    return 0
