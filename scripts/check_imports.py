#!/usr/bin/env python3
"""Import direction of doorphoned: the core knows no feature, features do not reach sideways.

Every import in the package is read from the source, including those inside functions and under
``if TYPE_CHECKING:`` (a type-only import still couples two folders). The rules:

- ``doorphoned.core`` imports only ``doorphoned.core`` (and the package root, for ``__version__``);
- a feature folder (``access``, ``relay``, ``readers``, ``sip``, ``cloud``, ``control``, ``face``, ...)
  imports the core and itself: features reach each other through the core's interfaces and the bus;
- ``app`` (the composition root), ``ctl`` (the command-line client) and ``__main__`` may import any folder;
- no module lives at the package root besides ``__init__`` and ``__main__``.

The imports that break a rule today are listed in ``scripts/imports-baseline.txt``, one
``module -> imported module`` per line: the restructuring removes them one by one. The check fails
on any import against the rules that is not listed (a new sideways or upward import), and on a
listed one that is gone (so the list only ever shrinks: delete the line).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "doorphoned"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent / PACKAGE
BASELINE = HERE / "imports-baseline.txt"
ANYTHING_GOES = {"app", "ctl"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str) -> bool:
    path = ROOT.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(path: Path, module: str) -> set[str]:
    """The package's modules that ``module`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def folder(module: str) -> str:
    """``doorphoned.access.gate`` -> ``access``; the package root itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def allowed(source: str, target: str) -> bool:
    src, dst = folder(source), folder(target)
    if target == PACKAGE or dst in ("core", src):
        return True
    return src in ANYTHING_GOES or source == f"{PACKAGE}.__main__"


def violations() -> set[str]:
    found: set[str] = set()
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path)
        if path.parent == ROOT and path.stem not in ("__init__", "__main__"):
            found.add(f"{module} -> (a module at the package root: it belongs in core/ or a feature folder)")
        found.update(f"{module} -> {target}" for target in imports_of(path, module) if not allowed(module, target))
    return found


def main() -> int:
    found = violations()
    if "--write-baseline" in sys.argv:
        BASELINE.write_text("".join(f"{line}\n" for line in sorted(found)), encoding="utf-8")
        print(f"{len(found)} import(s) against the rules written to {BASELINE.name}")
        return 0
    listed = {line.strip() for line in BASELINE.read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.startswith("#")} if BASELINE.exists() else set()
    new, gone = sorted(found - listed), sorted(listed - found)
    for line in new:
        print(f"import against the direction core <- features <- app: {line}")
    for line in gone:
        print(f"{BASELINE.name} lists an import that is gone (delete the line): {line}")
    print(f"imports: {len(found)} against the rules, all listed for removal" if not new and not gone
          else f"imports: {len(new)} new against the rules, {len(gone)} listed but gone (docs/ARCHITECTURE.md)")
    return 1 if new or gone else 0


if __name__ == "__main__":
    sys.exit(main())
