"""dvc.yaml agrees with the code: every stage's `cmd` passes the paths core/layout.py names (the CLI's
defaults), and its deps cover every module the stage imports, so no code change leaves a stale result."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.test_layout import SRC, imports, module_name

REPO = SRC.parents[1]
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# the CLI modules a stage's command runs through (they build the paths and call the stage)
CLI = ("cxraug.cli.stages", "cxraug.cli.options")


def closure(roots: tuple[str, ...]) -> set[Path]:
    """The files of every cxraug module the roots import, directly or not (packages' __init__ too)."""
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    seen, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        if module in seen or module not in files:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts))]  # parent packages run first
        # module-level imports: a verb imports its own stage lazily (the root), never the others
        todo += [target for target, _, top in imports(files[module]) if top and target in files]
    return {files[m].relative_to(REPO) for m in seen if not _no_code(files[m])}


def _no_code(path: Path) -> bool:
    """A package marker with at most a docstring cannot change what a stage computes."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def instantiate(stage: str, text: str) -> str:
    """One instance of a foreach/matrix stage: the first generator, replicate 0."""
    per_seed = str(DVC[stage].get("foreach", "")).startswith("${replicates.")
    text = text.replace("${item}", "0" if per_seed else "bagan")
    return text.replace("${item.gan}", "bagan").replace("${item.seed}", "0")


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def stage_module(name: str) -> str:
    family = name.split("@")[0]
    family = "classify" if family.startswith("classify_") else family
    family = "external_test" if family.startswith("external_") else family
    return f"cxraug.stages.{family}"


@pytest.mark.parametrize("stage", sorted(DVC))
def test_deps_cover_every_module_the_stage_imports(stage):
    spec = DVC[stage].get("do", DVC[stage])
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    deps = [instantiate(stage, d) for d in deps]
    missing = sorted(str(p) for p in closure((stage_module(stage), *CLI)) if not covered(p, deps))
    assert missing == []


def test_a_changed_module_is_a_dependency_of_the_stages_that_import_it():
    # BAGAN's losses: train_bagan imports them, train_embedder does not
    losses = Path("src/cxraug/gans/bagan/losses.py")
    assert losses in closure(("cxraug.stages.train_bagan",))
    assert losses not in closure(("cxraug.stages.train_embedder",))


def _command_defaults(verb: str) -> dict[str, str]:
    import typer.main

    from cxraug.cli.app import app

    command = typer.main.get_command(app).commands[verb]
    return {opt: str(p.default) for p in command.params for opt in p.opts if isinstance(p.default, Path)}


@pytest.mark.parametrize("stage", sorted(DVC))
def test_every_cmd_passes_the_layout_paths(stage):
    spec = DVC[stage].get("do", DVC[stage])
    words = instantiate(stage, spec["cmd"]).split()
    assert words[0] == "cxraug"
    verb, flags = words[1], dict(zip(words[2::2], words[3::2], strict=False))
    defaults = _command_defaults(verb)
    per_gan = {"--models", "--out", "--metrics"} if verb == "synthesize" else set()  # default: per GAN
    passed = {flag: value for flag, value in flags.items() if flag in defaults}
    assert passed == {flag: defaults[flag] for flag in passed}, "a cmd path differs from core/layout.py"
    not_passed = set(defaults) - set(flags) - {"--params", "-p", "--out-dir"} - per_gan
    assert not_passed == set(), f"{stage}: pass every path on the command line"
