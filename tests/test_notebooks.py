"""The notebooks: paired sources in sync, committed outputs present and small, and every notebook executes.

Each notebook lives twice in ``notebooks/``: ``NN_name.py`` (jupytext percent format, the source that is
edited and reviewed) and ``NN_name.ipynb`` (the same cells with the outputs of a full-size run, so that
figures show on GitHub). This module checks

- that every ``.py`` has its ``.ipynb`` and the other way round, with identical cells (type and source);
- the shape every notebook shares: Colab badge, a Colab-only install cell that never installs torch, one
  cell tagged ``parameters`` defining ``MODEL``, ``N`` and ``SEED``;
- that the committed ``.ipynb`` files were executed (every code cell ran, no error, figures present),
  on the bundled model once it is shipped, and stay under 5 MB;
- that every notebook executes headless, one fresh kernel each, with SMALL parameters: a cell setting
  ``SMALL`` (below) is inserted right after the ``parameters`` cell, like papermill's injected parameters.
  The notebooks themselves contain no test code.

Headless execution (tests and re-execution alike) starts each kernel with an IPython startup file that
(1) answers circuitsvis's connectivity probe (it requests http://google.com before every render) with
"offline" at once: no network is touched, and attention figures inline their JavaScript, so outputs are
self-contained and the same on every machine; (2) turns off tqdm progress bars, which would otherwise be
stored as dead widgets.
Kernels run with one torch thread (steady timings on a shared machine) and ``HF_HUB_OFFLINE=1``.

Run this file as a script to re-execute the committed notebooks in place with their own, full-size
parameters (the ``.ipynb`` is rebuilt from the ``.py`` first, so the pair stays in sync)::

    HF_HUB_OFFLINE=1 .venv/bin/python tests/test_notebooks.py          # all notebooks
    HF_HUB_OFFLINE=1 .venv/bin/python tests/test_notebooks.py 03 05    # the ones whose names start so
"""
from __future__ import annotations

import ast
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
MAX_BYTES = 5 * 2**20
CELL_TIMEOUT = 900  # seconds per cell in full-size runs (slow on a CPU)
SMALL_CELL_TIMEOUT = 180  # seconds per cell in the small test runs: a stuck cell fails the test quickly

# Parameters for the test runs: small enough that all notebooks together take a few minutes on 2 CPU cores.
SMALL = {"N": 20, "EVAL_N": 20, "SEED": 0}

STARTUP = '''\
# Written by tests/test_notebooks.py for headless notebook execution; not part of any notebook.
try:  # circuitsvis requests http://google.com before each render: answer "offline" without touching the network
    import circuitsvis.utils.render as _cv_render
    _cv_render.internet_on = lambda: False
except ImportError:
    pass
try:  # progress bars would be stored in the executed notebook as dead widgets
    import tqdm.auto as _tqdm_auto

    class _QuietTqdm(_tqdm_auto.tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    _tqdm_auto.tqdm = _QuietTqdm
except ImportError:
    pass
'''


def notebook_task(name: str) -> str | None:
    """The task a notebook loads its model for (``notebook_model(MODEL, task=...)``), None if none."""
    text = (NOTEBOOKS / f"{name}.py").read_text()
    m = re.search(r"notebook_model\(MODEL, task=(\"(\w+)\"|TASK)\)", text)
    if not m:
        return None
    return m.group(2) or re.search(r'^TASK = "(\w+)"', text, re.M).group(1)


def bundled_spec(name: str | None = None) -> str:
    """The model a notebook's test run uses: the bundled model for its task once shipped (app-planted for
    IOI, app-toy otherwise), else the random-weight stand-in."""
    from app_helpers.models import bundled_or_random

    return bundled_or_random(notebook_task(name) if name else None).spec


def source(name: str):
    """The notebook built from its ``.py`` source (no outputs)."""
    import jupytext

    return jupytext.read(NOTEBOOKS / f"{name}.py")


