"""`framelab sticky`: the sticky-packet observation as a table, JSON, or a chart.

The command line only: sticky.py observes and renders, sticky_plot.py
draws, and both stand below this module (neither imports the other).
"""

from __future__ import annotations

import argparse
import sys
from typing import get_args

from framelab.clients.sticky import (
    CHART_NAME,
    DEFAULT_LARGE,
    DEFAULT_MESSAGES,
    DEFAULT_SIZE,
    observe_sticky,
    render,
)
from framelab.common.argtypes import positive_int, positive_size
from framelab.common.options import (
    add_json_option,
    add_plot_option,
    console,
    emit_json,
    json_to_stdout,
)
from framelab.servers.config import LoopName, default_loop


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--messages",
        type=positive_int,
        default=DEFAULT_MESSAGES,
        metavar="N",
        help="small sends (default: %(default)s)",
    )
    a(
        "--size",
        type=positive_size,
        default=DEFAULT_SIZE,
        metavar="BYTES",
        help="bytes per small send (default: %(default)s)",
    )
    a(
        "--large",
        type=positive_size,
        default=DEFAULT_LARGE,
        metavar="BYTES",
        help="bytes of the one big send (default: %(default)s)",
    )
    a(
        "--loop",
        choices=get_args(LoopName),
        default=default_loop(),
        help="the servers' event loop (default: %(default)s)",
    )
    add_json_option(parser, "the observations")
    add_plot_option(parser, "sticky.png (sends, reads and messages over the same bytes)")


def run(args: argparse.Namespace) -> int:
    """0 when framing restored every message; 1 otherwise (it never should fail)."""
    report = observe_sticky(args.messages, args.size, args.large, args.loop)
    notes: list[str] = []
    if json_to_stdout(args):  # JSON only: no table, and no need for rich
        emit_json(args, report.to_json())
    else:
        out = console(args)
        render(report, out)
        notes += filter(None, [emit_json(args, report.to_json())])
    if args.plot:
        from framelab.clients.sticky_plot import write_sticky_chart

        notes.append(f"chart written to {write_sticky_chart(report, args.plot / CHART_NAME)}")
    for note in notes:
        print(note, file=sys.stderr)
    return 0 if report.framing_restored else 1
