"""``attnkit compare RESULTS...``: bench results from several machines (or several runs on one) side by side.

Each ``results.json`` records its machine (``environment``: CPU, flags, cores, threads, library versions) and its
measurements. This module reads them back (:meth:`~attnkit.benchmark.results.BenchReport.from_dict`) and asks the same
:meth:`~attnkit.benchmark.results.BenchReport.pick` that wrote them, so a file whose recorded pick is not what its
own measurements give (edited, or written by another attnkit) is named. Figures from machines of another CPU class,
thread setting or library versions are put side by side, each under its own machine, and never averaged: the
ratios of each stay within its own run (the rule of every attnkit figure).

Written here because no library reads attnkit's results; the table and plot use rich and matplotlib.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import AttnkitError
from .results import BenchReport

#: library versions whose difference makes two machines' figures different experiments
COMPARED_VERSIONS = ("tensorflow", "onnxruntime", "openvino", "keras", "tf2onnx")


@dataclass
class Input:
    """One ``results.json``, read back."""

    path: str
    model: str
    machine: dict[str, Any]
    recorded_pick: dict
    pick: dict  # the pick its own measurements give
    rows: int

    @property
    def pick_reproduced(self) -> bool:
        return _same_pick(self.recorded_pick, self.pick)


@dataclass
class Comparison:
    inputs: list[Input] = field(default_factory=list)
    #: per model, what differs between the machines its figures come from ("CPU class", "threads", "onnxruntime")
    differences: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "kind": "comparison",
            "inputs": [{**i.__dict__, "pick_reproduced": i.pick_reproduced} for i in self.inputs],
            "differences": self.differences,
        }


def machine_of(environment: dict) -> dict[str, Any]:
    """What a figure depends on: the CPU, its class (from the recorded flags), cores, threads, library versions."""
    from ..core.targets import host_class

    flags = frozenset(k for k, v in (environment.get("cpu_flags") or {}).items() if v)
    versions = environment.get("versions") or {}
    return {
        "cpu": environment.get("cpu", "?"),
        "cpu_class": host_class(flags) if flags else "unknown",
        "cores": environment.get("cores"),
        "threads": json.dumps(environment.get("threads"), sort_keys=True),
        "versions": {k: versions[k] for k in COMPARED_VERSIONS if k in versions},
        "attnkit": environment.get("attnkit"),
    }


def read(path: str | Path) -> Input:
    """One bench ``results.json`` (a file, or a directory holding one), checked and read back.

    Raises:
        AttnkitError: missing, unreadable, or not a bench result (one line naming ``RESULTS``).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise AttnkitError(f"`{path}` is not a results.json (nor a directory holding one).", flag="RESULTS",
                           hint="Give the files `attnkit bench --out DIR` wrote (DIR/results.json).")  # fmt: skip
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AttnkitError(
            f"`{p}` could not be read as JSON ({str(e).splitlines()[0][:120]}).", flag="RESULTS"
        ) from None
    if not isinstance(d, dict) or not {"model", "environment", "measurements", "pick"} <= set(d):
        what = "a generation bench's results" if isinstance(d, dict) and d.get("kind") == "generation" else "not one"
        raise AttnkitError(f"`{p}` is {what}: compare takes `attnkit bench` results (model, environment, measurements,"
                           " pick).", flag="RESULTS")  # fmt: skip
    try:
        report = BenchReport.from_dict(d)
    except (KeyError, TypeError) as e:
        raise AttnkitError(
            f"`{p}`: a measurement lacks {e}; was it written by `attnkit bench`?", flag="RESULTS"
        ) from None
    machine = machine_of(d["environment"])
    return Input(str(p), d["model"], machine, d["pick"], report.pick(), len(report.measurements))


def compare(paths: list[str | Path]) -> Comparison:
    """Every input read back, and per model what differs between the machines behind its figures."""
    if not paths:
        raise AttnkitError("give at least one results.json.", flag="RESULTS")
    out = Comparison([read(p) for p in paths])
    by_model: dict[str, list[Input]] = {}
    for i in out.inputs:
        by_model.setdefault(i.model, []).append(i)
    for model, inputs in by_model.items():
        diffs = []
        for key, label in (("cpu_class", "CPU class"), ("cpu", "CPU"), ("cores", "cores"), ("threads", "threads")):
            if len({json.dumps(i.machine[key]) for i in inputs}) > 1:
                diffs.append(label)
        for lib in COMPARED_VERSIONS:
            if len({i.machine["versions"].get(lib) for i in inputs}) > 1:
                diffs.append(f"{lib} version")
        out.differences[model] = diffs
    return out


def _same_pick(a: dict, b: dict) -> bool:
    keys = ("backend", "precision", "ran_as", "batch", "seq")
    return all(
        (a.get(goal) is None) == (b.get(goal) is None)
        and (a.get(goal) is None or all(a[goal].get(k) == b[goal].get(k) for k in keys))
        for goal in ("latency", "throughput")
    )


def plot(comparison: Comparison, path: Path) -> None:
    """Each input's throughput pick (speedup over its own eager baseline), one bar per input, labelled by machine."""
    from ..core.plotting import pyplot, save_png

    plt = pyplot()
    labels, values = [], []
    for i in comparison.inputs:
        t = i.pick.get("throughput")
        labels.append(f"{i.model}\n{i.machine['cpu_class']}\n{Path(i.path).parent.name}")
        values.append((t or {}).get("speedup") or 0.0)
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(values)), 4))
    ax.bar(range(len(values)), values)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel("pick's speedup over eager Keras (same run)")
    ax.set_title("attnkit compare: each machine's pick, against its own baseline")
    fig.tight_layout()
    save_png(fig, path)
