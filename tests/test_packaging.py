"""pyproject's floors tell the truth: the pins satisfy them, and they are no lower than what the pinned
stack itself needs (TransformerLens 4.x's own requirements, every pinned package's Python floor)."""
import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)$", line.strip()):
            pins[m.group(1).lower()] = Version(m.group(2))
    return pins


def _floor(spec: SpecifierSet) -> Version | None:
    floors = [Version(s.version) for s in spec if s.operator in (">=", "==", "~=")]
    return max(floors) if floors else None


def _requirements(deps) -> dict[str, SpecifierSet]:
    return {Requirement(d).name.lower(): Requirement(d).specifier for d in deps}


def floor_problems(project: dict, pins: dict[str, Version], needs: dict[str, list[str]],
                   python_needs: dict[str, SpecifierSet]) -> list[str]:
    """What is wrong with ``project``'s floors: a dependency without a floor or below what a pinned package
    needs, a pin outside the range, or a Python floor below a pinned package's own."""
    problems = []
    deps = _requirements(project["dependencies"])
    for name, spec in deps.items():
        floor = _floor(spec)
        if floor is None:
            problems.append(f"{name} has no lower bound")
        if name in pins and pins[name] not in spec:
            problems.append(f"{name}: the pin {pins[name]} is outside {spec}")
        for needer, reqs in needs.items():
            for req in map(Requirement, reqs):
                if req.name.lower() == name and req.marker is None and floor is not None:
                    need = _floor(req.specifier)
                    if need is not None and floor < need:
                        problems.append(f"{name}>={floor} is below {needer}'s own requirement {req.specifier}")
    python_floor = _floor(SpecifierSet(project["requires-python"]))
    for name, spec in python_needs.items():
        need = _floor(spec)
        if need is not None and python_floor < need:
            problems.append(f"requires-python >={python_floor} is below {name}'s Python floor {spec}")
    return problems


def _installed_needs():
    needs = {"transformer-lens": md.requires("transformer-lens") or []}
    python_needs = {name: SpecifierSet(md.metadata(name)["Requires-Python"] or "") for name in _pins()
                    if md.metadata(name)["Requires-Python"]}
    return needs, python_needs


def test_pyproject_floors_agree_with_the_pins_and_transformer_lens():
    needs, python_needs = _installed_needs()
    assert floor_problems(PROJECT, _pins(), needs, python_needs) == []


def test_the_check_fails_on_the_old_floors():
    needs, python_needs = _installed_needs()
    old = dict(PROJECT, **{"requires-python": ">=3.10", "dependencies": [
        "torch>=2.2", "transformer-lens>=4.3,<5", "transformers>=4.45", "safetensors"]})
    problems = floor_problems(old, _pins(), needs, python_needs)
    assert any(p.startswith("torch>=2.2 is below transformer-lens") for p in problems), problems
    assert any(p.startswith("transformers>=4.45 is below") for p in problems), problems
    assert any(p.startswith("requires-python >=3.10") for p in problems), problems
    assert "safetensors has no lower bound" in problems


def test_every_pinned_runtime_dependency_is_declared():
    deps = _requirements(PROJECT["dependencies"])
    extras = {name for group in PROJECT["optional-dependencies"].values() for name in _requirements(group)}
    for name in _pins():
        assert name in deps or name in extras or name == "numpy", f"{name} is pinned but not declared"


def test_the_wheel_ships_the_bundled_models():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["app_helpers.bundled"] == "data"
    patterns = setuptools["package-data"]["app_helpers.bundled"]
    for model in (ROOT / "data").iterdir():
        for f in model.rglob("*"):
            if f.is_file():
                rel = f.relative_to(ROOT / "data")
                assert any(rel.match(p) for p in patterns), f"{rel} would be left out of the wheel"


def test_the_wheel_ships_every_subpackage():
    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "app_helpers").rglob("__init__.py")}
    assert on_disk <= packages, f"add to pyproject's packages: {sorted(on_disk - packages)}"
