"""The house in figures: files, lines, the biggest modules, imports running up the layers, options per command.

    python scripts/house_figures.py          # from the checkout's root, with attnkit importable

Imports running up are read by tests/test_house.py's own walk (one layer map, no second copy).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    spec = importlib.util.spec_from_file_location("test_house", ROOT / "tests" / "test_house.py")
    house = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(house)
    files = sorted((ROOT / "attnkit").rglob("*.py"))
    lines = {f.relative_to(ROOT).as_posix(): len(f.read_text().splitlines()) for f in files}
    biggest = sorted(lines.items(), key=lambda kv: -kv[1])[:5]
    print(f"files: {len(files)}, lines: {sum(lines.values())}")
    print("biggest: " + ", ".join(f"{p} {n}" for p, n in biggest))
    up = house.imports_running_up()
    print(f"imports running up: {len(up)}" + "".join(f"\n  {a} -> {b}" for a, b in up))
    import click

    from attnkit.cli import cli

    def walk(group, prefix=""):
        for name, cmd in sorted(group.commands.items()):
            if isinstance(cmd, click.Group):
                yield from walk(cmd, f"{prefix}{name} ")
            elif not cmd.hidden:
                yield f"{prefix}{name}", len([p for p in cmd.params if isinstance(p, click.Option)])

    print("options per command: " + ", ".join(f"{n} {k}" for n, k in walk(cli)))
    long = sorted(_long_functions(files), key=lambda f: -f[2])
    print(f"functions over 80 lines: {len(long)}" + "".join(f"\n  {p}:{name} {n}" for p, name, n in long))
    literal = re.compile(r"""["'](fp32|bf16|fp16|int8|q8|q4)["']""")
    counts = {f: len(literal.findall(f.read_text())) for f in files if f.name != "names.py"}
    print(
        f"precision literals outside names.py: {sum(counts.values())} in {sum(1 for n in counts.values() if n)} files"
    )
    registry = [
        f.relative_to(ROOT).as_posix() for f in files if f.name != "registry.py" and "REGISTRY" in f.read_text()
    ]
    print(f"modules reading REGISTRY besides registry.py: {len(registry)} {registry}")
    print(f"modules at the package root: {len(list((ROOT / 'attnkit').glob('*.py')))}")
    return 0


def _long_functions(files, limit: int = 80):
    """(file, function, lines) of every function longer than ``limit`` lines, its docstring not counted (an
    ``Args:`` section is reference, not length to read through)."""
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) else None
                if doc is not None and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
                    n -= doc.end_lineno - doc.lineno + 1
                if n > limit:
                    yield f.relative_to(ROOT).as_posix(), node.name, n


if __name__ == "__main__":
    sys.exit(main())
