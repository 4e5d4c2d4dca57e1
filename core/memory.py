"""Give freed heap memory back to the operating system.

glibc keeps freed blocks in its heap arenas; after a model load (fp32 weights replaced by int8) or an
answer (activations of a long prefill) the process would otherwise keep hundreds of MiB it no longer
uses, and resident memory would grow with every answer instead of with the caches that are kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _trim():  # noqa: ANN202 - a ctypes function or None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None


def release_free_memory() -> None:
    trim = _trim()
    if trim is not None:
        trim(0)
