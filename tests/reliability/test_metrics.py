"""`framelab serve --metrics-port`: Prometheus text format, parsed with the
client library's own parser and checked against what the test sent."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from framelab.servers.metrics import ServerMetrics
from framelab.servers.process import ServerProcess
from framing import encode_frames

from .support import connect, read_to_end

SIZES = [0, 1, 100, 1000, 5000]  # payload bytes of the frames each client sends
CLIENTS = 12
MAX_FRAME = 10_000


def scrape(port: int) -> dict[str, float]:
    """Every sample as name{labels} -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def scrape_until(port: int, name: str, value: float, timeout: float = 10.0) -> dict[str, float]:
    """Counters move a moment after the client saw its replies: poll, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if samples.get(name) == value or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_metrics_count_what_the_clients_sent_across_workers_and_restarts() -> None:
    args = ["--workers", "2", "--metrics-port", "0", "--max-frame", str(MAX_FRAME)]
    with ServerProcess(args) as server:
        line = server.wait_for_log("metrics on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        for _ in range(CLIENTS):
            with connect(server.address) as sock:
                sock.sendall(encode_frames([bytes(n) for n in SIZES]))
                sock.shutdown(socket.SHUT_WR)
                assert len(read_to_end(sock).frames) == len(SIZES)
        with connect(server.address) as sock:  # oversize: a header over the limit
            sock.sendall(struct.pack(">I", MAX_FRAME + 1))
            read_to_end(sock)
        with connect(server.address) as sock:  # truncated: the stream ends mid-frame
            sock.sendall(struct.pack(">I", 100) + b"ten bytes!")
            sock.shutdown(socket.SHUT_WR)
            read_to_end(sock)
        m = scrape_until(port, "framelab_connections_open", 0)
        frames, payload = CLIENTS * len(SIZES), CLIENTS * sum(SIZES)
        assert m["framelab_connections_accepted_total"] == CLIENTS + 2
        assert m["framelab_connections_open"] == 0
        assert m["framelab_connections_refused_total"] == 0
        assert m["framelab_frames_in_total"] == frames
        assert m["framelab_frames_out_total"] == frames
        assert m["framelab_bytes_in_total"] == payload
        assert m["framelab_bytes_out_total"] == payload
        assert m["framelab_frame_size_bytes_count"] == frames
        assert m["framelab_frame_size_bytes_sum"] == payload
        assert m["framelab_frame_size_bytes_bucket{le=0.0}"] == CLIENTS  # the empty frames
        assert m["framelab_frame_size_bytes_bucket{le=1024.0}"] == CLIENTS * 4
        assert m["framelab_errors_total{kind=oversize}"] == 1
        assert m["framelab_errors_total{kind=truncated}"] == 1
        assert m["framelab_errors_total{kind=timeout}"] == 0
        assert m["framelab_receive_buffers_left_to_views_total"] == 0  # the echo keeps none
        assert m["framelab_worker_restarts_total"] == 0
        assert m["framelab_log_records_dropped_total"] == 0
        # a worker dies: restarted, counted, and its counts stay in the sums
        mark = len(server.log)
        os.kill(server.worker_pids()[0], signal.SIGKILL)
        server.wait_for_log("restarted: pid", start=mark)
        after = scrape(port)
        assert after["framelab_worker_restarts_total"] == 1
        assert after["framelab_frames_in_total"] == frames
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0


def test_the_connection_set_and_observer_count_into_the_metrics() -> None:
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    connections = metrics.connection_set(max_connections=5)
    connections.taken_from_queue(3)
    metrics.observer().frames_in([b"ab", b"", b"cde"])
    metrics.observer().writes_paused()
    metrics.observer().buffer_left_to_views(256 * 1024)
    assert registry.get_sample_value("framelab_connections_drained_total") == 3
    assert registry.get_sample_value("framelab_frames_in_total") == 3
    assert registry.get_sample_value("framelab_bytes_in_total") == 5
    assert registry.get_sample_value("framelab_write_pauses_total") == 1
    assert registry.get_sample_value("framelab_receive_buffers_left_to_views_total") == 1
    assert registry.get_sample_value("framelab_receive_buffer_bytes_left_to_views_total") == (
        256 * 1024
    )


def test_metrics_port_without_the_client_library_is_one_line_and_exit_2() -> None:
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from framelab.cli import main; sys.exit(main(['serve', '--metrics-port', '0']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "pip install 'framelab[metrics]'" in done.stderr
