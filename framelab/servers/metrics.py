"""Prometheus metrics for `framelab serve --metrics-port PORT`.

Every worker counts into prometheus_client's multiprocess mode (one mmap'd
file per process in a directory the supervisor creates); the supervisor
serves http://127.0.0.1:PORT/metrics with a MultiProcessCollector over that
directory. So one endpoint reports all workers, restarted ones included
(counters of a worker that exited stay in the sums; the open-connections
gauge counts live processes only), and the port stays the same through a
rolling restart. One port per worker was the alternative: simpler, but
every scrape target would change with each restart.

What is counted where:
- connections accepted / refused at the cap / open / taken from the accept
  queue at stop: the runner's ConnectionSet (CountedConnections);
- frames and bytes in and out, frame sizes, errors by kind, write pauses:
  framing's ConnectionObserver (PrometheusObserver), one call per batch;
- receive buffers left to payload views a handler kept (views=True modes):
  the decoder, through the same observer, only when it happens;
- worker restarts: the supervisor; log records dropped: the log pipeline.

Cost when on: a few microseconds per batch and per frame (the size
histogram); nothing when --metrics-port is not given (this module is not
even imported).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

from framelab.servers.connections import Connection, ConnectionSet
from framing.decoder import BytesLike
from framing.observer import ERROR_KINDS, ErrorKind, NullObserver

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: frame payload sizes, bytes: 0 to 16 MiB in powers of 4
SIZE_BUCKETS = (0, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20)
PREFIX = "framelab_"


class ServerMetrics:
    """The metrics of one process (worker or supervisor), all of them
    declared here so the names are in one place."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        p = PREFIX
        self.accepted = Counter(p + "connections_accepted", "connections accepted", **kw)
        self.refused = Counter(
            p + "connections_refused", "connections closed at once: over the cap", **kw
        )
        self.open = Gauge(
            p + "connections_open", "connections open now", multiprocess_mode="livesum", **kw
        )
        self.drained = Counter(
            p + "connections_drained",
            "connections taken from the accept queue after a stop began",
            **kw,
        )
        self.frames_in = Counter(p + "frames_in", "frames received", **kw)
        self.frames_out = Counter(p + "frames_out", "frames sent", **kw)
        self.bytes_in = Counter(p + "bytes_in", "payload bytes received", **kw)
        self.bytes_out = Counter(p + "bytes_out", "payload bytes sent", **kw)
        self.frame_size = Histogram(
            p + "frame_size_bytes", "payload size of received frames", buckets=SIZE_BUCKETS, **kw
        )
        self.errors = Counter(p + "errors", "connection errors by kind", ["kind"], **kw)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)  # every kind reported, zeros included
        self.write_pauses = Counter(
            p + "write_pauses", "times a write buffer passed its high-water mark", **kw
        )
        self.buffers_left = Counter(
            p + "receive_buffers_left_to_views",
            "receive buffers left to payload views a handler kept (a fresh one allocated each)",
            **kw,
        )
        self.buffer_bytes_left = Counter(
            p + "receive_buffer_bytes_left_to_views",
            "bytes of the receive buffers left to payload views",
            **kw,
        )
        self.worker_restarts = Counter(
            p + "worker_restarts", "workers restarted after an unexpected exit", **kw
        )
        self.log_records_dropped = Counter(
            p + "log_records_dropped", "log records dropped: the log queue was full", **kw
        )

    def connection_set(self, max_connections: int) -> CountedConnections:
        return CountedConnections(max_connections, self)

    def observer(self) -> PrometheusObserver:
        return PrometheusObserver(self)


class CountedConnections(ConnectionSet):
    """The runner's ConnectionSet, counting admissions, refusals and closes."""

    def __init__(self, max_connections: int, metrics: ServerMetrics) -> None:
        super().__init__(max_connections)
        self.metrics = metrics

    def admit(self, conn: Connection) -> bool:
        self.metrics.accepted.inc()
        if not super().admit(conn):
            self.metrics.refused.inc()
            return False
        self.metrics.open.inc()
        conn.closed.add_done_callback(lambda _: self.metrics.open.dec())
        return True

    def taken_from_queue(self, count: int) -> None:
        self.metrics.drained.inc(count)


class PrometheusObserver(NullObserver):
    """framing's ConnectionObserver, counting into the process's metrics."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def frames_in(self, frames: Sequence[BytesLike]) -> None:
        m = self.metrics
        m.frames_in.inc(len(frames))
        total = 0
        for frame in frames:
            size = len(frame)
            total += size
            m.frame_size.observe(size)
        m.bytes_in.inc(total)

    def frames_out(self, frames: Sequence[BytesLike]) -> None:
        self.metrics.frames_out.inc(len(frames))
        self.metrics.bytes_out.inc(sum(len(f) for f in frames))

    def error(self, kind: ErrorKind, error: BaseException) -> None:
        self.metrics.errors.labels(kind).inc()

    def writes_paused(self) -> None:
        self.metrics.write_pauses.inc()

    def buffer_left_to_views(self, size: int) -> None:
        self.metrics.buffers_left.inc()
        self.metrics.buffer_bytes_left.inc(size)


def serve_all_workers(port: int, directory: str, host: str = "127.0.0.1") -> int:
    """Serve the sum over every process writing into `directory` on
    http://HOST:PORT/metrics (a thread); returns the port (0: one was chosen)."""
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    server, _ = start_http_server(port, addr=host, registry=registry)
    bound: int = server.server_port
    return bound


def process_exited(pid: int) -> None:
    """Forget a dead worker's live gauges (its counters stay in the sums)."""
    prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def multiprocess_dir_in_use() -> str | None:
    return os.environ.get(MULTIPROCESS_ENV)
