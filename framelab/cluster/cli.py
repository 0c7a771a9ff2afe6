"""`framelab cluster`: N servers behind HAProxy in namespaces, a load, one failure."""

from __future__ import annotations

import argparse
import sys

from framelab.cluster.haproxy import CheckTiming, HAProxyUnavailable
from framelab.common.argtypes import float_between, int_between, non_negative_int
from framelab.common.options import add_json_option, add_plot_option, console, emit_json


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a(
        "--servers",
        type=int_between(1, 20),
        default=3,
        metavar="N",
        help="backends, each in its own namespace (1..20)",
    )
    a(
        "--seconds",
        type=float_between(0.5, 120),
        default=6.0,
        metavar="SECONDS",
        help="how long the load runs (0.5..120)",
    )
    a(
        "--workers",
        type=int_between(1, 64),
        default=4,
        metavar="N",
        help="concurrent client connections (1..64)",
    )
    a(
        "--frames",
        type=int_between(0, 10_000),
        default=20,
        metavar="N",
        help="echo frames per connection (0..10000)",
    )
    a(
        "--event",
        choices=["kill", "drain", "none"],
        default="kill",
        help="what happens to one server part way: SIGKILL, SIGTERM with draining, nothing",
    )
    a(
        "--event-at",
        type=float_between(0.05, 0.95),
        default=0.4,
        metavar="FRACTION",
        help="when, as a fraction of --seconds (0.05..0.95)",
    )
    a(
        "--victim",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="which server (1-based; 0: the last)",
    )
    a(
        "--drain-delay",
        type=float_between(0, 60),
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
    a(
        "--check-inter",
        type=int_between(10, 10_000),
        default=200,
        metavar="MS",
        help="HAProxy health check interval (10..10000)",
    )
    a(
        "--fall",
        type=int_between(1, 100),
        default=2,
        metavar="N",
        help="failed checks before HAProxy marks a server DOWN (1..100)",
    )
    add_json_option(parser, "every number of the run (each connection, each stats sample)")
    add_plot_option(parser, "cluster-connections.png (connections per backend over time)")


def _check(args: argparse.Namespace) -> str | None:
    """The mistake no single option's type can see, as a sentence, or None
    (each option's own range is checked while parsing)."""
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
