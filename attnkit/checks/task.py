"""Agreement on the user's own data (``--data``): every runner on the held-out rows against eager fp32 Keras on
the same rows, with rel L2 and the task metrics of :mod:`attnkit.core.metrics`; the gate is the task metric where
the model has class scores, the precision's rel-L2 tolerance where it has not."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..core.compare import compare_outputs
from ..core.metrics import ACCURACY_TARGET, TaskMetrics, keeps, task_metrics


@dataclass
class DataCheck:
    """One backend x precision on the held-out rows of the user's data."""

    backend: str
    precision: str
    rows: int
    rel_l2: float | None = None
    metrics: TaskMetrics | None = None
    passed: bool = False
    verdict: str = ""
    error: str | None = None
    skipped: str | None = None

    @property
    def failed(self) -> bool:
        return self.skipped is None and not self.passed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = asdict(self.metrics) if self.metrics else None
        return d


def check_data(source, pairs, data, tolerance_of, target: float = ACCURACY_TARGET, progress=None):
    """``(fp32 eager's own metrics, [DataCheck per pair])`` on ``data``'s held-out rows.

    ``tolerance_of(precision)`` is verify's tolerance (with the user's overrides); it gates where there is no task
    metric. fp32 eager's metrics are the base every runner must keep ``target`` of."""
    from ..runtimes.registry import get_runner

    spec = source.spec
    feeds, labels = data.batches("held_out"), data.held_out_labels()
    rows = data.rows - data.calibration
    if progress:
        progress(f"keras (eager fp32) on {rows} held-out rows of {data.path}")
    with get_runner("keras")(source) as eager:
        reference = [eager.infer(f) for f in feeds]
    base = task_metrics(spec, feeds, reference, reference, labels)
    checks = []
    for name, precision in pairs:
        c = DataCheck(name, precision, rows)
        checks.append(c)
        runner = get_runner(name)(source, precision)
        c.skipped = runner.unavailable_reason()
        if c.skipped:
            continue
        if progress:
            progress(f"{name} [{precision}] on the held-out rows")
        try:
            with runner:
                got = [runner.infer(f) for f in feeds]
        except Exception as e:  # a backend that fails on the data is a failed check, not a crash
            c.error = f"{type(e).__name__}: {str(e)[:300]}"
            continue
        tolerance = tolerance_of(precision)
        agreements = [a for ref, out in zip(reference, got) for a in compare_outputs(ref, out, tolerance)]
        c.rel_l2 = max(a.rel_l2 for a in agreements)
        c.metrics = task_metrics(spec, feeds, reference, got, labels)
        if c.metrics is not None and base is not None:
            c.passed, c.verdict = keeps(base, c.metrics, target)
        else:
            c.passed = all(a.passed for a in agreements)
            c.verdict = f"rel L2 {c.rel_l2:.2e} against {tolerance.rel_l2:g} (no class output: no task metric)"
    return base, checks
