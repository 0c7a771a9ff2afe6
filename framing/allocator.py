"""Keep freed large payload buffers in the process heap (glibc malloc).

A frame of `large_frame` bytes or more is received into a bytearray of its
own, one per frame. glibc serves allocations above M_MMAP_THRESHOLD (128 KiB
at start, then the size of the largest mmap'd block freed so far) with a
fresh mmap, and gives heap memory above M_TRIM_THRESHOLD back to the kernel
on free. An echo of 1 MiB frames then maps, faults in, zeroes and unmaps 256
pages per frame: measured here, the framed echo ran at about 65 % of the
raw echo's rate at 1 MiB, and at 100 % with both thresholds raised so that
freed buffers are reused from the heap.

Raising them is a process-wide choice, so the library never does it by
itself: servers call `keep_large_buffers_in_heap(max_frame_length)` at
start (`framelab serve` does). The price is that freed memory up to twice
the threshold stays in the process instead of going back to the kernel.
The environment variables MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_
do the same without code. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's upper bound for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
_SLACK = 64 * 1024  # malloc's own header and rounding, with room to spare


def keep_large_buffers_in_heap(largest: int) -> bool:
    """Serve allocations up to `largest` bytes (capped at 32 MiB) from the heap
    and keep freed memory for reuse. True if malloc accepted the settings."""
    if platform.libc_ver()[0] != "glibc":
        return False
    threshold = min(max(largest + _SLACK, 128 * 1024), MAX_MMAP_THRESHOLD)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2 * threshold)
    )
