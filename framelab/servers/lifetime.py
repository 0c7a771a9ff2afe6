"""A child process that dies with its parent, even when the parent is SIGKILLed.

Linux's PR_SET_PDEATHSIG asks the kernel to signal the child when the thread
that forked it exits, however it exits; a check that the parent is still the
one that started us closes the window before the request took effect. Used by
the supervisor's workers and by every server a test or a benchmark starts, so
that no server outlives the process that was measuring or supervising it.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel for `sig` when the parent exits; False if it already has
    (we were reparented before the request took effect)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    return os.getppid() == parent


def tied_to_this_process(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A Popen `preexec_fn`: the child gets `sig` when this process's forking
    thread goes, and exits at once if that already happened."""
    parent = os.getpid()

    def in_child() -> None:
        if not die_with_parent(parent, sig):
            os._exit(1)

    return in_child
