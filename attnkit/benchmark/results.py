"""What a benchmark run returns: one Measurement per backend x precision x shape, and the
BenchReport holding them with the run's configuration, environment and calibration (data only:
rendering is :mod:`attnkit.benchmark.report`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .stats import Latency

BASELINE = "keras"


@dataclass
class Measurement:
    """One backend at one shape: latency and derived throughput, or why it did not run."""

    backend: str
    precision: str
    batch: int
    seq: int
    latency: Latency | None = None
    flops: int | None = None
    speedup: float | None = None  # baseline mean latency / this mean latency, same shape, same run
    pct_of_peak: float | None = None
    skipped: str | None = None
    error: str | None = None
    #: the precision the backend reported computing in, when it differs from ``precision`` (OpenVINO)
    ran_as: str | None = None
    #: the arithmetic the matmuls ran in, when not ``ran_as`` (OpenVINO's weight-only int8: fp32); its peak applies
    computes_in: str | None = None
    #: agreement with eager fp32 Keras on this row's own inputs, on this machine (MLPerf's rule: a
    #: speed counts only for answers that agree): passed, rel_l2, cosine, max_abs, tolerance, failures
    agreement: dict[str, Any] | None = None

    @property
    def agrees(self) -> bool:
        return bool(self.agreement and self.agreement.get("passed"))

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.skipped:
            return "skipped"
        if self.agreement is None:
            return "unchecked"
        return "ok" if self.agrees else "disagrees"

    @property
    def seq_per_s(self) -> float | None:
        return self.batch / (self.latency.mean / 1e3) if self.latency else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.seq_per_s * self.seq if self.latency else None

    @property
    def gflops(self) -> float | None:
        """Achieved GFLOP/s: FLOPs per call over the median latency."""
        return self.flops / (self.latency.p50 / 1e3) / 1e9 if self.latency and self.flops else None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_dict` (``ran_as``/``computes_in`` equal to the precision are not differences)."""
        ran_as, computes_in = d.get("ran_as"), d.get("computes_in")
        return cls(
            d["backend"], d["precision"], d["batch"], d["seq"],
            Latency.from_dict(d["latency"]) if d.get("latency") else None,
            d.get("flops_per_call"), d.get("speedup"), d.get("pct_of_peak"), d.get("skipped"), d.get("error"),
            ran_as if ran_as != d["precision"] else None,
            computes_in if computes_in != (ran_as or d["precision"]) else None,
            d.get("agreement"),
        )  # fmt: skip

    def to_dict(self, raw: bool = True) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "ran_as": self.ran_as or self.precision,
            "computes_in": self.computes_in or self.ran_as or self.precision,
            "batch": self.batch,
            "seq": self.seq,
            "status": self.status,
            "agrees": self.agrees if self.latency else None,
            "agreement": self.agreement,
            "skipped": self.skipped,
            "error": self.error,
            "latency": self.latency.to_dict(raw) if self.latency else None,
            "seq_per_s": self.seq_per_s,
            "tokens_per_s": self.tokens_per_s,
            "speedup": self.speedup,
            "flops_per_call": self.flops,
            "gflops": self.gflops,
            "pct_of_peak": self.pct_of_peak,
        }


@dataclass
class BenchReport:
    model: str
    config: dict[str, Any]
    environment: dict[str, Any]
    calibration: dict[str, dict]
    measurements: list[Measurement] = field(default_factory=list)
    hardware: list[str] = field(default_factory=list)  # artifacts made for hardware this machine lacks
    notes: list[str] = field(default_factory=list)  # backend x precision pairs that cannot exist, and why

    def _candidates(self) -> list[Measurement]:
        """Rows that ran and agree, less those that ran in another precision than asked when their backend's row
        in that precision at the same shape is in the run (the same computation, under its own name)."""
        agreeing = [m for m in self.measurements if m.latency and m.agrees]
        measured = {(m.backend, m.precision, m.batch, m.seq) for m in agreeing}
        return [m for m in agreeing if not (m.ran_as and (m.backend, m.ran_as, m.batch, m.seq) in measured)]

    def best(self) -> Measurement | None:
        """The headline: the highest speedup over eager among rows whose answers agree (never a row that
        failed its tolerance, never the baseline itself); without a baseline (``--no-baseline``), the
        highest throughput among agreeing rows."""
        rows = [m for m in self._candidates() if (m.backend, m.precision) != (BASELINE, "fp32")]
        if any(m.speedup for m in rows):
            return max((m for m in rows if m.speedup), key=lambda m: m.speedup)
        return max(rows, key=lambda m: m.seq_per_s or 0, default=None)

    def pick(self) -> dict[str, dict | None]:
        """The deployment pick, the answer a user came for: among rows that ran and agree with eager fp32 on
        this machine, the lowest latency at the smallest batch measured and the highest throughput at the
        largest, with the precision each really ran in, its speedup over eager and its agreement.

        A row that ran in another precision than it asked for (OpenVINO's fp16 or bf16 hint on a CPU without
        them: f32) is the same computation as its backend's row in that precision at the same shape, when the
        run has one: that row is the candidate, under its own name (:meth:`_candidates`). Otherwise a timing
        draw could make the pick "openvino fp16, ran fp32", an artifact that Triton cannot serve as measured
        (its OpenVINO backend has no f16 hint) and that computes in f16 where the serving CPU has it.
        """
        rows = self._candidates()
        if not rows:
            return {"latency": None, "throughput": None}
        small, large = min(m.batch for m in rows), max(m.batch for m in rows)
        fastest = min((m for m in rows if m.batch == small), key=lambda m: m.latency.p50)
        widest = max((m for m in rows if m.batch == large), key=lambda m: m.seq_per_s)
        return {"latency": _picked(fastest), "throughput": _picked(widest)}

    def disagreeing(self) -> list[Measurement]:
        return [m for m in self.measurements if m.latency and m.agreement is not None and not m.agrees]

    def warnings(self) -> list[str]:
        out = list(self.hardware)
        for m in self.disagreeing():
            why = "; ".join(m.agreement.get("failures", [])) or "failed"
            out.append(
                f"{m.backend}[{m.precision}] {m.batch}x{m.seq}: answers disagree with eager fp32 ({why}); "
                "its speed does not count"
            )
        for m in self.measurements:
            if m.latency and m.latency.noisy:
                out.append(
                    f"{m.backend}[{m.precision}] {m.batch}x{m.seq}: coefficient of variation "
                    f"{m.latency.cv:.0%} > 10%; the machine was busy or the run too short (raise --min-seconds)"
                )
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchReport:
        """A report read back from :meth:`to_dict` (``attnkit compare``): its measurements, and with them its pick."""
        report = cls(d["model"], d.get("config", {}), d.get("environment", {}), d.get("calibration", {}))
        report.measurements = [Measurement.from_dict(m) for m in d["measurements"]]
        return report

    def to_dict(self, raw: bool = True) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": self.config,
            "environment": self.environment,
            "calibration": self.calibration,
            "warnings": self.warnings(),
            "notes": self.notes,
            "best": _headline(self.best()),
            "pick": self.pick(),
            "measurements": [m.to_dict(raw) for m in self.measurements],
        }


