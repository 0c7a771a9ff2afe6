"""The cluster's client load: bounded, verified, and told which backend served it.

W workers each open a connection through the balancer, ask `peer` (the
reply names the backend that answers, by its address, and the client
address it saw), send F echo requests one after another checking every
reply against what was sent, then close (the client closes first), pause,
and start over until the time is up or the connection budget is spent.
Every connection becomes one `ConnectionRecord`: when, which backend, how
many frames came back right, how many came back wrong (corrupted: must stay
0), and why it ended early if it did. Sockets are made in the client's
namespace; nothing but the balancer's address is ever dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

from framelab.lab.netns import socket_in
from framing.errors import FramingError
from framing.messages import MessageCodec
from framing.streams import FrameReader, FrameWriter

#: a reply slower than this ends the connection as failed (the load stays bounded);
#: asyncio.timeout, not wait_for: 3.11's wait_for drops a cancellation (Ctrl-C)
#: that arrives as its awaitable finishes
REPLY_TIMEOUT = 5.0


@dataclass(frozen=True)
class LoadSpec:
    address: tuple[str, int]
    netns: str | None = None
    workers: int = 4
    seconds: float = 6.0
    frames_per_connection: int = 20
    payload_bytes: int = 64
    pause: float = 0.005  # between one worker's connections
    max_connections: int = 20_000


@dataclass(frozen=True)
class ConnectionRecord:
    started: float  # seconds since the load began
    ended: float
    backend: str | None  # the answering server's address (peer op); None if never answered
    client: str | None  # the client address that server saw
    frames: int  # echo replies that matched
    corrupted: int  # echo replies that did not
    error: str | None  # why it ended before all its frames; None: it completed

    def as_json(self) -> dict[str, Any]:
        return {
            "started": round(self.started, 4),
            "ended": round(self.ended, 4),
            "backend": self.backend,
            "client": self.client,
            "frames": self.frames,
            "corrupted": self.corrupted,
            "error": self.error,
        }


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0


async def run_load(spec: LoadSpec, started: float | None = None) -> list[ConnectionRecord]:
    """Run the load to its end; every connection's record, in start order."""
    origin = time.monotonic() if started is None else started
    end = origin + spec.seconds
    budget = _Budget(spec.max_connections)
    records: list[ConnectionRecord] = []

    async def worker(index: int) -> None:
        serial = 0
        task = asyncio.current_task()
        while time.monotonic() < end and budget.take():
            if task is not None and task.cancelling():
                break  # Ctrl-C: a cancellation lost in a finished await still stops the load
            records.append(await one_connection(spec, origin, f"{index}.{serial}"))
            serial += 1
            await asyncio.sleep(spec.pause)

    await asyncio.gather(*(worker(i) for i in range(spec.workers)))
    return sorted(records, key=lambda r: r.started)


async def one_connection(spec: LoadSpec, origin: float, tag: str) -> ConnectionRecord:
    loop = asyncio.get_running_loop()
    codec = MessageCodec()
    started = time.monotonic() - origin
    backend = client = error = None
    frames = corrupted = 0
    sock = socket_in(spec.netns)
    writer: asyncio.StreamWriter | None = None
    try:
        sock.setblocking(False)
        async with asyncio.timeout(REPLY_TIMEOUT):
            await loop.sock_connect(sock, spec.address)
        reader, writer = await asyncio.open_connection(sock=sock)
        frames_in = FrameReader(reader)
        frames_out = FrameWriter(writer)

        async def call(request: dict[str, Any]) -> Any:
            await frames_out.send(codec.encode(request))
            async with asyncio.timeout(REPLY_TIMEOUT):
                payload = await frames_in.read_frame()
            if payload is None:
                raise ConnectionError(f"closed by the other side after {frames} frames")
            return codec.decode(payload)

        peer = await call({"op": "peer", "id": "peer"})
        result = peer.get("result") if isinstance(peer, dict) else None
        if not isinstance(result, dict):
            raise ConnectionError(f"the peer op was refused: {peer!r:.200}")
        backend, client = result.get("server"), result.get("address")
        for i in range(spec.frames_per_connection):
            body = f"{tag}.{i}.".encode() + os.urandom(max(spec.payload_bytes - 16, 0))
            reply = await call({"op": "echo", "id": i, "args": body})
            if reply == {"id": i, "ok": True, "result": body}:
                frames += 1
            else:
                corrupted += 1
    except (OSError, TimeoutError, FramingError, asyncio.IncompleteReadError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        else:
            sock.close()
    ended = time.monotonic() - origin
    return ConnectionRecord(started, ended, backend, client, frames, corrupted, error)
