"""The closed loop of the RPC clients: D calls in flight per connection, timed at D = 1.

An RPC stack that needs its own client (gRPC, msgpack-RPC) drives the same
load as `benchmarks.loadgen`: C connections, D call slots on each, each slot
sending its next stamped payload as soon as the reply to the last came and
was found equal to it, a warm-up, then the measured window. The stacks
differ only in `call(payload) -> reply`; everything measured is here, once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict
from typing import Any

from framelab.benchmarks.histogram import LatencyHistogram
from framelab.benchmarks.loadgen import (
    STAMP,
    LoadResult,
    LoadSpec,
    cpu_clock,
    cpu_times,
    own_cpu,
    record_window,
)

Call = Callable[[bytes], Awaitable[bytes]]


class CallSlot:
    """One of the D calls kept in flight on a connection."""

    def __init__(self, call: Call, size: int, timed: bool) -> None:
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


async def measure(spec: LoadSpec, calls: Sequence[Call], result: LoadResult) -> None:
    """Run D slots on each connection's `call`: warm-up, window, drain; into `result`."""
    timed = spec.depth == 1
    slots = [CallSlot(call, spec.size, timed) for call in calls for _ in range(spec.depth)]
    tasks = [asyncio.ensure_future(slot.run()) for slot in slots]
    try:
        await _watch(tasks, spec.warmup)
        for slot in slots:
            slot.recording = True
        start_frames = sum(s.done for s in slots)
        start_time, start_cpu = time.perf_counter(), own_cpu()
        start_server, start_clock = cpu_times(spec.server_pid), cpu_clock()
        await _watch(tasks, spec.duration)
        end_frames = sum(s.done for s in slots)
        end_time, end_cpu = time.perf_counter(), own_cpu()
        end_server, end_clock = cpu_times(spec.server_pid), cpu_clock()
        for slot in slots:
            slot.recording = False
            slot.sending = False
        await asyncio.wait_for(asyncio.gather(*tasks), spec.drain_timeout)
    finally:
        for task in tasks:
            task.cancel()
    record_window(
        result,
        spec,
        frames=end_frames - start_frames,
        seconds=end_time - start_time,
        client_cpu_s=end_cpu - start_cpu,
        server_cpu=(start_server, end_server),
        machine=(start_clock, end_clock),
        checked_bytes=sum(s.checked for s in slots),
        histograms=[slot.histogram for slot in slots] if timed else None,
    )


async def _watch(tasks: Sequence[asyncio.Future[None]], seconds: float) -> None:
    """Sleep `seconds`, or raise at once if a call slot failed."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        task.result()  # raises the slot's error
    if done:
        raise RuntimeError("a call slot stopped early")


def client_main(
    run_load: Callable[[LoadSpec], Coroutine[Any, Any, LoadResult]], argv: list[str]
) -> int:
    """`python -m CLIENT SPEC_JSON`: run the load, print its JSON result line."""
    spec = LoadSpec(**json.loads(argv[0]))
    result = asyncio.run(run_load(spec))
    print(json.dumps(asdict(result)), flush=True)
    return 0 if result.error is None else 1
