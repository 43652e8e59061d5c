"""The import direction of ARCHITECTURE.md, checked on the source's AST.

storage imports nothing from the repo; captioner and generator may import storage; pipelines may
import all three; dashboards imports storage (and pipelines only for job submission). Model code
(captioner, generator) and stages never import Ray; nothing but runners calls ray.init.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "captioner", "generator", "storage", "dashboards")
ALLOWED = {
    "storage": set(),
    "captioner": {"storage"},
    "generator": {"storage"},
    "pipelines": {"storage", "captioner", "generator"},
    "dashboards": {"storage", "pipelines"},
}
NO_RAY = ("captioner", "generator", "storage")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(pkg: str) -> list[Path]:
    return sorted((REPO / pkg).rglob("*.py"))


@pytest.mark.parametrize("pkg", PACKAGES)
def test_import_direction(pkg):
    bad = {}
    for f in _files(pkg):
        wrong = (_imports(f) & set(PACKAGES)) - ALLOWED[pkg] - {pkg}
        if wrong:
            bad[str(f.relative_to(REPO))] = sorted(wrong)
    assert not bad, f"{pkg} may import only {sorted(ALLOWED[pkg])}; found {bad}"


@pytest.mark.parametrize("pkg", NO_RAY)
def test_model_and_storage_code_never_imports_ray(pkg):
    offenders = [str(f.relative_to(REPO)) for f in _files(pkg) if "ray" in _imports(f)]
    assert not offenders


def test_only_runners_call_ray_init():
    calls = []
    for pkg in PACKAGES:
        for f in _files(pkg):
            if "ray.init(" in f.read_text() and f.name not in ("runners.py",) and "jobs" not in f.name:
                calls.append(str(f.relative_to(REPO)))
    assert not calls, f"ray.init outside the runners: {calls}"


def test_the_checker_sees_real_imports():
    assert "storage" in _imports(REPO / "pipelines" / "cli_util.py") or \
        "storage" in _imports(REPO / "pipelines" / "ingest" / "job.py")
