"""`pip install .` must give a working package: every third-party module the code imports is declared in
pyproject.toml (dependencies or an extra) and pinned for the worker image, and the worker image stays lean."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"harvest", "harvest_ui", "harvest_airflow", "dags"}
# provided by Airflow itself wherever the gallery or the DAG glue runs (the `airflow` extra)
FROM_AIRFLOW = {"airflow", "fastapi", "starlette", "pydantic", "jwt"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(line: str) -> str:
    return _normal(re.split(r"[=<>\[ ;#]", line.strip(), maxsplit=1)[0])


def _imported_modules(package: Path) -> dict[str, str]:
    """Top-level module -> the first file importing it, over every module of the package."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _third_party(modules: dict[str, str]) -> dict[str, str]:
    return {
        module: where
        for module, where in modules.items()
        if module not in sys.stdlib_module_names and module not in FIRST_PARTY and module != "__future__"
    }


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_requirement_name(item) for item in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {_requirement_name(item) for item in extra}
    return names


def _requirements(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("-r "):
            names |= _requirements(path.parent / line[3:].strip())
        elif line and not line.startswith(("#", "-")):
            names.add(_requirement_name(line))
    return names


def test_every_import_of_the_package_is_a_declared_dependency() -> None:
    distributions = packages_distributions()
    declared = _declared()
    missing = []
    for package in ("harvest", "harvest_ui", "harvest_airflow"):
        for module, where in _third_party(_imported_modules(ROOT / "plugins" / package)).items():
            if module in FROM_AIRFLOW:
                continue
            owners = {_normal(name) for name in distributions.get(module, [module])}
            if not owners & declared:
                missing.append(f"{module} (imported by {where}; distributions {sorted(owners)})")
    assert not missing, "imported but not in pyproject.toml: " + ", ".join(missing)


def test_pyproject_dependencies_are_pinned_for_the_worker_image() -> None:
    pinned = {
        _requirement_name(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line[:1].isalnum()
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_requirement_name(item) for item in project["dependencies"]}
    assert runtime <= pinned, f"not pinned in constraints.txt: {sorted(runtime - pinned)}"
    assert runtime <= _requirements(ROOT / "requirements.txt")


def test_the_worker_image_carries_no_demo_or_test_packages() -> None:
    worker = _requirements(ROOT / "requirements.txt")
    pinned = {
        _requirement_name(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line[:1].isalnum()
    }
    for name in ("scikit-image", "scikit-learn", "matplotlib", "pytest", "moto", "ruff", "import-linter"):
        assert name not in worker and name not in pinned, name
