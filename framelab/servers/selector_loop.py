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
on any accept() after a resource error in the same call. On a CPython with
the upstream fix it changes nothing. uvloop needs no fix: libuv keeps a
spare descriptor and, out of descriptors, accepts and closes the waiting
connections at once (no spin, no log line).
"""

from __future__ import annotations

import asyncio
import errno
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


class SelectorLoop(asyncio.SelectorEventLoop):
    """asyncio.SelectorEventLoop that backs off once per out-of-descriptors tick."""

    def _accept_connection(
        self, protocol_factory: Any, sock: Any, *args: Any, **kwargs: Any
    ) -> None:
        if isinstance(sock, _AcceptOnceAfterResourceError):  # a retry hands it back
            sock = sock.sock
        super()._accept_connection(  # type: ignore[misc]
            protocol_factory, _AcceptOnceAfterResourceError(sock), *args, **kwargs
        )