def _picked(m: Measurement) -> dict:
    from ..core.compare import DEFAULT_TOLERANCES

    return {
        "backend": m.backend,
        "precision": m.precision,
        "ran_as": m.ran_as or m.precision,
        "batch": m.batch,
        "seq": m.seq,
        "p50_ms": m.latency.p50,
        "seq_per_s": m.seq_per_s,
        "speedup": m.speedup,
        "rel_l2": m.agreement.get("rel_l2"),
        "rel_l2_tolerance": DEFAULT_TOLERANCES[m.agreement.get("tolerance", m.precision)].rel_l2,
        "draws": m.agreement.get("draws", 1),
    }


def pick_lines(pick: dict) -> list[str]:
    """The pick in words, one line per goal; a pick whose rel L2 is beyond :data:`~attnkit.core.compare.HEADROOM` of
    its tolerance says so, and over how many input draws it held (the bench adds draws to such rows)."""
    from ..core.compare import beyond_headroom

    out = []
    for goal, what in (("latency", "p50_ms"), ("throughput", "seq_per_s")):
        p = pick.get(goal)
        if not p:
            continue
        figure = f"{p['p50_ms']:.2f} ms p50" if what == "p50_ms" else f"{p['seq_per_s']:.1f} seq/s"
        ran = f", ran {p['ran_as']}" if p["ran_as"] != p["precision"] else ""
        speed = f", {p['speedup']:.2f}x eager" if p.get("speedup") else ""
        allowed, draws = p.get("rel_l2_tolerance"), p.get("draws", 1)
        near = ""
        if allowed and p["rel_l2"] is not None and beyond_headroom(p["rel_l2"], allowed):
            near = f"; near its tolerance ({p['rel_l2']:.1e} of {allowed:.0e} allowed" + (
                f", the worst of {draws} input draws)" if draws > 1
                else "): check it on more inputs before deploying it (attnkit verify DIR --seed N)")  # fmt: skip
        out.append(
            f"Deploy for {goal} (batch {p['batch']} x {p['seq']}): {p['backend']} {p['precision']}{ran}: "
            f"{figure}{speed}, rel L2 {p['rel_l2']:.1e} vs eager fp32{near}"
        )
    return out


def _headline(m: Measurement | None) -> dict | None:
    if m is None:
        return None
    return {
        "backend": m.backend,
        "precision": m.precision,
        "batch": m.batch,
        "seq": m.seq,
        "speedup": m.speedup,
        "seq_per_s": m.seq_per_s,
    }


def near_tolerance(agreement: dict) -> bool:
    """Agreed, but near the precision's tolerance (:func:`attnkit.core.compare.beyond_headroom`): one draw of inputs
    does not settle it (mha's int8: 0.020 to 0.034 across draws, against 0.03)."""
    from ..core.compare import DEFAULT_TOLERANCES, beyond_headroom

    allowed = DEFAULT_TOLERANCES[agreement["tolerance"]].rel_l2
    return bool(agreement["passed"]) and beyond_headroom(agreement["rel_l2"], allowed)


def worst_of(agreements: list[dict]) -> dict[str, Any]:
    """One agreement from several draws of inputs: passed only if every draw passed, the worst figures."""
    first = agreements[0]
    return {
        "passed": all(a["passed"] for a in agreements),
        "rel_l2": max(a["rel_l2"] for a in agreements),
        "cosine": min(a["cosine"] for a in agreements),
        "max_abs": max(a["max_abs"] for a in agreements),
        "tolerance": first["tolerance"],
        "failures": list(dict.fromkeys(f for a in agreements for f in a["failures"])),
        "draws": len(agreements),
    }


def _agreement(reference: dict, got: dict, precision: str) -> dict[str, Any]:
    """Worst agreement over the outputs of one call, against the default tolerance of ``precision``."""
    from ..core.compare import DEFAULT_TOLERANCES, compare_outputs

    found = compare_outputs(reference, got, DEFAULT_TOLERANCES[precision])
    return {
        "passed": all(a.passed for a in found),
        "rel_l2": max(a.rel_l2 for a in found),
        "cosine": min(a.cosine for a in found),
        "max_abs": max(a.max_abs for a in found),
        "tolerance": precision,
        "failures": [f"{a.output}: {f}" for a in found for f in a.failures],
    }
