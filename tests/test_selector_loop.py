"""SelectorLoop's accept back-off, and the probe that decides whether it is needed."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

from framelab.servers.selector_loop import SelectorLoop, stock_accept_bursts


class OutOfDescriptors:
    """A listener whose every accept() fails with EMFILE; counts the calls."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.accepts = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.accepts += 1
        raise OSError(errno.EMFILE, "too many open files")

    def fileno(self) -> int:
        return self.real.fileno()


class StopsAtTheFirstError(asyncio.SelectorEventLoop):
    """A loop with the upstream fix: one accept(), then the retry is scheduled."""

    def _accept_connection(self, protocol_factory: Any, sock: Any, *args: Any, **kw: Any) -> None:
        try:
            sock.accept()
        except OSError:
            return


def test_the_probe_tells_a_fixed_loop_from_a_bursting_one() -> None:
    class Bursts(asyncio.SelectorEventLoop):
        def _accept_connection(
            self, protocol_factory: Any, sock: Any, *args: Any, **kw: Any
        ) -> None:
            for _ in range(3):
                try:
                    sock.accept()
                except OSError:
                    continue

    assert stock_accept_bursts(Bursts) is True
    assert stock_accept_bursts(StopsAtTheFirstError) is False


def test_selector_loop_calls_accept_once_per_tick_out_of_descriptors() -> None:
    loop = SelectorLoop()
    loop.set_exception_handler(lambda _loop, _context: None)
    with socket.socket() as real:
        listener = OutOfDescriptors(real)
        try:
            loop._accept_connection(lambda: asyncio.Protocol(), listener, backlog=50)
        finally:
            loop.close()
    assert listener.accepts == 1
