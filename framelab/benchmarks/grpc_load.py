"""The load generator for the gRPC peer, with gRPC's own Python client.

    python -m framelab.benchmarks.grpc_load SPEC_JSON

The same LoadSpec and the same JSON result line as `benchmarks.loadgen`:
C channels (each its own TCP connection), D calls in flight on each (one
task per call slot, closed loop), a warm-up, then the window. Every reply
is compared with its request (payloads are stamped with their index, so a
reply to another call fails the run; the loop is benchmarks/call_slots.py).
The client differs from the framed load generator because gRPC needs its
own (HTTP/2, its call objects), so its numbers go in a table of their own;
at D = 1 each call is timed.
"""

from __future__ import annotations

import asyncio
import sys

import grpc

from framelab.benchmarks.call_slots import client_main, measure
from framelab.benchmarks.grpc_echo import METHOD, OPTIONS
from framelab.benchmarks.loadgen import LoadResult, LoadSpec


async def run_load(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    target = f"{spec.host}:{spec.port}"
    channels = [
        grpc.aio.insecure_channel(target, options=[*OPTIONS, ("grpc.use_local_subchannel_pool", 1)])
        for _ in range(spec.connections)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        await measure(spec, [channel.unary_unary(METHOD) for channel in channels], result)
    except (RuntimeError, OSError, TimeoutError, grpc.RpcError) as error:
        result.error = str(error) or type(error).__name__
    finally:
        for channel in channels:
            await channel.close()
    return result


if __name__ == "__main__":
    sys.exit(client_main(run_load, sys.argv[1:]))
