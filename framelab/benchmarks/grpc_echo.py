"""The RPC stack people pick instead: a grpc.aio unary echo server.

    python -m framelab.benchmarks.grpc_echo [--host H] [--port P]

One unary method, `/framelab.Echo/Echo`, registered through grpc's generic
handlers with no serializers, so request and reply are the raw bytes of the
call (no protoc, no protobuf: the cheapest gRPC can be). Prints
`listening on HOST:PORT` like `framelab serve`; stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

#: the one method, as grpc names it on the wire
METHOD = "/framelab.Echo/Echo"
#: above the benchmark's largest payload (grpc's default is 4 MiB to receive)
MAX_MESSAGE = 16 * 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


def echo_handler() -> grpc.GenericRpcHandler:
    service, method = METHOD.strip("/").split("/")
    return grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(_echo)}
    )


async def _main(host: str, port: int) -> None:
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((echo_handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"listening on {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_main(args.host, args.port))


if __name__ == "__main__":
    main()
