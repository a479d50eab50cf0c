"""verify(DIR): every artifact, through the Runner layer, against the eager fp32 Keras model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.compare import (
    CHECK_SHAPES,
    DEFAULT_TOLERANCES,
    Agreement,
    Tolerance,
    beyond_headroom,
    compare_outputs,
    reference_draws,
    worst_draw,
)
from ..core.errors import AttnkitError
from ..runtimes.base import Runner, Source
from ..runtimes.registry import generation_only, get_runner, hardware_warnings, split_backend

DEFAULT_SHAPES = CHECK_SHAPES


@dataclass
class CheckResult:
    """One backend at one shape: per-output agreement, or the error that stopped it."""

    backend: str
    precision: str
    batch: int
    seq: int
    agreements: list[Agreement] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None  # the backend cannot run on this machine: why
    #: input draws the agreements stand for (their worst): 1, or 1 + MORE_DRAWS when the first left it near
    #: its tolerance
    draws: int = 1
    #: what the runtime computed in when not ``precision`` (OpenVINO's f16 hint on Zen 4: bf16); judged by it
    ran_as: str | None = None

    @property
    def shape(self) -> str:
        """``2x16``, and how many input draws the agreements are the worst of when more than one."""
        return f"{self.batch}x{self.seq}" + (f" (worst of {self.draws} draws)" if self.draws > 1 else "")

    @property
    def passed(self) -> bool:
        return self.skipped is None and self.error is None and all(a.passed for a in self.agreements)

    @property
    def failed(self) -> bool:
        return self.skipped is None and not self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "precision": self.precision,
            "batch": self.batch,
            "seq": self.seq,
            "status": "skipped" if self.skipped else "passed" if self.passed else "failed",
            "passed": None if self.skipped else self.passed,
            "skipped": self.skipped,
            "error": self.error,
            "draws": self.draws,
            "outputs": [a.to_dict() for a in self.agreements],
        }


@dataclass
class VerifyReport:
    """All checks of one export directory. ``ok`` is True only if every check passed."""

    root: str
    model: str
    seed: int
    results: list[CheckResult] = field(default_factory=list)
    #: (backend, precision) -> (line, answers affected): this machine lacks what the artifact was made for
    mismatches: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)
    #: token-by-token generation checks of a --generate export (attnkit.generation.verify)
    generation: Any = None
    #: --data: the data's record, fp32 eager's task metrics on its held-out rows, and each runner's check there
    data: dict | None = None
    data_base: Any = None
    data_checks: list = field(default_factory=list)
    #: warnings of the export that made the report (a default precision it left out, and why)
    notes: list[str] = field(default_factory=list)

    def _checks(self) -> list:
        return self.results + (self.generation.checks if self.generation is not None else []) + self.data_checks

    @property
    def failed_checks(self) -> int:
        return sum(c.failed for c in self._checks())

    @property
    def ok(self) -> bool:
        """Every check that could run here passed, and at least one ran."""
        return any(r.passed for r in self._checks()) and not self.failed_checks

    @property
    def warnings(self) -> list[str]:
        return list(dict.fromkeys([line for line, _ in self.mismatches.values()] + self.notes))

    @property
    def ok_where_fit(self) -> bool:
        """Like ``ok``, but a failure of an artifact made for hardware this machine lacks (and whose
        answers depend on it) is not held against the export: it is measured, recorded and warned of."""
        excused = {pair for pair, (_, answers) in self.mismatches.items() if answers}
        return (
            any(r.passed for r in self.results)
            and not any(r.failed and (r.backend, r.precision) not in excused for r in self.results + self.data_checks)
            and not (self.generation is not None and any(c.failed for c in self.generation.checks))
        )

    def summary(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Worst statistics per (backend, precision) over shapes and outputs: the manifest's agreement."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self.results:
            if r.skipped:
                out[(r.backend, r.precision)] = {"passed": None, "skipped": r.skipped}
                continue
            s = out.setdefault((r.backend, r.precision), {"max_abs": 0.0, "rel_l2": 0.0, "cosine": 1.0, "passed": True})
            s["passed"] &= r.passed
            s["draws"] = max(s.get("draws", 1), r.draws)
            for a in r.agreements:
                s["max_abs"] = max(s["max_abs"], a.max_abs)
                s["rel_l2"] = max(s["rel_l2"], a.rel_l2)
                s["cosine"] = min(s["cosine"], a.cosine)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "model": self.model,
            "seed": self.seed,
            "ok": self.ok,
            "warnings": self.warnings,
            "results": [r.to_dict() for r in self.results],
            **({"generation": self.generation.to_dict()} if self.generation is not None else {}),
            **({"data": self._data_dict()} if self.data is not None else {}),
        }

    def _data_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        base = asdict(self.data_base) if self.data_base is not None else None
        return {**self.data, "fp32_eager": base, "checks": [c.to_dict() for c in self.data_checks]}


def default_backends(source: Source) -> list[tuple[str, str]]:
    """(backend, precision) pairs that can run the artifacts of an export directory."""
    from ..runtimes.registry import verifier_for

    return [(name, a.precision) for a in source.manifest.artifacts if (name := verifier_for(a.format))]


def _check_data(report, source, pairs, data, accuracy_target, atol, rtol, progress):
    """The data checks into ``report``; the data back (generation takes its prompts from it)."""
    from ..core.metrics import ACCURACY_TARGET
    from .task import check_data

    target = ACCURACY_TARGET if accuracy_target is None else accuracy_target
    report.data = {**data.record(), "accuracy_target": target}
    report.data_base, report.data_checks = check_data(
        source, pairs, data, lambda p: resolve_tolerance(p, atol, rtol), target, progress
    )
    return data


def judged_tolerance(precision: str, atol, rtol) -> Callable[[str | None], Tolerance]:
    """The tolerance of the precision a runner really computed in, once it says (``ran_as``): an OpenVINO f16 hint
    that the plugin computes in bf16 (AMD Zen 4 and 5) is a bf16 computation, labelled so, and judged by bf16's
    tolerance, not failed against fp16's; one computed in f32 by fp32's. A tolerance given on the command line
    (``--atol``/``--rtol``) stays the asked precision's."""

    def tolerance(ran: str | None) -> Tolerance:
        own = ran if ran in DEFAULT_TOLERANCES and atol is None and rtol is None else precision
        return resolve_tolerance(own, atol, rtol)

    return tolerance


