"""The `framelab` command: one parser, subcommands imported only when used.

Each subcommand lives next to the code it drives and exposes two functions,
`configure(parser)` and `run(args) -> int`, so adding one is a line here and
`framelab --help` stays fast (no uvloop, rich or matplotlib import at start-up).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

#: name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("framelab.demo", "run the sticky-packet demo and a short experiment pass"),
    "serve": ("framelab.servers.cli", "start a raw, framed or msgpack server"),
    "sticky": (
        "framelab.clients.sticky",
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
    "fuzz": ("framing.fuzz", "coverage-guided fuzzing of the decoder and message layer"),
}


class _Subcommand(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> _Subcommand:
    return cast(_Subcommand, importlib.import_module(SUBCOMMANDS[name][0]))


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framelab", description="Message framing over TCP: a library and a lab."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            _load(name).configure(sp)
    return parser


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
    args = build_parser(selected).parse_args(args_list)
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
