"""asyncio's default (selector) loop with its out-of-descriptors back-off fixed.

When accept() fails with EMFILE/ENFILE/ENOBUFS/ENOMEM, asyncio stops watching
the listener and retries after ACCEPT_RETRY_DELAY (1 s): the right idea, as
the pending connections wait in the kernel's backlog and are served once
descriptors free up. But CPython up to 3.13 does not leave its accept loop
after that error (gh-151615): it calls accept() again up to `backlog` times
in the same tick, logging a traceback and scheduling one more retry each
time; every retry then repeats the burst, so the log floods and CPU use
grows by the second while the server is out of descriptors.

The fix here ends that loop at the first such error: the socket handed to
the stock code raises BlockingIOError (asyncio's "nothing more to accept")
on any accept() after a resource error in the same call. uvloop needs no
fix: libuv keeps a spare descriptor and, out of descriptors, accepts and
closes the waiting connections at once (no spin, no log line).

Gate: upstream fixed it in CPython's main branch (gh-151615, PR #151616,
merged June 2026: `return` after scheduling the retry). Every CPython found
on the machine this was written on (3.11.7, 3.12.1, 3.13.0) still has the
burst, and which later releases carry the backport could not be checked
here, so rather than trust a version number the override asks the stock
method once (`stock_accept_bursts`: a fake listener whose accept() fails
with EMFILE, counted) and stays out of the way on a CPython that stops by
itself.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
from typing import Any

#: accept() errors after which asyncio backs off instead of failing
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _AcceptOnceAfterResourceError:
    """A listening socket whose accept() reports 'nothing pending' once a
    resource error has been raised; everything else goes to the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._failed = False

    def accept(self) -> tuple[socket.socket, Any]:
        if self._failed:
            raise BlockingIOError(errno.EAGAIN, "backing off after a resource error")
        try:
            return self.sock.accept()
        except OSError as error:
            if error.errno in RESOURCE_ERRORS:
                self._failed = True
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _AlwaysOutOfDescriptors:
    """A fake listener for the probe: counts accept() calls, each one EMFILE."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.accepts = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.accepts += 1
        raise OSError(errno.EMFILE, "too many open files (probe)")

    def fileno(self) -> int:
        return self.real.fileno()  # a descriptor the probe loop never watched


@functools.cache
def stock_accept_bursts(
    loop_class: type[asyncio.SelectorEventLoop] = asyncio.SelectorEventLoop,
) -> bool:
    """Whether `loop_class` calls accept() again, in the same tick, after a
    resource error (the bug described above)."""
    loop = loop_class()
    loop.set_exception_handler(lambda _loop, _context: None)  # the probe's error is expected
    real = socket.socket()
    try:
        fake = _AlwaysOutOfDescriptors(real)
        loop._accept_connection(lambda: asyncio.Protocol(), fake, backlog=3)  # type: ignore[attr-defined]
        return fake.accepts > 1
    finally:
        real.close()
        loop.close()  # the retry it scheduled never runs


class SelectorLoop(asyncio.SelectorEventLoop):
    """asyncio.SelectorEventLoop that backs off once per out-of-descriptors tick."""

    def _accept_connection(
        self, protocol_factory: Any, sock: Any, *args: Any, **kwargs: Any
    ) -> None:
        if isinstance(sock, _AcceptOnceAfterResourceError):  # a retry hands it back
            sock = sock.sock
        if not stock_accept_bursts():
            super()._accept_connection(protocol_factory, sock, *args, **kwargs)  # type: ignore[misc]
            return
        super()._accept_connection(  # type: ignore[misc]
            protocol_factory, _AcceptOnceAfterResourceError(sock), *args, **kwargs
        )
