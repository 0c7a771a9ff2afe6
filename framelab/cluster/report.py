"""What a cluster run showed: per-backend counts, failover timing, TIME_WAIT, a chart.

Pure functions over a ClusterResult (no I/O but the chart file), so every
number and every sentence of the report comes from the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framelab.cluster.run import ClusterResult

if TYPE_CHECKING:
    from rich.console import Console

#: bucket width of the connections-per-backend chart
BUCKET = 0.1


@dataclass(frozen=True)
class BackendSummary:
    name: str
    connections: int  # client connections this backend answered
    frames: int  # echo replies verified
    corrupted: int  # echo replies that were wrong
    failed: int  # connections that ended before their last frame
    sessions: int  # HAProxy's count of sessions sent to it (stot)
    connect_errors: int  # HAProxy's failed connection attempts to it (econ)
    redispatched: int  # sessions HAProxy moved elsewhere after a failed attempt (wredis)


@dataclass(frozen=True)
class Failover:
    """How the balancer reacted to the victim's end (seconds after the event)."""

    victim: str
    event: str
    at: float
    marked_down_after: float | None  # first stats sample showing it not UP
    last_session_after: float | None  # last sample where HAProxy sent it a new session
    last_connection_after: float | None  # last client connection it answered that began later
    open_at_event: int  # client connections on it when it happened
    lost: int  # of the victim's connections, those that failed
    unanswered: int  # connections that failed after the event before any server answered
    exit_status: int | None


def summarize(result: ClusterResult) -> list[BackendSummary]:
    last = result.samples[-1].servers if result.samples else {}
    names = [b.name for b in result.backends]
    summaries = []
    for name in [*names, "(none)"]:
        mine = [r for r in result.records if result.backend_name(r.backend) == name]
        if name == "(none)" and not mine:
            continue
        stat = last.get(name)
        summaries.append(
            BackendSummary(
                name=name,
                connections=len(mine),
                frames=sum(r.frames for r in mine),
                corrupted=sum(r.corrupted for r in mine),
                failed=sum(1 for r in mine if r.error is not None),
                sessions=stat.total if stat else 0,
                connect_errors=stat.connect_errors if stat else 0,
                redispatched=stat.redispatched if stat else 0,
            )
        )
    return summaries


def failover(result: ClusterResult) -> Failover | None:
    if result.event_at is None:
        return None
    victim, at = result.spec.victim_name, result.event_at
    after = [s for s in result.samples if s.at >= at and victim in s.servers]
    down = next((s.at - at for s in after if s.servers[victim].status.startswith("DOWN")), None)
    last_session = None
    previous = next((s.servers[victim].total for s in reversed(result.samples) if s.at < at), None)
    for sample in after:
        total = sample.servers[victim].total
        if previous is not None and total > previous:
            last_session = sample.at - at
        previous = total
    mine = [r for r in result.records if result.backend_name(r.backend) == victim]
    later = [r.started - at for r in mine if r.started >= at]
    return Failover(
        victim=victim,
        event=result.spec.event,
        at=at,
        marked_down_after=down,
        last_session_after=last_session,
        last_connection_after=max(later) if later else None,
        open_at_event=sum(1 for r in mine if r.started < at <= r.ended),
        lost=sum(1 for r in mine if r.error is not None),
        unanswered=sum(
            1 for r in result.records if r.backend is None and r.error and r.ended >= at
        ),
        exit_status=result.victim_exit,
    )


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


def failover_sentence(f: Failover) -> str:
    """One sentence, every figure from the run."""
    how = "killed (SIGKILL)" if f.event == "kill" else "drained (SIGTERM)"
    down = (
        f"HAProxy marked it DOWN {_ms(f.marked_down_after)} later"
        if f.marked_down_after is not None
        else "HAProxy never marked it DOWN during the run"
    )
    sessions = (
        f"the last session it was sent began {_ms(f.last_session_after)} after"
        if f.last_session_after is not None
        else "it was sent no session after that"
    )
    lost = f"{f.lost} of its connections failed ({f.open_at_event} were open at that moment)"
    if f.unanswered:
        lost += f", and {f.unanswered} failed before any server answered"
    status = "" if f.exit_status is None else f"; it exited with status {f.exit_status}"
    return f"{f.victim} {how} at {f.at:.2f} s: {down}; {sessions}; {lost}{status}"


