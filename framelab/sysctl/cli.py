"""`framelab sysctl [NAME ...] [--json] [--results PATH]`.

    framelab sysctl                       # every setting the lab touches
    framelab sysctl tcp_tw_reuse somaxconn
    framelab sysctl fs.file-max --json    # pure JSON on stdout (--json PATH: to a file)

Each setting: its live value (from /proc/sys), the kernel default, what it
does and when to change it, the experiment and claim that show its effect,
and what the last saved run measured there (`framelab experiment run` and
`framelab demo` save their results; `--results` reads any `--json` file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from framelab.common.options import add_json_option, emit_json, json_to_stdout
from framelab.common.options import console as output_console

if TYPE_CHECKING:
    from rich.console import Console

    from framelab.sysctl.explain import Explained


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("names", nargs="*", metavar="NAME", help="settings (default: all)")
    add_json_option(parser, "the settings")
    parser.add_argument(
        "--results",
        type=Path,
        metavar="PATH",
        help="results JSON to take measured figures from (default: the last saved run)",
    )


def run(args: argparse.Namespace) -> int:
    from framelab.common.last_run import last_run_path, load
    from framelab.sysctl.explain import UnknownSetting, explain

    try:
        results = load(args.results)
        rows = explain(args.names, results)
    except UnknownSetting as exc:
        print(
            f"framelab sysctl: unknown setting {exc.args[0]!r} (framelab sysctl lists them all)",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:
        print(f"framelab sysctl: {exc}", file=sys.stderr)
        return 2
    source = str(args.results or last_run_path()) if results else None
    document = {"results": source, "settings": [r.to_json() for r in rows]}
    if json_to_stdout(args):
        emit_json(args, document)
        return 0
    console = output_console(args)
    _print_table(console, rows, source)
    where = emit_json(args, document)
    if where:
        console.print(where)
    return 0


def _print_table(console: Console, rows: list[Explained], source: str | None) -> None:
    """Three columns, so it reads on an 80-column terminal: the setting and its
    values, the explanation, the evidence."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Kernel settings the lab touches", title_justify="left", show_lines=True)
    table.add_column("setting", ratio=2, overflow="fold")
    table.add_column("what it does, when to change it", ratio=3)
    table.add_column("shown by, last run", ratio=2, overflow="fold")
    for row in rows:
        p = row.param
        cell = Text(p.name, style="bold")
        if row.live is None:
            gone = f"removed in Linux {p.removed_in}" if p.removed_in else "absent here"
            cell.append(f"\nlive: {gone}", style="yellow")
        else:
            cell.append(f"\nlive: {row.live}")
        cell.append(f"\ndefault: {p.default}", style="grey50")
        evidence = Text(f"{p.experiment} ({p.claim})" if p.experiment else "-")
        if row.verdict:
            evidence.append(f" {row.verdict}", style="grey50")
        for figure in row.measured:
            evidence.append(f"\n{figure}")
        table.add_row(cell, p.what, evidence)
    console.print(table)
    if source:
        console.print(Text(f"last run: {source}", style="grey50"))
    else:
        console.print(Text("no saved run yet: framelab experiment run all", style="grey50"))
