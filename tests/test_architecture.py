"""The package's import structure: no cycles, and no module imports from a layer above its own.

Read from the source (every ``import`` a module runs, lazy ones inside functions included; imports under
``if TYPE_CHECKING:`` only name types and are left out), so a new module must be placed in ``LAYERS``.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "app_helpers"

#: Lowest first. A module may import modules of its own layer or below, never above.
LAYERS = [
    # vocabulary and mechanics that know nothing of tasks or models
    {"identities", "validate", "costs", "hooks", "devices", "metrics", "viz", "toy", "toy.ioi_algorithm", "colab"},
    # prompts and the files models are built from
    {"tasks", "tasks.base", "tasks.data", "tasks.words", "tasks.ioi", "tasks.greater_than", "tasks.pronouns",
     "tasks.induction", "tasks.docstring", "gpt2_offline"},
    {"wordlevel", "circuits", "models", "attention"},
    # the method: evaluation, path patching, pruning, search
    {"evaluation", "attribution", "patching", "patching.base", "patching.plan", "patching.memo", "patching.execution",
     "patching.naive", "patching.engine"},
    {"pruning", "search", "roles", "baselines"},
    {"pipeline", "sizing"},
    # presenting and running it
    {"report", "widgets", "bench", "exercises"},
    {"cli", "__main__"},
    # the bundled models' trainers and checks
    {"toy.corpus", "toy.ioi_prompts", "toy.checks"},
    {"toy.planted_checks"},
    {"toy.card"},
    {"toy.train"},
    {"toy.siit"},
]
LEVEL = {module: i for i, layer in enumerate(LAYERS) for module in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def runtime_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports at run time, as names relative to the package."""
    own = module_name(path)
    is_package = path.name == "__init__.py"
    base = own.split(".") if is_package else own.split(".")[:-1]
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.ImportFrom) and child.level:
                anchor = base[:len(base) - (child.level - 1)] if child.level > 1 else base
                target = [p for p in [*anchor, *(child.module or "").split(".")] if p]
                for alias in child.names:  # "from . import x" may name a submodule
                    sub = ".".join([*target, alias.name])
                    found.add(sub if (PACKAGE / Path(*sub.split("."))).with_suffix(".py").exists()
                              or (PACKAGE / Path(*sub.split(".")) / "__init__.py").exists() else ".".join(target))
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module or ""]
                found.update(n.removeprefix("app_helpers.") for n in names if n.startswith("app_helpers."))
            visit(child)
    visit(ast.parse(path.read_text()))
    # a package's own submodules and its ancestors are not dependencies of it in the layering sense
    return {m for m in found if m and m != own and not own.startswith(m + ".")}


GRAPH = {module_name(p): runtime_imports(p) for p in sorted(PACKAGE.rglob("*.py"))
         if "bundled" not in p.parts and module_name(p)}


def test_every_module_has_a_layer():
    missing = sorted(set(GRAPH) - set(LEVEL))
    assert not missing, f"place these modules in LAYERS: {missing}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_from_a_higher_layer(module):
    upward = sorted(m for m in GRAPH[module] if LEVEL.get(m, -1) > LEVEL[module])
    assert not upward, f"{module} (layer {LEVEL[module]}) imports higher layers: " + ", ".join(
        f"{m} ({LEVEL[m]})" for m in upward)


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(module, path):
        state[module] = 1
        for dep in sorted(GRAPH.get(module, ())):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(dep):], dep]))
            if dep not in state:
                walk(dep, [*path, dep])
        state[module] = 2
    for module in sorted(GRAPH):
        if module not in state:
            walk(module, [module])


def test_the_reader_sees_real_imports():
    """The graph is not empty by accident: known edges are there, a TYPE_CHECKING import is not."""
    assert {"identities", "costs", "hooks"} <= GRAPH["patching.base"]
    assert {"patching.engine", "patching.naive"} <= GRAPH["patching"]
    assert "tasks.data" not in GRAPH["metrics"] and "metrics" in GRAPH["tasks"]
    assert "pipeline" in GRAPH["toy.planted_checks"]
