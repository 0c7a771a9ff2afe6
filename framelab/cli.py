"""The `framelab` command: one parser, subcommands imported only when used.

Each subcommand lives next to the code it drives and exposes two functions,
`configure(parser)` and `run(args) -> int`, so adding one is a line here and
`framelab --help` stays fast (no uvloop, rich or matplotlib import at start-up).

A usage mistake is reported by the subcommand it belongs to, in two lines at
most (the mistake, then the subcommand's short usage), with exit status 2;
`--help` shows every option's default.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Protocol, cast

from framelab.common.parser import HelpFormatter as HelpFormatter
from framelab.common.parser import Parser as Parser

#: name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("framelab.demo", "run the sticky-packet demo and a short experiment pass"),
    "serve": ("framelab.servers.cli", "start a raw, framed or msgpack server"),
    "sticky": (
        "framelab.clients.sticky_cli",
        "show sticky packets on raw TCP, and framing fixing them",
    ),
    "send": ("framelab.clients.send", "send messages to a running framed or msgpack server"),
    "experiment": (
        "framelab.experiments.cli",
        "check the source notes' TCP claims on this kernel",
    ),
    "bench": ("framelab.benchmarks.cli", "framed echo throughput and latency vs raw and a peer"),
    "soak": ("framelab.clients.soak", "many connections, random frames, verify every reply"),
    "cluster": (
        "framelab.cluster.cli",
        "servers behind HAProxy in namespaces: a load, one killed or drained",
    ),
    "sysctl": ("framelab.sysctl.cli", "the kernel settings the lab touches, explained"),
    "fuzz": ("framelab.fuzz.cli", "coverage-guided fuzzing of the decoder and message layer"),
}


def innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest subcommand's parser that `args` went through (`experiment run`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return innermost(chosen, args)
    return parser


def version() -> str:
    try:
        return metadata.version("framelab")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


class _Subcommand(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> _Subcommand:
    return cast(_Subcommand, importlib.import_module(SUBCOMMANDS[name][0]))


def build_parser(selected: str | None) -> tuple[Parser, dict[str, Parser]]:
    """The parser, and each subcommand's (configured only for `selected`)."""
    parser = Parser(prog="framelab", description="Message framing over TCP: a library and a lab.")
    parser.add_argument("--version", action="version", version=f"framelab {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers: dict[str, Parser] = {}
    for name, (_, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            _load(name).configure(sp)
        parsers[name] = sp
    return parser, parsers


#: optional import -> the extra that brings it (`pip install 'framelab[EXTRA]'`)
EXTRA_FOR_MODULE = {
    "rich": "cli",
    "matplotlib": "plot",
    "twisted": "peer",
    "atheris": "fuzz",
}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except ModuleNotFoundError as exc:  # a command that needs an extra the install lacks
        missing = (exc.name or "").partition(".")[0]
        if missing not in EXTRA_FOR_MODULE:
            raise
        extra = EXTRA_FOR_MODULE[missing]
        print(
            f"framelab: this command needs {missing}: pip install 'framelab[{extra}]'",
            file=sys.stderr,
        )
        return 2


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in args_list if not a.startswith("-")), None)
    if selected not in SUBCOMMANDS:
        selected = None
    parser, parsers = build_parser(selected)
    args, unknown = parser.parse_known_args(args_list)
    if unknown:  # reported by the subcommand, with its usage, not the top level's
        innermost(parsers[args.command], args).error(f"unrecognized arguments: {' '.join(unknown)}")
    from framelab.common.charts import ChartsUnavailable

    try:
        return _load(args.command).run(args)
    except KeyboardInterrupt:
        return 130
    except ChartsUnavailable as exc:  # --plot without the plot extra
        print(f"framelab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
