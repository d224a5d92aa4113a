"""Giving freed memory back to the system.

glibc keeps memory a process frees in its heaps for reuse: after thousands of world-model
sessions expire the server's RSS stays near its peak. `trim()` asks glibc to return the free
pages (malloc_trim(0)); the services call it after a sweep that freed sessions. The allocator
settings in `ALLOCATOR_ENV` (set in the image and by `worldenv up`) make glibc return large
blocks on its own.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

# Fixed thresholds instead of glibc's dynamic ones, which rise to 32 MiB after large frees and
# then keep every later block below that in the heap: blocks of 4 MiB and more (merged frame
# batches, large activations) are mapped and unmapped on their own, and more than 32 MiB free at
# the heap's top goes back to the system. Lower mmap thresholds cost the model: at 128 KiB or
# 16 KiB every activation is a fresh mapping and a world-model Step took about twice as long.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "4194304", "MALLOC_TRIM_THRESHOLD_": "33554432"}


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None on another C library."""
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def trim() -> bool:
    """Return free heap memory to the system; True if any was returned (False off glibc)."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


def rss_bytes() -> int:
    """This process's resident set size (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
