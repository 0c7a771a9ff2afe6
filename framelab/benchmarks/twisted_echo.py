"""The independent peer: Twisted's Int32StringReceiver as a framed echo.

    python -m framelab.benchmarks.twisted_echo [--host H] [--port P]

Prints `listening on HOST:PORT` like `framelab serve`, and stops on SIGINT
or SIGTERM. The same wire format implemented by someone else, so the
benchmark compares framelab with a known codec, not only with itself.
"""

from __future__ import annotations

import argparse

from twisted.internet import protocol, reactor
from twisted.protocols.basic import Int32StringReceiver

#: above the benchmark's largest frame (Twisted's default is 99,999 bytes)
MAX_LENGTH = 16 * 1024 * 1024


class Echo(Int32StringReceiver):
    MAX_LENGTH = MAX_LENGTH

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    port = reactor.listenTCP(
        args.port, protocol.ServerFactory.forProtocol(Echo), interface=args.host
    )
    address = port.getHost()
    print(f"listening on {address.host}:{address.port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
