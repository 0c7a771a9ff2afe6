"""A client of an independent implementation of the wire format (Twisted's
Int32StringReceiver); its echo server is benchmarks/twisted_echo.py.

    python twisted_int32.py PORT N     # sends N frames of growing size,
                                       # prints the sha256 and size of each echo
Used by the interop tests, in a subprocess of its own.
"""

from __future__ import annotations

import hashlib
import sys

from twisted.internet import protocol, reactor
from twisted.protocols.basic import Int32StringReceiver

MAX_LENGTH = 16 * 1024 * 1024


class Client(Int32StringReceiver):
    MAX_LENGTH = MAX_LENGTH

    def __init__(self, count: int) -> None:
        self.count = count
        self.received = 0

    def connectionMade(self) -> None:
        for i in range(self.count):
            self.sendString(payload(i))

    def stringReceived(self, data: bytes) -> None:
        print(hashlib.sha256(data).hexdigest(), len(data), flush=True)
        self.received += 1
        if self.received == self.count:
            self.transport.loseConnection()

    def connectionLost(self, reason: object) -> None:
        reactor.stop()


def payload(i: int) -> bytes:
    """Frame i: i*i*37 bytes (0, 37, 148, ...), a repeating pattern."""
    return bytes((i + j) % 251 for j in range(i * i * 37))


def main() -> None:
    port_number, count = int(sys.argv[1]), int(sys.argv[2])
    factory = protocol.ClientFactory()
    factory.protocol = lambda: Client(count)
    reactor.connectTCP("127.0.0.1", port_number, factory)
    reactor.run()


if __name__ == "__main__":
    main()
