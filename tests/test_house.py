"""The house: attnkit's own imports (top-level and lazy, inside functions) only look down the layers of
../shared/DESIGN.md, form no circle, nothing imports the package face, and the registry alone knows the
backends."""

from __future__ import annotations

import ast
from pathlib import Path

import attnkit

PACKAGE = Path(attnkit.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """attnkit modules imported anywhere in the file (``from . import x`` counts as module x)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "attnkit"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - node.level + 1]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "attnkit":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out |= subs or {target}
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def test_no_import_circle():
    graph = _graph()
    # the package face imports its API lazily from above; nothing may import it back
    importers_of_face = sorted(m for m, deps in graph.items() if "attnkit" in deps and m != "attnkit.__main__")
    assert importers_of_face == [], importers_of_face
    graph = {m: deps - {"attnkit"} for m, deps in graph.items() if m != "attnkit"}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert len(graph) > 30  # the walk really saw the package


#: DESIGN.md's layers, lowest first; a module belongs to the first prefix that matches its dotted name
LAYERS = (
    (1, "foundation", ("_version", "core")),
    (2, "models", ("models",)),
    (3, "tracing", ("tracing",)),
    (4, "exporters", ("exporters",)),
    (5, "runtimes", ("runtimes",)),
    (6, "services", ("checks", "benchmark", "generation", "serving")),
    (7, "orchestration", ("orchestration",)),
    (8, "face", ("cli", "__main__")),
)  # fmt: skip


def layer_of(module: str) -> int:
    if module == "attnkit":
        return 8
    rest = module.removeprefix("attnkit.")
    for number, _, prefixes in LAYERS:
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return number
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS (and to DESIGN.md's map)")


def imports_running_up(graph: dict[str, set[str]] | None = None) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports one of a higher layer, lazily or not."""
    graph = graph if graph is not None else _graph()
    return sorted((m, d) for m, deps in graph.items() for d in deps if layer_of(d) > layer_of(m))


def test_every_import_looks_down():
    up = imports_running_up()
    assert up == [], "imports running up the layers: " + ", ".join(f"{a} -> {b}" for a, b in up)


def test_the_layer_walk_sees_an_import_running_up():
    """The walk itself can fail: a lazy import of the orchestration layer inside a runtime is caught."""
    graph = _graph()
    graph["attnkit.runtimes.base"] = graph["attnkit.runtimes.base"] | {"attnkit.orchestration.export"}
    assert ("attnkit.runtimes.base", "attnkit.orchestration.export") in imports_running_up(graph)


def test_low_modules_import_nothing_above_them():
    graph = _graph()
    assert not graph["attnkit.core.names"]  # the constants: a leaf
    for low in (
        "attnkit.core.machine",
        "attnkit.core.errors",
        "attnkit.core.compare",
        "attnkit.core.spec",
        "attnkit._version",
    ):
        assert graph[low] <= {"attnkit.core.errors", "attnkit.core.names"}, (low, graph[low])
    assert graph["attnkit.core.targets"] <= {"attnkit.core.machine", "attnkit.core.errors", "attnkit.core.names"}


def test_runner_modules_register_and_never_import_the_registry():
    graph = _graph()
    runners = [
        m
        for m in graph
        if m.startswith("attnkit.runtimes.") and m.split(".")[-1] not in ("base", "registry", "runtimes")
    ]
    assert runners
    for m in runners:
        assert "attnkit.runtimes.registry" not in graph[m], m
    assert not {m for m in graph["attnkit.runtimes.base"] if m.startswith("attnkit.runtimes.")}


def test_the_root_shows_the_layers_and_no_module_is_over_450_lines():
    """The package root holds the public face only; each layer is a folder. No module grows past 450 lines."""
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "__main__.py", "_version.py"], root
    long = {_module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert not long, long


def test_every_module_imports_first_in_a_fresh_process():
    """Each module, imported first in a new interpreter (as a user's ``from attnkit.models.attention import ...``
    is), loads: the Keras import hook of attnkit/__init__ once made attnkit.models.attention fail so."""
    import subprocess
    import sys

    names = sorted(n for n in _modules() if not n.endswith("__main__"))
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    code = f'import importlib; importlib.import_module({name!r})'\n"
        "    import subprocess\n"
        "    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)\n"
        "    if r.returncode: failed.append((name, r.stderr.strip().splitlines()[-1]))\n"
        "print(failed)\n"
    )
    # the modules that import Keras or TensorFlow first are the ones at risk; the rest import in milliseconds
    risky = [n for n in names if n.startswith("attnkit.models")]
    done = subprocess.run([sys.executable, "-c", script, *risky], capture_output=True, text=True, timeout=600)
    assert done.stdout.strip() == "[]", done.stdout[-2000:] + done.stderr[-1000:]
