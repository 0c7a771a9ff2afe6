"""The load generator for the gRPC peer, with gRPC's own Python client.

    python -m framelab.benchmarks.grpc_load SPEC_JSON

The same LoadSpec and the same JSON result line as `benchmarks.loadgen`:
C channels (each its own TCP connection), D calls in flight on each (one
task per call slot, closed loop), a warm-up, then the window. Every reply
is compared with its request (payloads are stamped with their index, so a
reply to another call fails the run). The client differs from the framed
load generator because gRPC needs its own (HTTP/2, its call objects), so
its numbers go in a table of their own; at D = 1 each call is timed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import grpc

from framelab.benchmarks.grpc_echo import METHOD, OPTIONS
from framelab.benchmarks.histogram import LatencyHistogram
from framelab.benchmarks.loadgen import (
    STAMP,
    LoadResult,
    LoadSpec,
    cpu_seconds,
    own_cpu,
    record_window,
)


class CallSlot:
    """One of the D calls kept in flight on a channel."""

    def __init__(self, call: Any, size: int, timed: bool) -> None:
        self.call = call
        self.size = size
        self.timed = timed
        self.histogram = LatencyHistogram()
        self.recording = False
        self.sending = True
        self.done = 0
        self.checked = 0
        self._pattern = bytes(range(256)) * (size // 256 + 1)

    async def run(self) -> None:
        index = 0
        while self.sending:
            stamp = STAMP.pack(index)[: self.size]
            payload = stamp + self._pattern[len(stamp) : self.size]
            sent_at = time.perf_counter_ns()
            reply = await self.call(payload)
            if reply != payload:
                raise RuntimeError(f"call {index}: the reply differs from the request")
            if self.timed and self.recording:
                self.histogram.record(time.perf_counter_ns() - sent_at)
            self.done += 1
            self.checked += len(reply)
            index += 1


async def run_load(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    timed = spec.depth == 1
    target = f"{spec.host}:{spec.port}"
    channels = [
        grpc.aio.insecure_channel(target, options=[*OPTIONS, ("grpc.use_local_subchannel_pool", 1)])
        for _ in range(spec.connections)
    ]
    slots = [
        CallSlot(channel.unary_unary(METHOD), spec.size, timed)
        for channel in channels
        for _ in range(spec.depth)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        tasks = [asyncio.ensure_future(slot.run()) for slot in slots]
        await _watch(tasks, spec.warmup)
        for slot in slots:
            slot.recording = True
        start_frames = sum(s.done for s in slots)
        start_time, start_cpu = time.perf_counter(), own_cpu()
        start_server = cpu_seconds(spec.server_pid) if spec.server_pid else None
        await _watch(tasks, spec.duration)
        end_frames = sum(s.done for s in slots)
        end_time, end_cpu = time.perf_counter(), own_cpu()
        end_server = cpu_seconds(spec.server_pid) if spec.server_pid else None
        for slot in slots:
            slot.recording = False
            slot.sending = False
        await asyncio.wait_for(asyncio.gather(*tasks), spec.drain_timeout)
        record_window(
            result,
            spec,
            frames=end_frames - start_frames,
            seconds=end_time - start_time,
            client_cpu_s=end_cpu - start_cpu,
            server_cpu=(start_server, end_server),
            checked_bytes=sum(s.checked for s in slots),
            histograms=[slot.histogram for slot in slots] if timed else None,
        )
    except (RuntimeError, OSError, TimeoutError, grpc.RpcError) as error:
        result.error = str(error) or type(error).__name__
    finally:
        for channel in channels:
            await channel.close()
    return result


async def _watch(tasks: Sequence[asyncio.Future[None]], seconds: float) -> None:
    """Sleep `seconds`, or raise at once if a call slot failed."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()  # raises the slot's error
    if done:
        raise RuntimeError("a call slot stopped early")


def main(argv: list[str]) -> int:
    spec = LoadSpec(**json.loads(argv[0]))
    result = asyncio.run(run_load(spec))
    print(json.dumps(asdict(result)), flush=True)
    return 0 if result.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
