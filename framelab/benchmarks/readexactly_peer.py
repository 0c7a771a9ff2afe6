"""The hand-written peer: msgpack requests over asyncio streams with readexactly.

    python -m framelab.benchmarks.readexactly_peer [--host H] [--port P] [--loop L]

The same wire format and the same application (msgpack_app) as
`framelab serve --mode msgpack`, served the way most people write it by
hand: per request `readexactly(4)`, `readexactly(n)`, `msgpack.unpackb`,
`msgpack.packb`, one `write()` and `drain()`. No frame limit, no timeouts,
no batching: the baseline the library's msgpack path must beat. Prints
`listening on HOST:PORT` like `framelab serve`; stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import struct

import msgpack

from framelab.servers import msgpack_app

_HEADER = struct.Struct(">I")


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            (length,) = _HEADER.unpack(await reader.readexactly(4))
            request = msgpack.unpackb(await reader.readexactly(length), raw=False)
            reply = msgpack.packb(msgpack_app.handle_request(request), use_bin_type=True)
            writer.write(_HEADER.pack(len(reply)) + reply)
            await writer.drain()
    writer.close()


async def _main(host: str, port: int) -> None:
    server = await asyncio.start_server(_serve_connection, host, port)
    address = server.sockets[0].getsockname()
    print(f"listening on {address[0]}:{address[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_main(args.host, args.port))
    else:
        asyncio.run(_main(args.host, args.port))


if __name__ == "__main__":
    main()
