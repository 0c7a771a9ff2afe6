"""`framelab cluster`: N servers behind HAProxy in namespaces, a load, one failure."""

from __future__ import annotations

import argparse
import sys

from framelab.cluster.haproxy import CheckTiming, HAProxyUnavailable
from framelab.common.options import add_json_option, add_plot_option, console, emit_json


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--servers", type=int, default=3, help="backends, each in its own namespace (1..20)")
    a("--seconds", type=float, default=6.0, help="how long the load runs (at most 120)")
    a("--workers", type=int, default=4, help="concurrent client connections (1..64)")
    a("--frames", type=int, default=20, help="echo frames per connection (0..10000)")
    a(
        "--event",
        choices=["kill", "drain", "none"],
        default="kill",
        help="what happens to one server part way: SIGKILL, SIGTERM with draining, nothing",
    )
    a("--event-at", type=float, default=0.4, help="when, as a fraction of --seconds")
    a("--victim", type=int, default=0, help="which server (1-based; default: the last)")
    a(
        "--drain-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="drain: how long the server fails its health check before it stops accepting",
    )
    a(
        "--proxy",
        choices=["v1", "v2"],
        default="v2",
        help="PROXY protocol version HAProxy sends (send-proxy / send-proxy-v2)",
    )
    a("--check-inter", type=int, default=200, metavar="MS", help="HAProxy health check interval")
    a("--fall", type=int, default=2, help="failed checks before HAProxy marks a server DOWN")
    add_json_option(parser, "every number of the run (each connection, each stats sample)")
    add_plot_option(parser, "cluster-connections.png (connections per backend over time)")


def _check(args: argparse.Namespace) -> str | None:
    """The first mistake in the arguments, as a sentence, or None."""
    bounds = [
        ("--servers", args.servers, 1, 20),
        ("--seconds", args.seconds, 0.5, 120),
        ("--workers", args.workers, 1, 64),
        ("--frames", args.frames, 0, 10_000),
        ("--event-at", args.event_at, 0.05, 0.95),
        ("--drain-delay", args.drain_delay, 0, 60),
        ("--check-inter", args.check_inter, 10, 10_000),
        ("--fall", args.fall, 1, 100),
    ]
    for name, value, low, high in bounds:
        if not low <= value <= high:
            return f"{name} must be {low}..{high}, not {value}"
    if not 0 <= args.victim <= args.servers:
        return f"--victim must be 1..{args.servers} (or 0: the last), not {args.victim}"
    return None


def run(args: argparse.Namespace) -> int:
    from framelab.cluster.report import as_json, draw_chart, print_report
    from framelab.cluster.run import ClusterSpec, run_cluster

    mistake = _check(args)
    if mistake is not None:
        print(f"framelab cluster: {mistake}", file=sys.stderr)
        return 2
    spec = ClusterSpec(
        servers=args.servers,
        seconds=args.seconds,
        workers=args.workers,
        frames_per_connection=args.frames,
        event=args.event,
        event_at=args.event_at,
        victim=args.victim,
        drain_delay=args.drain_delay,
        timing=CheckTiming(inter_ms=args.check_inter, fall=args.fall),
        proxy_line="send-proxy" if args.proxy == "v1" else "send-proxy-v2",
    )
    try:
        result = run_cluster(spec, progress=True)
    except (HAProxyUnavailable, PermissionError) as exc:
        print(f"framelab cluster: {exc}", file=sys.stderr)
        return 2
    out = console(args)
    print_report(result, out)
    where = emit_json(args, as_json(result))
    if where is not None:
        out.print(where)
    if args.plot is not None:
        out.print(f"chart: {draw_chart(result, args.plot / 'cluster-connections.png')}")
    return 0
