"""One sentence for a socket error, the same in every command.

`address already in use (EADDRINUSE)`, `connection refused (ECONNREFUSED)`:
the text a user can search for and the errno name a developer knows, plus a
hint when the usual cause is clear. Name-resolution failures carry no errno
(their codes are EAI_*), so they are named as such instead of "(no errno)".
"""

from __future__ import annotations

import errno
import socket

#: errno -> what usually causes it, for someone who just typed the command
HINTS = {
    errno.EADDRINUSE: "is another server running?",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's",
    errno.EACCES: "ports under 1024 need root",
    errno.ECONNREFUSED: "is a server listening there?",
    errno.ECONNRESET: "the server aborted the connection",
}


def describe_os_error(exc: OSError) -> str:
    """'address already in use (EADDRINUSE); is another server running?'"""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {(exc.strerror or str(exc)).lower()}"
    text = (exc.strerror or str(exc)).lower()
    name = errno.errorcode.get(exc.errno or 0)
    sentence = f"{text} ({name})" if name else text
    hint = HINTS.get(exc.errno or 0)
    return f"{sentence}; {hint}" if hint else sentence
