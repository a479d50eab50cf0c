"""Latency statistics: a dataclass computed from raw per-call nanoseconds; formatting elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: coefficient of variation above which a measurement is flagged as noisy
CV_WARNING = 0.10


def summarise(values) -> dict[str, float]:
    """The one percentile summary of the house (bench, generation, load test): count, mean, stdev (ddof 1),
    p50/p90/p95/p99, min, max of ``values`` in their own unit; NaN for an empty sample."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not v.size:
        nan = float("nan")
        return {"count": 0, **dict.fromkeys(("mean", "stdev", "p50", "p90", "p95", "p99", "min", "max"), nan)}
    p50, p90, p95, p99 = np.percentile(v, [50, 90, 95, 99])
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "stdev": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "min": float(v.min()),
        "max": float(v.max()),
    }


@dataclass(frozen=True)
class Latency:
    """Per-call latencies of one measurement, in milliseconds, with their summary statistics."""

    count: int
    mean: float
    stdev: float
    p50: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float
    total_s: float
    values: tuple[float, ...]

    @classmethod
    def from_ns(cls, values_ns: list[int] | tuple[int, ...]) -> Latency:
        """Summarise raw ``perf_counter_ns`` durations (at least one)."""
        if not values_ns:
            raise ValueError("a Latency needs at least one timed call")
        ms = np.asarray(values_ns, dtype=np.float64) / 1e6
        return cls(**summarise(ms), total_s=float(ms.sum() / 1e3), values=tuple(float(v) for v in ms))

    @property
    def cv(self) -> float:
        """Coefficient of variation, stdev / mean."""
        return self.stdev / self.mean if self.mean else 0.0

    @property
    def noisy(self) -> bool:
        return self.cv > CV_WARNING

    @classmethod
    def from_dict(cls, d: dict) -> Latency:
        """The inverse of :meth:`to_dict` (raw values where it kept them)."""
        keys = ("count", "mean", "stdev", "p50", "p90", "p95", "p99", "min", "max", "total_s")
        return cls(**{k: d[k] for k in keys}, values=tuple(d.get("values", ())))

    def to_dict(self, raw: bool = True) -> dict:
        d = {
            k: getattr(self, k) for k in ("count", "mean", "stdev", "p50", "p90", "p95", "p99", "min", "max", "total_s")
        }
        d["cv"] = self.cv
        d["unit"] = "ms"
        if raw:
            d["values"] = list(self.values)
        return d