def time_wait_sentence(result: ClusterResult) -> str:
    """Where TIME_WAIT piled up, hence which side of each hop closed first."""
    by_side = [(t.host, t.side, t.count) for t in result.time_wait]
    if not by_side:
        return "TIME_WAIT was not counted"
    parts = ", ".join(f"{host} {side}: {count}" for host, side, count in by_side)
    holders = [f"the {host} ({side})" for host, side, count in by_side if count]
    if not holders:
        return f"no TIME_WAIT anywhere ({parts})"
    text = f"TIME_WAIT after the run: {parts}; held by {' and '.join(holders)}: they closed first"
    budget = result.port_budget
    balancer_held = any(h == "balancer" and s == "to servers" and c for h, s, c in by_side)
    if budget is not None and balancer_held:
        text += (
            f". The balancer's ports {budget.port_range[0]}-{budget.port_range[1]} "
            f"(tcp_tw_reuse={budget.tw_reuse}) allow about {budget.per_second:.0f} new "
            "connections a second to each server before TIME_WAIT runs them out"
        )
    return text


def connections_over_time(result: ClusterResult) -> dict[str, list[int]]:
    """Connections each backend began in every BUCKET-second slice (client's view)."""
    buckets = int(result.spec.seconds / BUCKET) + 1
    series = {b.name: [0] * buckets for b in result.backends}
    for record in result.records:
        name = result.backend_name(record.backend)
        index = int(record.started / BUCKET)
        if name in series and index < buckets:
            series[name][index] += 1
    return series


def as_json(result: ClusterResult) -> dict[str, Any]:
    f = failover(result)
    return {
        "haproxy_version": result.haproxy_version,
        "spec": asdict(result.spec),
        "backends": [asdict(s) for s in summarize(result)],
        "failover": asdict(f) if f is not None else None,
        "time_wait": [asdict(t) for t in result.time_wait],
        "port_budget": (
            None
            if result.port_budget is None
            else {**asdict(result.port_budget), "per_second": result.port_budget.per_second}
        ),
        "connections_per_bucket": {"bucket_seconds": BUCKET, **connections_over_time(result)},
        "samples": [
            {"at": round(s.at, 3), **{n: asdict(st) for n, st in s.servers.items()}}
            for s in result.samples
        ],
        "connections": [r.as_json() for r in result.records],
    }


def print_report(result: ClusterResult, console: Console) -> None:
    from rich.table import Table

    spec = result.spec
    table = Table(
        title=(
            f"{spec.servers} servers behind HAProxy {result.haproxy_version}, {spec.workers} "
            f"clients x {spec.frames_per_connection} frames a connection, {spec.seconds:g} s"
        ),
        caption="conns/frames/corrupt/failed: what clients saw; sessions, connection "
        "errors, redispatched: HAProxy's stats",
    )
    columns = ["backend", "conns", "frames", "corrupt", "failed"]
    for column in [*columns, "sessions", "conn errs", "redisp."]:
        table.add_column(column, justify="left" if column == "backend" else "right")
    for s in summarize(result):
        table.add_row(
            s.name,
            *(str(v) for v in (s.connections, s.frames, s.corrupted, s.failed)),
            *(str(v) for v in (s.sessions, s.connect_errors, s.redispatched)),
        )
    console.print(table)
    f = failover(result)
    if f is not None:
        console.print(failover_sentence(f))
    console.print(time_wait_sentence(result))


def draw_chart(result: ClusterResult, path: Path) -> Path:
    """Connections begun per backend per BUCKET (top) and HAProxy's open
    sessions per backend (bottom), with the failure and the DOWN mark."""
    from framelab.common.charts import pyplot, save

    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    series = connections_over_time(result)
    times = [i * BUCKET for i in range(len(next(iter(series.values()), [])))]
    for name, counts in series.items():
        top.step(times, [c / BUCKET for c in counts], where="post", label=name)
        bottom.plot(
            [s.at for s in result.samples],
            [s.servers[name].current if name in s.servers else 0 for s in result.samples],
            label=name,
        )
    top.set_ylabel("connections begun / s")
    bottom.set_ylabel("open sessions (HAProxy)")
    bottom.set_xlabel("seconds since the load began")
    f = failover(result)
    for ax in (top, bottom):
        if f is not None:
            ax.axvline(f.at, color="black", linestyle="--", linewidth=1)
            if f.marked_down_after is not None:
                ax.axvline(f.at + f.marked_down_after, color="red", linestyle=":", linewidth=1)
        ax.legend(loc="upper right")
    title = "connections per backend"
    if f is not None:
        title += f": {f.victim} {'killed' if f.event == 'kill' else 'drained'} (dashed)"
        if f.marked_down_after is not None:
            title += f", DOWN in HAProxy after {_ms(f.marked_down_after)} (dotted)"
    top.set_title(title, loc="left")
    return save(fig, path)
