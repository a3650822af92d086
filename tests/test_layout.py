"""The package's import rule (README "Layout"), checked on the source: every folder is one concern and
data flows one way. A module may import its own package and the layers below it, never a layer above
or beside it, and no two modules may import each other, directly or through others."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import project_env

SRC = Path(__file__).resolve().parents[1] / "src" / "cxraug"

# Lower layers first. A package may import any package in a lower layer, and itself.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("data", "nets", "metrics"),
    ("gans", "classifier"),
    ("synthesis",),
    ("report", "tune"),
    ("stages",),
    ("benchmarks",),
    ("cli",),
)
LAYER = {package: i for i, packages in enumerate(LAYERS) for package in packages}
# Function-level imports only where start-up time needs them: the CLI imports a verb's code when it runs
# (and gans/registry.py a generator's, by name, when a stage uses it).
LAZY_IMPORTS_ALLOWED = ("cli",)
# Subpackages of gans/ are generators: one may not import another (gans/registry.py names them all).
GENERATORS = ("bagan", "opengan", "diffusion")


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported cxraug module, line, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks count as module level
        if isinstance(node, ast.If):
            top_level.update(id(n) for n in node.body)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("cxraug."):
                found.append((name, node.lineno, id(node) in top_level))
    return found


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYER) else None


def violations(src: Path = SRC) -> list[str]:
    modules = {module_name(p, src): p for p in src.rglob("*.py")}
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        own = package_of(module)
        for target, line, top in imports(path):
            if target not in modules:  # `from cxraug.x import name`: the module is the prefix
                continue
            graph[module].add(target)
            where = f"{path.relative_to(src.parent)}:{line}"
            theirs = package_of(target)
            if own is None or theirs is None:
                continue
            if own != theirs and (own not in LAYER or theirs not in LAYER or LAYER[theirs] >= LAYER[own]):
                problems.append(f"{where}: {module} ({own}) imports {target} ({theirs}), not a lower layer")
            mine, other = module.split("."), target.split(".")
            both_generators = len(mine) > 2 and len(other) > 2 and {mine[2], other[2]} <= set(GENERATORS)
            if own == theirs == "gans" and both_generators and mine[2] != other[2]:
                problems.append(f"{where}: generator {mine[2]} imports generator {other[2]}")
            if not top and own not in LAZY_IMPORTS_ALLOWED:
                problems.append(f"{where}: function-level import of {target} (only the CLI imports lazily)")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_follows_the_import_rule():
    assert violations() == []


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYER)


def test_no_module_is_over_400_lines():
    long = {module_name(p): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def _copy_package(tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "cxraug"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.mark.parametrize(
    ("module", "planted", "expected"),
    [
        ("metrics/auc.py", "from cxraug.classifier.train import train_classifier\n", "not a lower layer"),
        ("core/runtime.py", "import cxraug.stages.classify\n", "not a lower layer"),
        ("gans/bagan/nets.py", "from cxraug.gans.opengan.nets import Generator\n", "generator bagan"),
        ("metrics/auc.py", "def f():\n    from cxraug.core import errors\n", "function-level import"),
        ("core/errors.py", "from cxraug.core.runtime import slug\n", "import cycle"),
    ],
)
def test_a_planted_violation_is_found(tmp_path, module, planted, expected):
    copy = _copy_package(tmp_path)
    path = copy / module
    path.write_text(path.read_text() + "\n" + planted)
    assert any(expected in problem for problem in violations(copy))


def test_a_stage_imports_no_generator_and_no_library_it_does_not_use():
    """The registry names every generator but imports one only when a stage uses it (diffusers came with
    the diffusion model into every stage), statsmodels waits for a multiplicity adjustment, and a grid is
    drawn without torchvision (its import cost ~3 s of each stage that logs a grid, docs/speed.md)."""
    heavy = ("diffusers", "statsmodels", "torchvision", *(f"cxraug.gans.{g}" for g in GENERATORS))
    code = (
        "import sys, torch, cxraug.stages.classify, cxraug.stages.synthesize, cxraug.stages.report\n"
        "from cxraug.core.cards import to_uint8_grid\n"
        "from cxraug.gans import registry\n"
        "to_uint8_grid(torch.zeros(4, 8, 8, dtype=torch.uint8))\n"
        f"print(sorted({{m for m in sys.modules if m.startswith({heavy!r})}}))\n"
        "assert callable(registry.get('bagan').load_proposer)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=project_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
