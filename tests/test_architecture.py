"""The library's shape: layers import downwards only, no cycles, short functions, and
behaviour chosen through registries rather than by comparing names."""
import ast
import dataclasses
import re
from pathlib import Path

import pytest

from mtlib import settings
from mtlib.model import pal
from mtlib.tasks import TASKS
from mtlib.training import combiners, loop, plans, samplers

PACKAGE = Path(__file__).resolve().parent.parent / "mtlib"
# Foundation (every layer may use it), then the layers, bottom up, then the command line.
RANKS = {"tasks": 0, "settings": 0, "config": 0, "errors": 0, "io": 0, "seeds": 0, "record": 0, "data": 1,
         "model": 2, "training": 3, "study": 4, "cli": 5, "__main__": 5, "__init__": 5}
SETTINGS = "mtlib.settings"
REGISTRIES = {  # registry -> the module that owns it (the only place its keys may be compared)
    "SAMPLERS": (settings.SAMPLERS, SETTINGS), "PLANS": (settings.PLANS, SETTINGS),
    "COMBINERS": (settings.COMBINERS, SETTINGS), "HEADS": (settings.HEADS, SETTINGS),
    "METHODS": (settings.METHODS, SETTINGS), "GRANULARITIES": (settings.GRANULARITIES, SETTINGS),
    "PAL_MODES": (set(settings.PAL_MODES) - {"none"}, SETTINGS),  # "none" is also train.amp's
    "SELECTIONS": (set(settings.SELECTIONS) - {"none"}, SETTINGS),
    "TASKS": (TASKS, "mtlib.tasks"),
}
IMPLEMENTED = {  # a name registry of mtlib.settings -> the registry of what its names build
    "SAMPLERS": samplers.SAMPLERS, "PLANS": plans.PLANS, "COMBINERS": combiners.COMBINERS,
    "METHODS": loop.METHODS, "PAL_PLACEMENTS": pal.PLACEMENTS,
}
MAX_FUNCTION_LINES = 60
# Module -> the one function that may import mtlib inside it (why: see mtlib.cli._run).
LAZY_IMPORTS = {"mtlib.cli": "_run"}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


MODULES = modules()


def mtlib_imports(tree: ast.Module, top_level_only: bool) -> set[str]:
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mtlib":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                names.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "mtlib"}
    return names


def rank(module: str) -> int:
    parts = module.split(".")
    return RANKS[parts[1]] if len(parts) > 1 else RANKS["__init__"]


def test_every_module_has_a_rank():
    assert all(len(m.split(".")) == 1 or m.split(".")[1] in RANKS for m in MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_mtlib_is_imported_at_the_top_of_a_module_only(module):
    tree = MODULES[module]
    lazy = set().union(*(mtlib_imports(node, False) for node in tree.body
                         if isinstance(node, ast.FunctionDef) and node.name == LAZY_IMPORTS.get(module)))
    assert mtlib_imports(tree, False) - lazy - mtlib_imports(tree, True) == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_import_downwards_only(module):
    upward = sorted(m for m in mtlib_imports(MODULES[module], False) if rank(m) > rank(module))
    assert upward == [], f"{module} (layer {rank(module)}) imports {upward}"


def test_no_import_cycles():
    graph = {m: {i for i in mtlib_imports(tree, False) if i in MODULES and i != m} for m, tree in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_no_function_is_longer_than_the_limit():
    long = [f"{module}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for module, tree in MODULES.items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def _compared_strings(tree: ast.Module):
    """(line, string) for every string literal compared with ==, !=, in, not in, or
    passed to str.startswith/endswith."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                elements = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                for element in elements:
                    if isinstance(element, ast.Constant) and isinstance(element.value, str):
                        yield node.lineno, element.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith")):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield node.lineno, arg.value


def test_registry_names_are_compared_only_inside_their_registry():
    found = []
    for registry, (entries, owner) in REGISTRIES.items():
        for module, tree in MODULES.items():
            if module == owner:
                continue
            found += [f"{module}:{line}: {value!r} ({registry})" for line, value in _compared_strings(tree)
                      if value in entries or any(key.startswith(value) for key in entries if len(value) > 3)]
    assert found == []


def test_the_name_comparison_check_finds_one():
    tree = ast.parse("if cfg.combiner != 'sum':\n    pass\nx = name.startswith('compromise')\n")
    assert [value for _, value in _compared_strings(tree)] == ["sum", "compromise"]


def test_every_module_has_a_test_file_of_its_own():
    tests = Path(__file__).resolve().parent
    leaves = {m.split(".")[-1] for m in MODULES if m.split(".")[-1] not in ("mtlib", "__main__")}
    leaves -= {m.split(".")[-1] for m in MODULES if any(o.startswith(m + ".") for o in MODULES)}  # packages
    assert sorted(name for name in leaves if not (tests / f"test_{name}.py").exists()) == []


@pytest.mark.parametrize("registry", sorted(IMPLEMENTED))
def test_every_name_the_settings_accept_is_implemented_and_no_other(registry):
    assert sorted(getattr(settings, registry)) == sorted(IMPLEMENTED[registry])


# ---------------------------------------------------------------------------------------
# One place per concept (grep-level)

NOTEBOOKS = sorted((PACKAGE.parent / "notebooks").glob("*.py"))


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE.parent)): p.read_text() for p in [*PACKAGE.rglob("*.py"), *NOTEBOOKS]}


def test_the_validation_curve_is_never_called_dev():
    assert [name for name, text in _sources().items() if "dev_mean" in text] == []


def test_one_reader_of_a_run_config():
    """A run's config.yaml is read by mtlib.training.runs.read_run_config only (typed and checked)."""
    readers = [name for name, text in _sources().items()
               if re.search(r"[\"']config\.yaml[\"']", text) and "yaml.safe_load" in text
               and name != "mtlib/training/runs.py"]
    assert readers == []


def test_one_parser_of_run_folder_names():
    assert [name for name, text in _sources().items() if r"seed(\d+)" in text] == ["mtlib/record.py"]


def test_update_means_the_optimiser_step_only():
    """What one update is made of is its batch plan (train.plan, PLANS); no setting, registry
    or module calls that an update."""
    from mtlib.config import TrainConfig
    assert "update" not in {f.name for f in dataclasses.fields(TrainConfig)}
    assert [name for name, text in _sources().items() if re.search(r"\bUPDATES\b|training\.updates\b", text)] == []
