"""The msgpack-RPC library from PyPI: msgpack-rpc-python's server with one echo method.

    PEER_PYTHON framelab/benchmarks/msgpackrpc_echo.py [--host H] [--port P]

msgpack-rpc-python 0.4.1 (on Tornado 4 and msgpack-python 0.5) still runs on
Python 3.11, unlike aiorpc; it needs library versions the project's own
environment must not have, so the benchmark runs this file with the
interpreter of an environment of its own (benchmarks/peer_env.py) and this
file imports nothing of framelab. Its wire format is MessagePack-RPC: a
stream of msgpack arrays [0, msgid, method, params] answered by
[1, msgid, error, result], no length prefix. Prints `listening on HOST:PORT`
like `framelab serve`; stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import socket
from typing import Any

import msgpackrpc  # type: ignore[import-not-found]
from msgpackrpc.transport import tcp  # type: ignore[import-not-found]


class Echo:
    """The dispatcher: msgpack-rpc-python calls the method named in the request."""

    def echo(self, payload: Any) -> Any:
        return payload


def serve(host: str, port: int) -> None:
    server = msgpackrpc.Server(Echo())
    # Server.listen(address) binds every interface on the address's port and
    # cannot say which port 0 became; so the listener is bound here (to
    # `host` only) and handed to the library's own Tornado TCP server.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    listener.setblocking(False)
    transport = tcp.ServerTransport(msgpackrpc.Address(host, port), server._encodings)
    transport._server = server
    accepting = tcp.MessagePackServer(
        transport, io_loop=server._loop._ioloop, encodings=server._encodings
    )
    accepting.add_sockets([listener])
    bound_host, bound_port = listener.getsockname()[:2]
    print(f"listening on {bound_host}:{bound_port}", flush=True)

    def stop(signum: int, frame: object) -> None:
        server._loop._ioloop.add_callback_from_signal(server.stop)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
