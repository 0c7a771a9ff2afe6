"""`framelab serve`: one server from the command line.

A listener that cannot be opened (port in use, address not on this machine,
no permission) is one line naming the address and the errno, exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys

from framelab.common.argtypes import address
from framelab.common.oserrors import describe_os_error
from framelab.servers.config import add_server_arguments, config_from_args
from framelab.servers.logsetup import install as install_logging
from framelab.servers.runner import run as run_server


def configure(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what the server logs",
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
    except OSError as error:  # bind() or listen(): nothing was served yet
        where = address(config.host, config.port)
        print(
            f"framelab serve: cannot listen on {where}: {describe_os_error(error)}", file=sys.stderr
        )
        return 1
    finally:
        pipeline.close()
