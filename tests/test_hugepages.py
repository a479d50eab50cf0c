"""Loaded weights onto 2 MiB pages (attnkit.core.hugepages): what is collapsed, what is left alone, and that every
runner's load goes through it. Whether this machine can do it is asked of the kernel (a refused MADV_COLLAPSE,
transparent huge pages set to `never`), never guessed."""

import ctypes
import mmap

import numpy as np
import pytest

from attnkit.core import hugepages as hp
from attnkit.runtimes import base

MIB = 1 << 20


def private_anonymous(size: int) -> mmap.mmap:
    """Anonymous private memory, as allocators map it (Python's default ``mmap(-1, n)`` is shared memory, which
    transparent huge pages treat apart)."""
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def smaps_kb(start: int, end: int, field: str) -> int:
    """``field`` (kB) summed over this process's mappings that overlap ``[start, end)``."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and head[0].replace("-", "").isalnum() and ":" not in head[0]:
                a, b = (int(x, 16) for x in head[0].split("-"))
                inside = a < end and b > start
            elif inside and head[0] == field + ":":
                total += int(head[1])
    return total


def skip_unless_collapsible(got: hp.Collapsed) -> None:
    if got.reason:
        pytest.skip(f"this kernel keeps anonymous memory on 4 KiB pages here: {got.reason}")


def test_written_memory_is_collapsed_and_a_sparse_reservation_is_not(rng):
    with hp.huge_pages_after() as got:
        weights = rng.standard_normal(16 * MIB // 8)  # 16 MiB, every page written
        sparse = private_anonymous(16 * MIB)
        for i in range(0, len(sparse), 2 * MIB):  # one page touched per 2 MiB
            sparse[i] = 1
    skip_unless_collapsible(got)
    w = weights.ctypes.data
    s = ctypes.addressof((ctypes.c_char * len(sparse)).from_buffer(sparse))
    try:
        # all but the unaligned head and tail of the array: at least 14 of its 16 MiB
        assert got.bytes >= 14 * MIB
        assert smaps_kb(w, w + weights.nbytes, "AnonHugePages") >= 14 * 1024
        # the sparse mapping stays as it was: nothing collapsed, no hole filled
        assert smaps_kb(s, s + len(sparse), "AnonHugePages") == 0
        assert smaps_kb(s, s + len(sparse), "Rss") <= 8 * 4 + 8  # its 8 touched pages (and a neighbour's)
        assert not any(a < s + len(sparse) and b > s for a, b in got.regions)
    finally:
        del weights
        sparse.close()


def test_the_switch_turns_it_off(monkeypatch, rng):
    monkeypatch.setenv(hp.ENV, "0")
    with hp.huge_pages_after() as got:
        weights = rng.standard_normal(8 * MIB // 8)
    assert got.bytes == 0 and got.reason == f"{hp.ENV}=0"
    assert got.describe() == f"4 KiB pages ({hp.ENV}=0)"
    del weights


def test_every_runner_load_moves_its_weights(rng):
    class Loads(base.Runner):
        name, needs = "fake-weights", "onnx"

        def _load(self):
            self.weights = rng.standard_normal(12 * MIB // 8).astype(np.float32)

        def _infer(self, feeds):
            raise AssertionError

    runner = Loads(None)
    assert runner.huge_pages is None
    with runner:
        skip_unless_collapsible(runner.huge_pages)
        w = runner.weights.ctypes.data
        assert runner.huge_pages.bytes >= 4 * MIB  # at least the 6 MiB of float32's aligned 2 MiB chunks
        assert smaps_kb(w, w + runner.weights.nbytes, "AnonHugePages") >= 4 * 1024


def test_a_mapping_marked_no_huge_pages_is_skipped_and_the_rest_collapsed():
    """A library may mark its memory MADV_NOHUGEPAGE (the kernel then refuses MADV_COLLAPSE there with EINVAL, as a
    kernel without MADV_COLLAPSE would): that mapping keeps its pages, the next one is still collapsed."""
    probe = private_anonymous(4 * MIB)
    probe.write(b"\x01" * len(probe))
    start = ctypes.addressof((ctypes.c_char * len(probe)).from_buffer(probe))
    skip_unless_collapsible(hp.collapse([(start, start + len(probe))]))  # asked of the kernel, on plain memory
    libc = hp._libc()
    marked, plain = private_anonymous(8 * MIB), private_anonymous(8 * MIB)
    addr = [ctypes.addressof((ctypes.c_char * len(m)).from_buffer(m)) for m in (marked, plain)]
    try:
        assert libc.madvise(addr[0], len(marked), 15) == 0  # MADV_NOHUGEPAGE
        for m in (marked, plain):
            m.write(b"\x01" * len(m))  # every page resident
        got = hp.collapse([(a, a + 8 * MIB) for a in addr])
        assert got.reason is None, got.reason  # the marked mapping's refusal is not taken for the kernel's
        assert got.chunks_failed >= 3 and got.bytes >= 6 * MIB, got
        assert smaps_kb(addr[0], addr[0] + 8 * MIB, "AnonHugePages") == 0
        assert smaps_kb(addr[1], addr[1] + 8 * MIB, "AnonHugePages") >= 6 * 1024
    finally:
        marked.close()
        plain.close()
