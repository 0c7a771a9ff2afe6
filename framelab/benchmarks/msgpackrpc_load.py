"""The load generator for the msgpack-RPC peer: MessagePack-RPC calls over asyncio.

    python -m framelab.benchmarks.msgpackrpc_load SPEC_JSON

The same LoadSpec, closed loop and JSON result line as the gRPC client
(benchmarks/call_slots.py): C connections, D calls of `echo` in flight on
each. MessagePack-RPC has no length prefix, so the framed load generator
cannot speak it: each connection is an asyncio protocol that writes
[0, msgid, "echo", [payload]] and reads the stream of [1, msgid, error,
result] with a msgpack Unpacker, matching replies to calls by msgid. (The
library's own client runs a Tornado loop of its own and waits per call;
this one keeps D calls in flight as the other clients do.)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import msgpack

from framelab.benchmarks.call_slots import client_main, measure
from framelab.benchmarks.loadgen import LoadResult, LoadSpec

REQUEST, RESPONSE = 0, 1


class RpcConnection(asyncio.Protocol):
    """One MessagePack-RPC connection; `call` may be awaited many times at once."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.unpacker = msgpack.Unpacker(raw=True, max_buffer_size=64 * 1024 * 1024)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        for message in self.unpacker:
            if not (isinstance(message, list) and len(message) == 4 and message[0] == RESPONSE):
                self._fail(RuntimeError(f"not a MessagePack-RPC response: {message!r:.100}"))
                return
            _, msgid, error, result = message
            waiter = self.waiting.pop(msgid, None)
            if waiter is None:
                self._fail(RuntimeError(f"a response to no call in flight (msgid {msgid})"))
                return
            if error is not None:
                waiter.set_exception(RuntimeError(f"the peer answered an error: {error!r}"))
            else:
                waiter.set_result(result)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("the peer closed the connection"))

    def _fail(self, error: BaseException) -> None:
        self.error = self.error or error
        waiting, self.waiting = self.waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    async def call(self, payload: bytes) -> bytes:
        if self.error is not None or self.transport is None:
            raise RuntimeError(f"connection failed: {self.error}")
        msgid, self.next_id = self.next_id, (self.next_id + 1) & 0xFFFF_FFFF
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[msgid] = waiter
        self.transport.write(msgpack.packb([REQUEST, msgid, "echo", [payload]]))
        reply: bytes = await waiter
        return reply


async def run_load(spec: LoadSpec) -> LoadResult:
    result = LoadResult()
    loop = asyncio.get_running_loop()
    connections: list[RpcConnection] = []
    try:
        for _ in range(spec.connections):
            _, protocol = await asyncio.wait_for(
                loop.create_connection(RpcConnection, spec.host, spec.port), 10
            )
            connections.append(protocol)
        await measure(spec, [c.call for c in connections], result)
    except (RuntimeError, OSError, TimeoutError) as error:
        result.error = str(error) or type(error).__name__
    finally:
        for connection in connections:
            if connection.transport is not None:
                connection.transport.close()
    return result


if __name__ == "__main__":
    sys.exit(client_main(run_load, sys.argv[1:]))