def resolve_tolerance(precision: str, atol: float | dict | None, rtol: float | dict | None) -> Tolerance:
    """Default tolerance of a precision with ``--atol/--rtol`` overrides (a number or {precision: number})."""

    def pick(v):
        return v.get(precision, v.get("*")) if isinstance(v, dict) else v

    return DEFAULT_TOLERANCES[precision].override(pick(atol), pick(rtol))


def _check(runner: Runner, feeds_by_shape, reference, tolerance, draws=None) -> list[CheckResult]:
    """``draws``: per shape, (feeds, reference) of the input draws after the first; a shape whose first draw
    agreed beyond :data:`~attnkit.core.compare.HEADROOM` of the rel-L2 tolerance must agree on them too (mha's int8:
    0.020 to 0.034 across draws at 8x128, against 0.03), and reports the worst. ``tolerance``: a Tolerance, or a
    callable given the precision the loaded runner says it ran in (:func:`judged_tolerance`)."""
    results = []
    reason = runner.unavailable_reason()
    if reason:
        return [CheckResult(runner.name, runner.precision, b, s, skipped=reason) for (b, s) in feeds_by_shape]
    try:
        runner.load()
    except Exception as e:  # a backend that fails to load is a failed check, not a crash
        return [
            CheckResult(runner.name, runner.precision, b, s, error=f"{type(e).__name__}: {e}")
            for (b, s) in feeds_by_shape
        ]
    ran = runner.ran_as if runner.ran_as != runner.precision else None
    if callable(tolerance):
        tolerance = tolerance(runner.ran_as)
    try:
        for (b, s), feeds in feeds_by_shape.items():
            r = CheckResult(runner.name, runner.precision, b, s, ran_as=ran)
            try:
                r.agreements = compare_outputs(reference[(b, s)], runner.infer(feeds), tolerance)
                more = (draws or {}).get((b, s))
                if more and r.passed and any(beyond_headroom(a.rel_l2, tolerance.rel_l2) for a in r.agreements):
                    r.agreements = worst_draw(
                        [r.agreements, *(compare_outputs(ref, runner.infer(f), tolerance) for f, ref in more)]
                    )
                    r.draws = 1 + len(more)
            except Exception as e:
                r.error = f"{type(e).__name__}: {str(e)[:300]}"
            results.append(r)
    finally:
        runner.close()
    return results


