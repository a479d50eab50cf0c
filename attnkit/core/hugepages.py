"""Weights a backend loads, moved onto 2 MiB pages (Linux transparent huge pages) once they are in memory.

A decode step streams every weight once a token; at batch 1 it is bound by how fast memory is read, and on
4 KiB pages each MiB of weights costs 256 TLB entries. Linux backs anonymous memory with 2 MiB pages only where
asked (``/sys/kernel/mm/transparent_hugepage/enabled`` = ``madvise``, the default of Debian, Ubuntu and the
machines measured here), and nothing in OpenVINO, onnxruntime or their GenAI pipelines asks: the buffers they
repack weights into are plain ``malloc`` on 4 KiB pages. Measured on an AVX2 EPYC (2 vCPU VM; BENCHMARKS.md,
``scripts/measure_huge_pages.py``, 8 interleaved rounds in one process), llama3-124m decoded 1.01-1.09x faster on
2 MiB pages over two runs (OpenVINO stateful 1.09x and 1.03x, OpenVINO GenAI 1.05x and 1.01x, onnxruntime 1.02x).

How: once a backend has loaded, every 2 MiB-aligned chunk of the process's anonymous read-write memory whose
512 pages are all resident (``mincore``) is collapsed with ``madvise(MADV_COLLAPSE)`` (Linux 6.1+, independent
of the ``madvise``/``always`` setting). The whole process, not only the mappings that are new since the load
began: an allocator hands a load memory that was freed before it (measured: a test's weights landed in reused
heap and were missed by a before/after comparison of the mappings). Only fully resident chunks: collapsing a
sparse reservation would fill its holes and raise memory use; a chunk whose pages are all there costs nothing
more on one page than on 512, and one already on a huge page is left as it is by the kernel. Written here because no library does it for memory it
does not own (glibc's ``glibc.malloc.hugetlb=1`` tunable does it for every allocation, but only when set in the
environment before the process starts). ``ATTNKIT_HUGE_PAGES=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

#: a huge page on x86-64 and aarch64 with 4 KiB base pages; the only size MADV_COLLAPSE makes
HUGE = 2 << 20
PAGE = mmap.PAGESIZE
#: <linux/mman.h>; EINVAL from a kernel before 6.1, or where transparent huge pages are ``never``
MADV_COLLAPSE = 25
ENV = "ATTNKIT_HUGE_PAGES"


@dataclass
class Collapsed:
    """What one load got: bytes moved onto 2 MiB pages, or why none were."""

    bytes: int = 0
    #: None when something was collapsed or nothing was eligible; else the reason (off, kernel, platform)
    reason: str | None = None
    chunks_failed: int = 0
    regions: list[tuple[int, int]] = field(default_factory=list)

    def describe(self) -> str:
        if self.reason:
            return f"4 KiB pages ({self.reason})"
        return f"{self.bytes / 2**20:.0f} MiB on 2 MiB pages"


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return libc


def unavailable() -> str | None:
    """Why nothing will be collapsed in this process, or None."""
    if os.environ.get(ENV, "1") == "0":
        return f"{ENV}=0"
    if not sys.platform.startswith("linux"):
        return "not Linux"
    if PAGE != 4096:
        return f"base pages of {PAGE} bytes"
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            if "[never]" in f.read():
                return "transparent huge pages are `never` on this machine"
    except OSError:
        return "the kernel has no transparent huge pages"
    return None


def anonymous_regions() -> list[tuple[int, int]]:
    """``(start, end)`` of this process's anonymous read-write mappings (the heap included), in address order."""
    regions = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            anonymous = len(parts) == 5 or (len(parts) == 6 and parts[5] == "[heap]")
            if anonymous and parts[1].startswith("rw"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                regions.append((start, end))
    return regions


def resident_chunks(libc, start: int, end: int) -> list[tuple[int, int]]:
    """Runs of 2 MiB-aligned chunks in ``[start, end)`` whose every page is resident."""
    import numpy as np

    lo, hi = -(-start // HUGE) * HUGE, end // HUGE * HUGE
    if hi <= lo:
        return []
    pages = (hi - lo) // PAGE
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(lo, hi - lo, vec) != 0:
        return []
    full = (np.frombuffer(vec, np.uint8).reshape(-1, HUGE // PAGE) & 1).all(axis=1)
    runs: list[list[int]] = []
    for i in np.flatnonzero(full):
        a = lo + int(i) * HUGE
        if runs and runs[-1][1] == a:
            runs[-1][1] = a + HUGE
        else:
            runs.append([a, a + HUGE])
    return [(a, b) for a, b in runs]


def collapse(ranges: list[tuple[int, int]]) -> Collapsed:
    """Collapse the fully resident 2 MiB chunks of ``ranges`` (see the module docstring)."""
    reason = unavailable()
    if reason:
        return Collapsed(reason=reason)
    libc = _libc()
    done, refused = Collapsed(), 0
    for start, end in ranges:
        for a, b in resident_chunks(libc, start, end):
            if libc.madvise(a, b - a, MADV_COLLAPSE) == 0:
                done.bytes += b - a
                done.regions.append((a, b))
                continue
            # EINVAL: no MADV_COLLAPSE in this kernel (before 6.1), or a mapping some library marked
            # MADV_NOHUGEPAGE; EAGAIN/ENOMEM: busy pages or no free huge page. Either way the chunk stays as it is
            refused += ctypes.get_errno() == 22
            done.chunks_failed += (b - a) // HUGE
    if refused and not done.bytes:
        return Collapsed(reason="the kernel refuses MADV_COLLAPSE (Linux 6.1 or newer has it)")
    return done


@contextlib.contextmanager
def huge_pages_after() -> Iterator[Collapsed]:
    """``with huge_pages_after() as got: load()``: once ``load`` is done, the process's fully resident anonymous
    memory (what it loaded included) is collapsed; ``got`` says how much, or why nothing was."""
    got = Collapsed(reason=unavailable())
    yield got
    if got.reason is None:
        got.__dict__.update(collapse(anonymous_regions()).__dict__)