def committed(name: str):
    import nbformat

    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def assigned_names(code: str) -> set[str]:
    return {t.id for node in ast.parse(code).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def inject(nb, overrides: dict) -> None:
    """Insert a cell overriding the parameters cell's values (only names that cell defines)."""
    import nbformat

    i = parameters_cell(nb)
    known = assigned_names(nb.cells[i].source)
    lines = [f"{k} = {v!r}" for k, v in overrides.items() if k in known]
    cell = nbformat.v4.new_code_cell("# Injected by tests/test_notebooks.py\n" + "\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)


def headless_env(workdir: Path) -> dict:
    """Environment for the kernel: startup file (circuitsvis probe, tqdm), one thread, offline hub."""
    startup = workdir / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-headless.py").write_text(STARTUP)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's own inline backend
    env.update(IPYTHONDIR=str(workdir / "ipython"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def execute(nb, workdir: Path, timeout: int = CELL_TIMEOUT):
    """Run every cell in a fresh kernel (cwd: notebooks/); raises CellExecutionError on the first error."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=headless_env(workdir))
    return nb


def cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def outputs_text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", "") if o.output_type == "stream" else str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


# --- pairing and shape -----------------------------------------------------------------------------------
def test_every_notebook_is_a_pair():
    py = {p.stem for p in NOTEBOOKS.glob("*.py")}
    ipynb = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert py, "no notebooks found"
    assert py == ipynb, f".py without .ipynb: {sorted(py - ipynb)}; .ipynb without .py: {sorted(ipynb - py)}"


@pytest.mark.parametrize("name", NAMES)
def test_pair_is_in_sync(name):
    assert cells(committed(name)) == cells(source(name)), (
        f"notebooks/{name}.ipynb differs from notebooks/{name}.py; rebuild it with "
        f"`python tests/test_notebooks.py {name}` (re-executes) or `jupytext --sync notebooks/{name}.py`")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_shape(name):
    nb = source(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    from app_helpers import colab

    assert colab.badge(colab.repository_url(), name) in first.source  # derived from pyproject's Repository
    install = next(c for c in nb.cells if c.cell_type == "code")
    assert 'if "google.colab" in sys.modules' in install.source
    pip = [line.strip() for line in install.source.splitlines()
           if "pip install" in line and not line.strip().startswith(('"', "'"))]  # instructions in strings aside
    assert pip and all(line.startswith("%pip install") for line in pip), pip  # a real magic in the .ipynb
    assert not any("torch" in line for line in pip), "the install cell must never (re)install torch"
    params = nb.cells[parameters_cell(nb)].source
    assert {"MODEL", "N", "SEED"} <= assigned_names(params)


@pytest.mark.parametrize("name", NAMES)
def test_no_logic_defined_in_notebooks(name):
    """Notebooks call app_helpers; the only functions a notebook defines are 04's hand-made patching (the
    slow way, shown on purpose) and the exercises' ``my_*`` functions, which are the student's to write:
    they ship as a bare ``raise NotImplementedError`` (the solutions live in ``app_helpers.exercises``)."""
    allowed = {"04_path_patching": {"freeze", "hook", "by_hand_to_logits"}}.get(name, set())
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell  # magics → plain Python, so ast can parse the cell
    nodes = [n for c in source(name).cells if c.cell_type == "code" for n in ast.walk(ast.parse(python(c.source)))
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
    stubs = {n.name for n in nodes if getattr(n, "name", "").startswith("my_")}
    for n in nodes:
        if n.name in stubs if hasattr(n, "name") else False:
            body = [b for b in n.body if not isinstance(b, ast.Expr) or not isinstance(b.value, ast.Constant)]
            assert len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0]), \
                f"{name}: exercise stub {n.name} must be only `raise NotImplementedError(...)`"
    defined = {getattr(n, "name", "lambda") for n in nodes} - stubs
    assert defined <= allowed, f"{name} defines {sorted(defined - allowed)}: move such logic into app_helpers"


# --- committed outputs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_executed_and_small(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size / 2**20:.1f} MB (limit 5 MB)"
    nb = committed(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{name}.ipynb has cells that were never executed"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{name}.ipynb stores an error"
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{name}.ipynb shows no figure"
    spec = bundled_spec(name)
    if spec != "random-gpt2":  # the bundled model is shipped: committed outputs must come from it
        assert f"[app_helpers] model: {spec}" in outputs_text(nb), (
            f"{name}.ipynb was not executed on the bundled model {spec!r}; re-execute: "
            f"HF_HUB_OFFLINE=1 .venv/bin/python tests/test_notebooks.py")


# --- execution -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, tmp_path):
    nb = source(name)
    inject(nb, {"MODEL": bundled_spec(name), **SMALL})
    start = time.perf_counter()
    execute(nb, tmp_path, timeout=SMALL_CELL_TIMEOUT)
    print(f"{name}: {time.perf_counter() - start:.1f} s")
    text = outputs_text(nb)
    assert f"[app_helpers] model: {bundled_spec(name)}" in text


# --- re-execution in place -------------------------------------------------------------------------------
def reexecute(names: list[str]) -> None:
    """Rebuild each ``.ipynb`` from its ``.py`` and execute it with the notebook's own parameters."""
    import nbformat

    from app_helpers.models import choose_model

    auto = choose_model("auto")
    print(f"MODEL = 'auto' resolves here to {auto.spec!r}: {auto.reason}")
    total = 0.0
    for name in names:
        nb = source(name)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            execute(nb, Path(tmp))
        seconds = time.perf_counter() - start
        total += seconds
        path = NOTEBOOKS / f"{name}.ipynb"
        nbformat.write(nb, path)
        print(f"{name}: {seconds:.0f} s, {path.stat().st_size / 2**20:.2f} MB")
    print(f"total: {total:.0f} s")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # app_helpers importable without installing the kit
    wanted = sys.argv[1:]
    chosen = [n for n in NAMES if not wanted or any(n.startswith(w) for w in wanted)]
    if not chosen:
        sys.exit(f"no notebook matches {wanted}; notebooks: {', '.join(NAMES)}")
    reexecute(chosen)
