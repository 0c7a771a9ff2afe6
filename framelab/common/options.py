"""The options every command spells the same way: `--json [PATH]` and `--plot DIR`.

- `--json PATH` writes the command's results to PATH; `--json` alone (or
  `--json -`) prints them to stdout *instead of* the tables, which then go to
  stderr, so `framelab X --json | jq` always reads clean JSON.
- `--plot DIR` writes PNG charts into DIR (made when needed), each named for
  what it shows; matplotlib's presence is checked while parsing, before any
  work is done, so a missing extra costs one line and no wasted run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framelab.common.argtypes import directory

if TYPE_CHECKING:
    from rich.console import Console

STDOUT = "-"
PLOT_EXTRA = "pip install 'framelab[plot]'"


def add_json_option(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    parser.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        metavar="PATH",
        help=f"write {what} as JSON to PATH; no PATH or '-': to stdout instead of the tables",
    )


def plot_directory(text: str) -> Path:
    """`directory`, and matplotlib must be importable (checked without importing it)."""
    path = directory(text)
    if importlib.util.find_spec("matplotlib") is None:
        raise argparse.ArgumentTypeError(f"charts need matplotlib, not installed: {PLOT_EXTRA}")
    return path


def add_plot_option(parser: argparse.ArgumentParser, charts: str) -> None:
    parser.add_argument(
        "--plot", type=plot_directory, metavar="DIR", help=f"write PNG charts into DIR: {charts}"
    )


def json_to_stdout(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", None) == STDOUT)


def console(args: argparse.Namespace) -> Console:
    """The console for the human-readable output: stderr when stdout carries JSON.
    Its width is the terminal's (or $COLUMNS), never a fixed one."""
    from rich.console import Console

    return Console(stderr=json_to_stdout(args))


def emit_json(args: argparse.Namespace, document: Any) -> str | None:
    """Write `document` where --json says; a line saying where, for a file."""
    if not getattr(args, "json", None):
        return None
    text = json.dumps(document, indent=2, default=str) + "\n"
    if args.json == STDOUT:
        print(text, end="")
        return None
    Path(args.json).write_text(text)
    return f"JSON written to {args.json}"
