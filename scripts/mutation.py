"""`make mutation`: mutmut on the modules whose bugs change a reported number, each restricted to its own
fast tests so that a run takes minutes, not hours; prints (and writes) the kill rate per module.

    python scripts/mutation.py [GROUP ...] [--out FILE]      (default: every group below)

Each group runs in its own scratch copy under .mutation/<group>/ (mutmut mutates a copy and keeps its
results there, so a rerun only retests what changed). Patterns, not file names, where a module may move
(OpenGAN's losses: gans/opengan/nets.py today, gans/opengan/losses.py after issue 14); `functions` keeps
the count to the functions that compute a number when a file also holds network definitions (or, in
a stage, the functions that choose the images); `run_only` (mutmut's fnmatch patterns) runs only those
mutants, where the group's tests are too slow to run every mutant of the file.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]

GROUPS: dict[str, dict] = {
    "auc": {"mutate": ["src/cxraug/metrics/auc.py"], "tests": ["tests/metrics"]},
    "gan_losses": {
        "mutate": ["src/cxraug/gans/*/losses.py", "src/cxraug/gans/opengan/nets.py"],
        "functions": r"loss|fake_class|accuracy",
        "tests": [
            "tests/gans/test_bagan_step.py",
            "tests/gans/test_opengan_scores.py",
            "tests/gans/test_bagan.py",
        ],
        "pytest_k": "loss or step",
    },
    "opengan_score": {
        "mutate": ["src/cxraug/gans/opengan/proposer.py"],
        "functions": r"OpenganProposer",
        "tests": ["tests/gans/test_opengan_scores.py"],
    },
    "splits": {
        "mutate": ["src/cxraug/data/splits.py"],
        "tests": ["tests/data/test_splits.py", "tests/data/test_splits_assignment.py"],
    },
    "draw": {  # the filter loop; near_copy_filter (loading) and the @property counts are not counted
        "mutate": ["src/cxraug/synthesis/draw.py", "src/cxraug/synthesis/filters.py"],
        "functions": r"draw_class|_drop_copies|x_synthesize__|_checked|FilterRule|filter_rule|summary",
        "tests": [
            "tests/synthesis/test_draw_loop.py",
            "tests/synthesis/test_filters.py",
            "tests/synthesis/test_synthesize.py",
        ],
        "pytest_k": "not stage and not cli and not verbs and not unseen",  # the fast, stage-free tests
    },
    "classify": {  # which images a variant trains and is evaluated on; the stage's `run` is slow to mutate
        "mutate": ["src/cxraug/stages/classify.py"],
        "functions": r"split_md5|evaluation_splits|load_extra_synthetic|_check_synthetic",
        "run_only": [
            f"cxraug.stages.classify.x_{f}__mutmut_*"
            for f in ("split_md5", "evaluation_splits", "load_extra_synthetic", "_check_synthetic")
        ],
        "tests": [
            "tests/stages/test_classify_inputs.py",
            "tests/stages/test_classify_wiring.py",
            "tests/stages/test_classify.py",
        ],
        "pytest_k": "inputs or wiring or training_sets_add_only or too_few_synthetic",
    },
    "gan_metrics": {  # which synthetic images are evaluated, and the CAS classifier's settings
        "mutate": ["src/cxraug/stages/gan_metrics.py"],
        "functions": r"load_evaluated_synthetic|cas_settings|baseline_reference",
        "run_only": [
            f"cxraug.stages.gan_metrics.x_{f}__mutmut_*"
            for f in ("load_evaluated_synthetic", "cas_settings", "baseline_reference")
        ],
        "tests": ["tests/stages/test_gan_metrics_inputs.py", "tests/stages/test_gan_metrics_wiring.py"],
    },
}
COPIED = ("src", "tests", "pyproject.toml", "params.yaml", "dvc.yaml", "data.dvc", ".dvcignore")


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def prepare(group: str, spec: dict) -> Path:
    work = REPO / ".mutation" / group
    work.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src, dst = REPO / name, work / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst)
    text = (REPO / "pyproject.toml").read_text()
    text = re.sub(r"\n\[tool\.mutmut\].*?(?=\n\[|\Z)", "\n", text, flags=re.S)
    tests = [t for t in spec["tests"] if (REPO / t).exists()]  # (an older checkout lacks some)
    args = ["-m", "not slow", "-p", "no:cacheprovider", "-q", "-x"]
    if spec.get("pytest_k"):
        args += ["-k", spec["pytest_k"]]
    text += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {toml_list(spec['mutate'])}\n"
        f"pytest_add_cli_args = {toml_list(args)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
    )
    (work / "pyproject.toml").write_text(text)
    tomllib.loads(text)
    return work


def results(work: Path, functions: str | None) -> dict[str, list[str]]:
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=work, capture_output=True, text=True)
    by_status: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if "__mutmut_" not in name or (functions and not re.search(functions, name)):
            continue
        by_status.setdefault(status, []).append(name)
    return by_status


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("groups", nargs="*", default=list(GROUPS))
    parser.add_argument("--out", type=Path, default=REPO / ".mutation" / "summary.md")
    parser.add_argument("--max-children", default="2")
    parser.add_argument("--summary-only", action="store_true", help="summarise the last runs, run nothing")
    ns = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the mutated copy must be imported
    env |= {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "CXRAUG_NO_PROGRESS": "1"}
    rows = [
        "| group | modules | killed | survived | other | kill rate | wall |",
        "|---|---|---|---|---|---|---|",
    ]
    for group in ns.groups:
        spec = GROUPS[group]
        work = REPO / ".mutation" / group if ns.summary_only else prepare(group, spec)
        started = time.perf_counter()
        if not ns.summary_only:
            only = spec.get("run_only", [])  # mutmut's fnmatch patterns: the mutants worth the time
            subprocess.run([*MUTMUT, "run", "--max-children", ns.max_children, *only], cwd=work, env=env,
                           stdout=subprocess.DEVNULL, check=False)  # fmt: skip
        wall = time.perf_counter() - started
        by_status = results(work, spec.get("functions"))
        killed = len(by_status.get("killed", [])) + len(by_status.get("timeout", []))
        survived = by_status.get("survived", [])
        other = sum(len(v) for k, v in by_status.items() if k not in ("killed", "timeout", "survived"))
        total = killed + len(survived)
        rate = f"{100 * killed / total:.0f}%" if total else "—"
        rows.append(
            f"| {group} | {', '.join(spec['mutate'])} | {killed} | {len(survived)} | {other} | {rate} | "
            f"{wall:.0f} s |"
        )
        print(rows[-1], flush=True)
        for name in survived:
            print(f"    survived: {name}", flush=True)
    load = os.getloadavg()
    rows.append(f"\nload average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
