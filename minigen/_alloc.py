"""Keeping the memory a training step frees for the next step (glibc's malloc).

A training step allocates and frees the same large arrays every step (activations, their
gradients, kernel outputs).  glibc serves an array above ``M_MMAP_THRESHOLD`` with fresh
pages from the OS and gives back the free memory at the top of its heap once it exceeds
``M_TRIM_THRESHOLD``; either way the next step takes a page fault per 4 KiB, and the kernel
zero-fills each page, before a kernel can write there.  Measured on the 2-core Xeon
(benchmarks/README.md, "Memory kept between steps"): a TransformerLM step (4 x 4 x 128, block
128, batch 32) took 21,800 minor page faults; with the freed memory kept, 2, and the step's CPU
time on one thread fell from 500 to 415 ms (PyTorch 349 ms).  PyTorch's GPU caching allocator
keeps freed blocks for the same reason.

``keep_freed_memory()`` raises both thresholds for the block (arrays up to 1 GiB come from
the heap, and up to 2 GiB of free heap stay with the process, so the process holds its peak
memory), then restores glibc's documented defaults (128 KiB each) and returns the free heap
to the OS with ``malloc_trim(0)``.  Blocks nest.  Without glibc (macOS, Windows, musl) the
block runs as is.
"""
import contextlib
import ctypes
import ctypes.util
import sys
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # glibc's mallopt parameters
KEEP = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: (1 << 31) - 1}
DEFAULTS = {M_MMAP_THRESHOLD: 128 * 1024, M_TRIM_THRESHOLD: 128 * 1024}

_lock = threading.Lock()
_state = {"depth": 0}


def _libc():
    """glibc through ctypes, or None elsewhere."""
    if "libc" not in _state:
        libc = None
        if sys.platform.startswith("linux"):
            try:
                candidate = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(candidate, "mallopt") and hasattr(candidate, "malloc_trim") and \
                        hasattr(candidate, "gnu_get_libc_version"):
                    libc = candidate
            except OSError:
                pass
        _state["libc"] = libc
    return _state["libc"]


def _set(libc, values):
    for param, value in values.items():
        libc.mallopt(param, value)


@contextlib.contextmanager
def keep_freed_memory():
    """Inside the block, memory freed by one training step stays for the next (see the
    module docstring); outside, glibc's defaults hold again and the free heap is returned."""
    libc = _libc()
    if libc is None:
        yield
        return
    with _lock:
        _state["depth"] += 1
        if _state["depth"] == 1:
            _set(libc, KEEP)
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _set(libc, DEFAULTS)
                libc.malloc_trim(0)
