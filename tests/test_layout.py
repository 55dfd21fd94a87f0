"""The layering of the package, checked: the core imports no Hydra, no file output, no modes and no
training; no module imports itself back through a cycle; no module is oversize."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PKG = REPO / "dgnam"

# What the core may import from dgnam besides itself: errors, safe file loading, paths, and the
# loaders of the artifacts a parameterization is built from (called from its from_... classmethods).
CORE_MAY_IMPORT = ("dgnam.core", "dgnam.errors", "dgnam.safeload", "dgnam.paths", "dgnam.generator.prior",
                   "dgnam.generator.taef2", "dgnam.generator.latent_stats")
# What importing the core (and those loaders) must never pull in.
FORBIDDEN = ("hydra", "omegaconf", "lightning", "dgnam.views", "dgnam.eval", "dgnam.config", "dgnam.cli",
             "dgnam.io", "dgnam.generator.train", "dgnam.generator.module", "dgnam.generator.datamodule",
             "dgnam.generator.data", "dgnam.generator.cache", "dgnam.generator.evaluate",
             "dgnam.generator.callbacks", "dgnam.generator.loggers", "dgnam.generator.checkpoints")
MAX_LINES = 320


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every dgnam module that ``path`` imports, at any level (function-level imports included):
    ``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in known else node.module)
    return {m for m in out if m == "dgnam" or m.startswith("dgnam.")}


def test_the_core_imports_only_the_core_and_its_artifact_loaders():
    known = set(modules())
    bad = []
    for name, path in modules().items():
        if not name.startswith("dgnam.core"):
            continue
        for imp in imports_of(path, known):
            if not any(imp == ok or imp.startswith(ok + ".") for ok in CORE_MAY_IMPORT):
                bad.append(f"{name} imports {imp}")
    assert not bad, "\n".join(bad)


def test_importing_the_core_pulls_in_no_hydra_no_file_output_no_training():
    core = [n for n in modules() if n.startswith("dgnam.core")]
    loaders = [n for n in CORE_MAY_IMPORT if n.startswith("dgnam.generator")]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in core + loaders) +
            f"bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r}))\nprint(' '.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"importing the core loaded: {out.stdout.strip()}"


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in a directed graph (as the list of its nodes, first = last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in graph:
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_between_dgnam_modules():
    mods = modules()
    known = set(mods)
    graph = {name: sorted(imports_of(path, known) - {name, "dgnam"}) for name, path in mods.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_module_is_oversize():
    big = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert not {n: k for n, k in big.items() if k > MAX_LINES}, {n: k for n, k in big.items() if k > MAX_LINES}


def test_the_layering_checks_can_fail(tmp_path):
    """The cycle finder and the import reader see a planted cycle and a planted forbidden import."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from dgnam.views.am import run_am\n")
    b.write_text("def f():\n    import hydra\n    from dgnam.core import loop\n")
    assert imports_of(a, {"dgnam.views.am"}) == {"dgnam.views.am"}
    assert imports_of(b, {"dgnam.core.loop"}) == {"dgnam.core.loop"}  # function-level imports count
    assert find_cycle({"x": ["y"], "y": ["z"], "z": ["x"]}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": ["y", "z"], "y": ["z"], "z": []}) is None