def verify(
    root: str | Path,
    *,
    backends: list[str] | None = None,
    atol: float | dict | None = None,
    rtol: float | dict | None = None,
    shapes: tuple[tuple[int, int], ...] = DEFAULT_SHAPES,
    seed: int = 0,
    unsafe: bool = False,
    imports: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
    generation: dict | None = None,
    require_generation: bool = False,
    data=None,
    accuracy_target: float | None = None,
) -> VerifyReport:
    """Check every artifact of an export directory against the eager fp32 Keras model.

    Args:
        root: export directory (has ``manifest.json``).
        backends: backend names to check; default: one per artifact in the manifest.
        atol, rtol: element-wise tolerance overrides, a number or ``{precision: number}``.
        shapes: (batch, sequence) pairs; fresh seeded random inputs are drawn for each. A lowered precision
            that agrees on them beyond :data:`~attnkit.core.compare.HEADROOM` of its rel-L2 tolerance must also
            agree on :data:`~attnkit.core.compare.MORE_DRAWS` more draws (the result is the worst of them).
        seed: base seed of the inputs.
        unsafe: allow unsafe Keras deserialisation of ``model.keras`` (never taken from the manifest).
        imports: extra modules or .py files registering custom layers (beside those the export recorded).
        progress: called with a short message before each backend.
        generation: on a ``--generate`` export, also check greedy generation token by token
            (:func:`attnkit.generation.verify.verify_generation`) with these options (``{}``: defaults).
        require_generation: refuse an export without a generation section (``verify --generate`` asked
            for it explicitly) instead of checking the forward pass alone.
        data: the user's inputs (a path to an ``.npz``, or :class:`attnkit.core.data.UserData`): every runner is
            also checked on its held-out rows (:mod:`attnkit.checks.task`), gated by the task metric where the
            model has class scores.
        accuracy_target: the share of fp32's task metric a runner must keep on ``data`` (default 0.99).

    Returns:
        VerifyReport; ``report.ok`` is True only if every output of every backend passed.

    Raises:
        ArtifactError: no manifest, or an artifact is missing or its sha256 does not match.
    """
    source = Source(root, unsafe=unsafe, imports=imports)
    source.manifest.require_integrity(root)
    if require_generation and source.manifest.generation is None:
        source.generation  # raises: no generation export, and how to make one  # noqa: B018
    spec = source.spec
    if data is not None:  # refused with one line before anything is checked
        data = source.data(data)
    if spec.max_sequence:
        shapes = tuple((b, min(s, spec.max_sequence)) for b, s in shapes)
    pairs = default_backends(source)
    if backends:
        selected = []
        for name, precision in (split_backend(b) for b in backends):
            if generation is not None and generation_only(name):
                continue  # a generation-only backend (onnxruntime-genai): checked with the generation below
            get_runner(name)  # raises on unknown names, listing the valid ones
            found = [(n, p) for n, p in pairs if n == name and precision in (None, p)]
            selected += found or [(name, precision or "fp32")]
        pairs = list(dict.fromkeys(selected))
        for name, precision in pairs:
            needs = get_runner(name).needs
            if needs != "keras":
                source.artifact(
                    needs, precision
                )  # a requested backend without its artifact: refused, naming the export
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        unknown = sorted(set(value) - {"*"} - {p for _, p in pairs}) if isinstance(value, dict) else []
        if unknown:
            raise AttnkitError(
                f"{', '.join(unknown)} is not checked here (checked: {', '.join(sorted({p for _, p in pairs}))}).",
                flag=flag,
                hint="Give a tolerance for a precision the export has, or a plain number for all.",
            )
    report = VerifyReport(str(root), spec.name, seed, mismatches=hardware_warnings(source, pairs))
    if progress:
        progress("keras (eager fp32 reference)")
    with get_runner("keras")(source) as reference_runner:
        feeds, reference, draws = reference_draws(spec, shapes, seed, reference_runner.infer, pairs)
    for name, precision in pairs:
        if progress:
            progress(f"{name} [{precision}]")
        try:
            runner = get_runner(name)(source, precision)
        except AttnkitError as e:
            report.results += [CheckResult(name, precision, b, s, error=str(e)) for (b, s) in shapes]
            continue
        report.results += _check(runner, feeds, reference, judged_tolerance(precision, atol, rtol), draws)
    if data is not None:
        data = _check_data(report, source, pairs, data, accuracy_target, atol, rtol, progress)
    if generation is not None and source.manifest.generation is not None:
        from ..generation.verify import verify_generation
        from ..runtimes.registry import generation_runners

        names = None
        if backends:  # --backends narrows the generation checks too (those that have generation runners)
            names = [b for b in backends if generation_runners(split_backend(b)[0])]
        if names is None or names:
            report.generation = verify_generation(
                root, backends=names, seed=seed, unsafe=unsafe, imports=imports, progress=progress, data=data,
                **generation,
            )  # fmt: skip
    return report
