"""`framelab serve`: a supervisor and its workers, from the command line.

A listener that cannot be opened (port in use, address not on this machine,
no permission) is one line naming the address and the errno, exit status 1.
A config file (--config, servers/config_file.py) that cannot be used is one
line naming the file, the key and the problem, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from framelab.common.argtypes import address
from framelab.common.oserrors import describe_os_error
from framelab.servers.config import add_server_arguments, given_options
from framelab.servers.config_file import ConfigSource
from framelab.servers.logsetup import install as install_logging
from framelab.servers.runner import run_on_loop, serve
from framelab.servers.supervisor import print_ready
from framelab.servers.supervisor import run as supervise


def configure(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser)
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help='a TOML file of these options (keys: their long names, e.g. max_frame = "1M"); '
        "options given here override it; re-read at SIGHUP",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what the server logs",
    )


def metrics_available() -> bool:
    """Whether prometheus_client is installed, without importing it: imported
    now, it would not see the multiprocess directory the supervisor sets."""
    try:
        return importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules
        return False


def run(args: argparse.Namespace) -> int:
    source = ConfigSource(args.config, given_options(args))
    try:
        config = source.load()
    except ValueError as error:  # ConfigError too: it names the file and the key
        print(f"framelab serve: error: {error}", file=sys.stderr)
        return 2
    if config.metrics_port is not None and not metrics_available():
        print(
            "framelab serve: error: --metrics-port needs prometheus_client: "
            "pip install 'framelab[metrics]'",
            file=sys.stderr,
        )
        return 2
    pipeline = install_logging(getattr(logging, args.log_level))  # never blocks the loop
    try:
        if config.workers == 0:  # for a profiler or debugger: this process serves
            return run_on_loop(config.loop, serve(config, print_ready))
        return supervise(config, args.log_level, reload=source.load if source.path else None)
    except OSError as error:  # bind() or listen(): nothing was served yet
        where = address(config.host, config.port)
        print(
            f"framelab serve: cannot listen on {where}: {describe_os_error(error)}", file=sys.stderr
        )
        return 1
    finally:
        pipeline.close()
