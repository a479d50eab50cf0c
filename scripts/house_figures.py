"""The house in figures: files, lines, the biggest modules, imports running up the layers, options per command.

    python scripts/house_figures.py          # from the checkout's root, with attnkit importable

Imports running up are read by tests/test_house.py's own walk (one layer map, no second copy).
"""

from __future__ import annotations

import importlib.util
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
