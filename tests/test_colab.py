"""The Colab route: one repository setting, from which every badge and install cell is derived."""
import json
import re
from pathlib import Path

import pytest

from app_helpers import colab

ROOT = Path(__file__).resolve().parent.parent


def test_every_badge_and_install_cell_is_derived_from_the_setting():
    stale = [p.name for p, text in colab.targets().items() if p.read_text() != text]
    assert not stale, f"out of date (run python -m app_helpers.colab --write): {stale}"


def test_no_repository_url_except_the_derived_one():
    url = colab.repository_url()
    allowed = {url, f"git+{url}", f"https://colab.research.google.com/github/{colab.slug(url)}"}
    texts = {p: p.read_text() for p in [*ROOT.glob("notebooks/*.py"), ROOT / "README.md", ROOT / "notebooks" / "README.md"]}
    for p in ROOT.glob("notebooks/*.ipynb"):  # cell sources only: outputs embed third-party JavaScript
        texts[p] = "\n".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"])
    for path, text in texts.items():
        for found in re.findall(r"(?:git\+)?https://(?:colab\.research\.google\.com/github|github\.com)/[\w.-]+/[\w.-]+",
                                text):
            assert found in allowed, f"{path.name}: {found} is not derived from pyproject's Repository ({url})"


def test_a_changed_setting_changes_every_target(tmp_path):
    (tmp_path / "notebooks").mkdir()
    text = (ROOT / "pyproject.toml").read_text().replace(colab.repository_url(), "https://github.com/acme/app-kit")
    (tmp_path / "pyproject.toml").write_text(text)
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text())
    nb = next(ROOT.glob("notebooks/00_*.py"))
    (tmp_path / "notebooks" / nb.name).write_text(nb.read_text())
    out = colab.targets(tmp_path)
    for path, new in out.items():
        assert "github.com/OWNER/REPO" not in new, path.name
        assert "acme/app-kit" in new, path.name
    assert f"acme/app-kit/blob/main/notebooks/{nb.stem}.ipynb" in out[tmp_path / "notebooks" / nb.name]


def test_the_placeholder_cell_stops_with_instructions_instead_of_a_pip_error():
    cell = colab.install_cell("https://github.com/OWNER/REPO")
    code = "\n".join(line for line in cell.splitlines() if not line.startswith("# %"))
    namespace = {}
    import sys

    sys.modules["google.colab"] = type(sys)("google.colab")
    try:
        import importlib.util

        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "app_helpers" else real(name, *a)
        with pytest.raises(SystemExit, match="pip wheel"):
            exec(compile(code, "cell", "exec"), namespace)
    finally:
        importlib.util.find_spec = real
        del sys.modules["google.colab"]


def test_a_bad_setting_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[project.urls]\nRepository = "gitlab.com/x"\n')
    with pytest.raises(ValueError, match="Repository must look like"):
        colab.repository_url(tmp_path / "pyproject.toml")
