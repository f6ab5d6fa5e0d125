"""The Colab route: every badge and install cell is derived from the one repository setting.

``pyproject.toml`` ``[project.urls] Repository`` names the repository. The notebooks' first code cell
and their Colab badges, and the README's badge and install snippet, are generated from it::

    python -m app_helpers.colab --write   # rewrite them after changing the setting
    python -m app_helpers.colab --check   # list what differs (tests/test_colab.py runs this)

While the setting is the placeholder ``OWNER/REPO``, the install cell does not call pip on a URL that
cannot exist: it stops with a message that says how to install the kit by hand (upload the folder, or a
wheel built with ``python -m pip wheel . --no-deps -w dist``).
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = "OWNER/REPO"
_GITHUB = re.compile(r"^https://github\.com/([^/\s]+/[^/\s]+?)/?$")


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The ``Repository`` URL of ``[project.urls]``; it must be a GitHub repository (Colab opens those)."""
    urls = tomllib.loads(pyproject.read_text())["project"].get("urls", {})
    url = urls.get("Repository", "")
    if not _GITHUB.match(url):
        raise ValueError(f"pyproject.toml [project.urls] Repository must look like https://github.com/OWNER/REPO, "
                         f"got {url!r}")
    return url.rstrip("/")


def slug(url: str) -> str:
    """``owner/name`` of a GitHub URL."""
    return _GITHUB.match(url).group(1)


def badge(url: str, notebook: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{slug(url)}/blob/main/notebooks/{notebook}.ipynb)")


def install_cell(url: str) -> str:
    """The notebooks' first code cell, in jupytext percent format (``# %pip`` is a magic in the notebook)."""
    return f'''# %%
# Colab only: install the kit (Colab's own torch, built for its GPU, is kept). Elsewhere this does nothing.
import importlib.util
import sys

REPOSITORY = "{url}"  # from pyproject.toml [project.urls]
if "google.colab" in sys.modules and importlib.util.find_spec("app_helpers") is None:
    if "{PLACEHOLDER}" in REPOSITORY:
        raise SystemExit(
            "This copy of the kit names no public repository yet, so Colab cannot install it from GitHub. "
            "Either upload the kit's folder (Files pane) and run: %pip install ./<folder>  or build a wheel "
            "where you have the kit (python -m pip wheel . --no-deps -w dist), upload it and run: "
            "%pip install app_helpers-0.1.0-py3-none-any.whl  Then run this notebook again.")
    # %pip install -q "app-helpers @ git+{url}"
'''


def readme_snippet(url: str) -> str:
    return f'''```python
import sys
if "google.colab" in sys.modules:
    %pip install -q "app-helpers @ git+{url}"
```'''


_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
_CELL = re.compile(r"# %%\n(?:(?!# %%).*\n)*?(?=# %%)")
_SNIPPET = re.compile(r"```python\nimport sys\nif \"google\.colab\" in sys\.modules:\n.*?\n```", re.S)


def render_notebook(text: str, name: str, url: str) -> str:
    """``text`` (a notebook's .py) with its badge and its Colab install cell regenerated."""
    text = _BADGE.sub(lambda _: badge(url, name), text, count=1)
    return _CELL.sub(lambda m: install_cell(url) + "\n" if "google.colab" in m.group(0) else m.group(0), text)


def render_readme(text: str, url: str) -> str:
    text = _BADGE.sub(lambda _: badge(url, "00_quickstart"), text)
    return _SNIPPET.sub(lambda _: readme_snippet(url), text)


def targets(root: Path = ROOT) -> dict[Path, str]:
    """Every file that carries the URL, with the text it should have."""
    url = repository_url(root / "pyproject.toml")
    out = {p: render_notebook(p.read_text(), p.stem, url) for p in sorted((root / "notebooks").glob("*.py"))}
    readme = root / "README.md"
    out[readme] = render_readme(readme.read_text(), url)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app_helpers.colab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the files that differ")
    parser.add_argument("--check", action="store_true", help="exit 1 if any file differs")
    args = parser.parse_args(argv)
    stale = [p for p, text in targets().items() if p.read_text() != text]
    if args.write:
        for p in stale:
            p.write_text(targets()[p])
        print(f"rewrote {len(stale)} file(s)" + (": " + ", ".join(p.name for p in stale) if stale else ""))
        return 0
    for p in stale:
        print(f"out of date: {p.relative_to(ROOT)} (run python -m app_helpers.colab --write)", file=sys.stderr)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
