"""glibc allocator settings for torch's CPU tensors.

By default glibc serves every block above 128 KiB with fresh ``mmap`` pages and unmaps them again on ``free``.
Training or batched inference allocates and frees hundreds of megabytes of activations per step, so each step
first-touches all of them again: on two cores the page faults cost more than the arithmetic (a MobileNetV2 training
step at batch 32 takes 170,000 faults and about half a second of kernel time). Keeping freed blocks in the heap
removes nearly all of them; the price is that the process keeps its peak heap until the setting is undone.

:func:`retain_freed_memory` sets this for the rest of the process (inference jobs, benchmarks);
:func:`freed_memory_retained` sets it for a block (training one model) and afterwards restores glibc's usual
thresholds and returns the freed memory to the system. Both do nothing outside Linux/glibc.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The mmap and trim thresholds restored afterwards. glibc starts at 128 KiB and, until a program sets a threshold,
#: raises the mmap threshold to the size of each mmapped block freed (up to 32 MiB) and the trim threshold to twice
#: that; a process that has freed tensors of 32 MiB and more settles at these values. Setting any threshold turns
#: that adjustment off for good, so the settled values are restored rather than the initial ones.
RESTORED_MMAP_THRESHOLD, RESTORED_TRIM_THRESHOLD = 32 << 20, 64 << 20
_RETAINED_MMAP_THRESHOLDS = (1 << 30, 32 << 20)  # glibc before 2.35 caps the threshold at 32 MiB
_RETAINED_TRIM_THRESHOLD = (1 << 31) - 1
_state = {"process_wide": False, "scopes": 0}


@cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist in glibc, not in every libc
    except (OSError, AttributeError):
        return None
    return libc


def _retain(libc: ctypes.CDLL) -> bool:
    mmap_ok = any(libc.mallopt(_M_MMAP_THRESHOLD, value) == 1 for value in _RETAINED_MMAP_THRESHOLDS)
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, _RETAINED_TRIM_THRESHOLD) == 1 and mmap_ok)


def _restore(libc: ctypes.CDLL) -> None:
    libc.mallopt(_M_MMAP_THRESHOLD, RESTORED_MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, RESTORED_TRIM_THRESHOLD)
    libc.malloc_trim(0)


def retain_freed_memory() -> bool:
    """Keep freed blocks of up to 1 GiB (32 MiB on glibc < 2.35) in the heap for the rest of the process.

    Returns:
        Whether the settings were applied (False, and nothing done, outside Linux/glibc).
    """
    libc = _libc()
    if libc is None or not _retain(libc):
        return False
    _state["process_wide"] = True
    return True


def release_freed_memory() -> bool:
    """Restore glibc's usual thresholds (:data:`RESTORED_MMAP_THRESHOLD`; also after :func:`retain_freed_memory`)
    and return the free heap to the system. Returns whether that was done."""
    libc = _libc()
    if libc is None:
        return False
    _restore(libc)
    _state["process_wide"] = False
    return True


@contextmanager
def freed_memory_retained(enabled: bool = True) -> Iterator[bool]:
    """Retain freed memory inside the block (see :func:`retain_freed_memory`), then restore glibc's usual thresholds
    and give the free heap back, unless the process retains it anyway. Nested blocks restore only when the
    outermost ends.

    Yields:
        Whether freed memory is retained inside the block.
    """
    libc = _libc() if enabled else None
    if libc is None or _state["process_wide"]:
        yield _state["process_wide"]
        return
    applied = _state["scopes"] > 0 or _retain(libc)
    _state["scopes"] += 1
    try:
        yield applied
    finally:
        _state["scopes"] -= 1
        if _state["scopes"] == 0 and not _state["process_wide"]:
            _restore(libc)
