"""requirements.txt and environment.yml pin the same packages at the same versions."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s#]+)$")


def _pins(lines):
    return {m.group(1).lower(): m.group(2) for line in lines if (m := PIN.match(line.strip()))}


def _env_pip_lines():
    text = (ROOT / "environment.yml").read_text()
    block = text.split("- pip:", 1)[1]
    return [line.strip()[2:].strip() for line in block.splitlines() if line.strip().startswith("- ")]


def test_environment_yml_mirrors_requirements():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = _pins(_env_pip_lines())
    assert req, "requirements.txt pins nothing"
    assert env == req


def test_torch_is_pinned_exactly_and_transformer_lens_is_4x():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert req["torch"] == "2.13.0"
    assert req["transformer-lens"].startswith("4.")
    assert "+cpu" not in (ROOT / "requirements.txt").read_text()
