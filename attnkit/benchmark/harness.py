"""Timing: warm-up, then per-call timing with ``perf_counter_ns`` until a stopping rule is met.

The callable must return host memory (the Runner contract: numpy arrays), so each timed call
includes materialising its result; nothing lazy is left to finish after the clock stops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.errors import AttnkitError
from .stats import CV_WARNING, Latency


@dataclass(frozen=True)
class StoppingRule:
    """Warm up for ``warmup_s`` seconds (at least one call), then time calls until *both*
    ``min_iterations`` calls and ``min_seconds`` of timed calls are reached; then, while the calls' coefficient
    of variation is above :data:`~attnkit.benchmark.stats.CV_WARNING` (a busy moment, a slow first stretch),
    keep timing, up to ``extend`` × ``min_seconds`` in all. A measurement still noisy then is reported with
    its warning, never hidden."""

    warmup_s: float = 1.0
    min_iterations: int = 10
    min_seconds: float = 2.0
    extend: float = 3.0

    def __post_init__(self) -> None:
        # `not x > 0` rather than `x <= 0`: NaN compares false both ways and would never stop the clock
        if not (math.isfinite(self.min_seconds) and self.min_seconds > 0):
            raise AttnkitError(f"must be a finite number > 0; got {self.min_seconds}.", flag="--min-seconds")
        if self.min_iterations < 1:
            raise AttnkitError(f"must be >= 1; got {self.min_iterations}.", flag="--min-iterations")
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise AttnkitError(f"must be a finite number >= 0; got {self.warmup_s}.", flag="--warmup")

    def done(self, count: int, elapsed_ns: int) -> bool:
        return count >= self.min_iterations and elapsed_ns >= self.min_seconds * 1e9

    def steady(self, durations: list[int], elapsed_ns: int) -> bool:
        """Past the minimum: stop when the spread is below the warning threshold, or the extension is used up."""
        if elapsed_ns >= self.extend * self.min_seconds * 1e9:
            return True
        return Latency.from_ns(durations).cv <= CV_WARNING


def measure(call: Callable[[], Any], rule: StoppingRule, clock: Callable[[], int] = time.perf_counter_ns) -> Latency:
    """Warm up, then time ``call`` until ``rule`` is met.

    Args:
        call: runs one inference and returns host arrays.
        rule: warm-up and stopping rule.
        clock: nanosecond clock (injectable for tests).

    Returns:
        Latency of the timed calls (warm-up calls excluded).
    """
    start = clock()
    while True:  # warm-up: at least one call (first-call compilation, allocation, caches)
        call()
        if clock() - start >= rule.warmup_s * 1e9:
            break
    durations: list[int] = []
    elapsed = 0
    checked = 0  # the spread is recomputed after each further tenth of min_seconds, not after every call
    while True:
        t0 = clock()
        call()
        t1 = clock()
        durations.append(t1 - t0)
        elapsed += t1 - t0
        if rule.done(len(durations), elapsed) and elapsed - checked >= rule.min_seconds * 1e8:
            checked = elapsed
            if rule.steady(durations, elapsed):
                break
    return Latency.from_ns(durations)
