"""`framelab serve`: one server from the command line."""

from __future__ import annotations

import argparse
import logging
import sys

from framelab.servers.config import add_server_arguments, config_from_args
from framelab.servers.logsetup import install as install_logging
from framelab.servers.runner import run as run_server


def configure(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"framelab serve: error: {error}", file=sys.stderr)
        return 2
    pipeline = install_logging(getattr(logging, args.log_level))  # never blocks the loop
    try:
        return run_server(config)
    finally:
        pipeline.close()
