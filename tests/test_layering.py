"""Data flows one way: each part of the package imports only the parts below it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import convlab

PACKAGE = Path(convlab.__file__).parent
# Lowest first. A module may import its own part and the parts before it, never a later one.
LAYERS = ["scratch", "errors", "config", "data", "models", "training", "evaluate", "run", "session", "finetune",
          "insight", "compress", "cli"]
TOP_LEVEL = {"__init__", "__main__"}  # the public API and the entry point may import anything


def part_of(module_path: Path) -> str:
    rel = module_path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported_parts(source: str, package: list[str]) -> set[str]:
    """The convlab parts that `source` imports, for a module inside convlab/<package...>/."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb level-1 packages from the module's own
                target = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "convlab":
                target = node.module.split(".")[1:]
            else:
                continue
            # "from convlab import data" / "from .. import data": the names are the parts
            found.update([target[0]] if target else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("convlab."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if part_of(p) not in TOP_LEVEL)


def test_every_part_has_a_layer():
    assert {part_of(p) for p in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("module_path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(module_path):
    own = LAYERS.index(part_of(module_path))
    package = list(module_path.relative_to(PACKAGE).parent.parts)
    upward = {part for part in imported_parts(module_path.read_text(), package)
              if part in LAYERS and LAYERS.index(part) > own}
    assert not upward, f"{module_path.relative_to(PACKAGE)} imports {sorted(upward)}, a later part"


@pytest.mark.parametrize("source, package, expected", [
    ("from ..training.loop import fit\nfrom . import digits", ["data"], {"training", "data"}),
    ("from .. import data", ["data"], {"data"}),
    ("from .session import train", [], {"session"}),
    ("import convlab.cli\nfrom convlab.run import Run\nimport numpy", ["models"], {"cli", "run"}),
])
def test_the_checker_reads_every_import_form(source, package, expected):
    assert imported_parts(source, package) == expected


def test_scratch_imports_only_numpy_and_the_standard_library():
    """convlab.scratch is the NumPy engine: numpy, the standard library and its own modules, nothing else."""
    import sys

    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    for module_path in sorted((PACKAGE / "scratch").rglob("*.py")):
        for node in ast.walk(ast.parse(module_path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:  # from . import x / from .x import y: its own package
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{module_path.name} imports {name}"
