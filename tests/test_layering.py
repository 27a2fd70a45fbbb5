"""Data flows one way: each part of the package imports only the parts below it, and no modules import each
other in a circle (imports inside functions count too)."""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

import convlab

PACKAGE = Path(convlab.__file__).parent
# Lowest first. A module may import its own part and the parts before it, never a later one.
LAYERS = ["scratch", "errors", "version", "layout", "files", "config", "data", "models", "training", "evaluate", "run",
          "multilabel", "detection", "segmentation", "tasks", "pipeline", "finetune", "insight", "compress", "serve", "cli"]
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
    ("from .pipeline import train", [], {"pipeline"}),
    ("import convlab.cli\nfrom convlab.run import Run\nimport numpy", ["models"], {"cli", "run"}),
])
def test_the_checker_reads_every_import_form(source, package, expected):
    assert imported_parts(source, package) == expected


# --- cycles between modules ---------------------------------------------------------------------------------

def module_names(root: Path, name: str) -> dict[str, Path]:
    """Dotted module name -> file, for the package at `root` called `name` (a package is its __init__)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under `if TYPE_CHECKING:`: they never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def import_edges(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports, at module level or inside functions.

    `from X import name` imports X.name when that is a module, else X itself.
    """
    is_package = path.name == "__init__.py"
    own_package = module.split(".") if is_package else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    edges = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package[: len(own_package) - (node.level - 1)]
                target = ".".join(base + (node.module.split(".") if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                edges.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
        elif isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
    return {edge for edge in edges if edge in known and edge != module}


def find_cycle(root: Path, name: str) -> list[str] | None:
    """One import cycle among the modules of the package at `root` (a list that ends where it began), or None."""
    known = module_names(root, name)
    graph = {module: sorted(import_edges(module, path, known)) for module, path in known.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = 2
        return None

    for module in graph:
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_no_module_imports_itself_through_others():
    cycle = find_cycle(PACKAGE, "convlab")
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "planted"
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(source))
    return root


def test_a_planted_cycle_through_a_function_level_import_is_found(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/loader.py": "from ..models import net\n",
        "models/__init__.py": "",
        "models/net.py": "def build():\n    from ..data.loader import x  # hidden in a function\n",
        "other.py": "from .data import loader\n",
    })
    assert find_cycle(root, "planted") == ["planted.data.loader", "planted.models.net", "planted.data.loader"]


def test_imports_under_type_checking_and_of_names_are_not_cycles(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from .a import thing\n",  # the root imports a; a imports a name of b, not the root
        "a.py": "from .b import helper\nthing = 1\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import thing\nhelper = 2\n",
    })
    assert find_cycle(root, "planted") is None


def test_a_module_that_imports_the_package_root_is_a_cycle(tmp_path):
    root = _package(tmp_path, {"__init__.py": "from .a import f\n", "a.py": "def f():\n    import planted\n"})
    assert find_cycle(root, "planted") == ["planted", "planted.a", "planted"]


def test_no_module_imports_the_package_root():
    """`import convlab` inside the package runs the whole public API's imports (and hides a cycle): read
    version.py for the version, or import the module that owns a name."""
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert "convlab" not in names, f"{path.relative_to(PACKAGE)}:{node.lineno} imports the package root"


def test_every_lazy_import_of_the_package_says_why():
    """A convlab module imported inside a function is there for start-up time, and its line says so."""
    unexplained = []
    for path in [*MODULES, PACKAGE / "__init__.py"]:
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                internal = (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                    "convlab"))) or (isinstance(node, ast.Import) and any(a.name.startswith("convlab")
                                                                          for a in node.names))
                if not internal:
                    continue
                said = "lazy: start-up" in lines[node.lineno - 1] or "lazy: start-up" in lines[node.lineno - 2]
                if not said:
                    unexplained.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not unexplained, "function-level imports without '# lazy: start-up ...': " + ", ".join(unexplained)


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


def test_only_the_cli_imports_the_report():
    """The report is a page the CLI writes, not a library of pictures: the pictures it shares with the web
    app live below both (evaluate/pictures.py, evaluate/mistakes.py)."""
    known = module_names(PACKAGE, "convlab")
    importers = sorted(module for module, path in known.items()
                       if "convlab.insight.report" in import_edges(module, path, known)
                       and not module.startswith("convlab.cli"))
    assert importers == []
