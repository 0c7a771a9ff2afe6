"""`framelab serve`: one server from the command line."""

from __future__ import annotations

import argparse
import logging
import sys

from framelab.servers.config import add_server_arguments, config_from_args
from framelab.servers.runner import run as run_server


def configure(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as error:
        print(f"framelab serve: error: {error}", file=sys.stderr)
        return 2
    return run_server(config)
