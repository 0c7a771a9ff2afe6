"""A worker process: `python -m framelab.servers.worker`, started by the supervisor.

Each worker is a fresh interpreter (so a rolling restart runs the code now
on disk), serving on the listening socket its supervisor bound once and
passed down as a descriptor: every worker accepts from the same kernel
queue, so a worker that stops accepting leaves its share to the others
instead of resetting it (see servers/supervisor.py for why not one
SO_REUSEPORT listener each).

It tells the supervisor it is ready by writing one line on a pipe, and it
dies with its supervisor: PR_SET_PDEATHSIG asks the kernel for SIGTERM (a
graceful stop) when the parent goes, even by SIGKILL, and a check that the
parent is still the one that started it closes the window before prctl().
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from framelab.servers.config import ServerConfig
from framelab.servers.lifetime import die_with_parent

#: the configuration values a command line can give (hooks and observers are in-process only)
PLAIN = (str, int, float, bool, type(None))
READY_LINE = b"ready\n"
#: held (blocked) from the worker's start until its loop handles them
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGUSR2})


def config_to_json(config: ServerConfig) -> str:
    """The configuration a worker is started with (in-process hooks left out)."""
    values = ((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))
    return json.dumps({name: v for name, v in values if isinstance(v, PLAIN)})


def config_from_json(text: str) -> ServerConfig:
    known = {f.name for f in dataclasses.fields(ServerConfig)}
    values: dict[str, Any] = {k: v for k, v in json.loads(text).items() if k in known}
    return ServerConfig(**values)


def command(
    config: ServerConfig, listen_fd: int, ready_fd: int, log_level: str, slot: int
) -> list[str]:
    """The command line that starts one worker."""
    return [
        sys.executable,
        "-m",
        "framelab.servers.worker",
        *("--listen-fd", str(listen_fd), "--ready-fd", str(ready_fd)),
        *("--supervisor", str(os.getpid()), "--slot", str(slot)),
        *("--log-level", log_level, "--config", config_to_json(config)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="framelab-worker")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--supervisor", type=int, required=True)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    # held from the fork on (the supervisor blocks them around it), until our loop handles them
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    if not die_with_parent(args.supervisor):
        return 1  # the supervisor is gone already: nobody would stop us
    from framelab.servers.connections import ConnectionSet
    from framelab.servers.logsetup import install
    from framelab.servers.runner import run_on_loop, serve

    pipeline = install(getattr(logging, args.log_level))
    config = config_from_json(args.config)
    listener = socket.socket(fileno=args.listen_fd)
    listener.setblocking(False)
    connections: ConnectionSet | None = None
    if config.metrics_port is not None:  # the supervisor serves them; we count
        from framelab.servers.metrics import ServerMetrics

        metrics = ServerMetrics()
        config = dataclasses.replace(config, observer=metrics.observer())
        connections = metrics.connection_set(config.max_connections)
        pipeline.handler.on_drop = metrics.log_records_dropped.inc

    def ready(host: str, port: int) -> None:
        os.write(args.ready_fd, READY_LINE)
        os.close(args.ready_fd)

    try:
        return run_on_loop(
            config.loop,
            serve(config, ready, listener, supervised=True, connections=connections),
        )
    finally:
        pipeline.close()


if __name__ == "__main__":
    sys.exit(main())
