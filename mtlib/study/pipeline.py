"""The study as a DVC pipeline of notebooks: what its stages and its checks share.

dvc.yaml runs the numbered notebooks, whose sources are percent-format scripts under
notebooks/ (jupytext turns each into a notebook that papermill executes). This module
generates dvc.yaml (:func:`dvc_yaml`), renders the executed notebooks as the report's site
(``report``: :func:`mtlib.study.site.build_site`) and checks the notebook sources (:func:`check_notebook`), the
pipeline's outputs (:func:`check_outputs`) and dvc.lock (:func:`check_lock`).

Command line: ``python -m mtlib.study.pipeline {dvc-yaml,report,check-notebooks,check-outputs,check-lock} ...``.
"""
from __future__ import annotations

import argparse
import ast
import io
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from mtlib.config import ConfigError, read_params
from mtlib.data.files import DataError, find_data_dir
from mtlib.io import write_text
from mtlib.study.site import build_site

TABLE_FILES = ("results/table.csv", "results/table.md")
DEF_OR_CLASS = re.compile(r"^\s*(async\s+def|def|class)\s")
# Layers whose modules a stage depends on one by one: the study layer is the top, imported
# by the notebooks only, so editing one of its figures reruns just the stages that draw it.
# Lower layers are used wholesale (training reaches all of data and model) and count as folders.
FILE_LAYERS = ("mtlib/study",)
# What the repository publishes: committed files there must be cache: false outputs of dvc.yaml.
PUBLISHED = ("figures/", "reports/index.html", "reports/html/", "results/table.", "results/scorecard.md",
             "results/best_model/config.yaml", "results/best_model/predictions/", "results/best_model/scores.json")
# An experiment that starts from another one's runs names their folder in train.init_from.
RUNS_OF = re.compile(r"results/runs/([^/]+)/seed\{seed\}")
STAGES_TEMPLATE = Path(__file__).with_name("dvc_stages.yaml")
# What runs a stage's code: the notebook in its cmd, or the module it runs with `python -m`.
STAGE_CODE = re.compile(r"notebooks/\S+\.py|python -m (mtlib\S*)")


# ---------------------------------------------------------------------------------------
# What runs

def starts_from(experiments: Mapping) -> dict[str, str]:
    """``{experiment: the experiment whose runs it starts from}``: every experiment whose
    overrides set ``train.init_from`` to another one's run folder
    (``results/runs/<name>/seed{seed}``). It trains in its own stage, after that one's."""
    matches = {name: RUNS_OF.fullmatch(str(entry["set"].get("train", {}).get("init_from")))
               for name, entry in experiments.items()}
    return {name: match.group(1) for name, match in matches.items() if match}


def pipeline_experiments(params: Mapping | str | Path = "params.yaml",
                         every: bool = False) -> tuple[list[str], dict[str, str]]:
    """What the pipeline runs, in params.yaml's order: the experiments with ``run: true``
    (``every``: all of them) that start from the pretrained encoder, and ``{experiment: the
    experiment whose runs it starts from}`` (:func:`starts_from`) for the others. A start
    the pipeline does not run is an error: its stage would wait for runs nothing makes."""
    experiments = (params if isinstance(params, Mapping) else read_params(params))["experiments"]
    chosen = [name for name, entry in experiments.items() if every or entry["run"]]
    starts = {name: start for name, start in starts_from(experiments).items() if name in chosen}
    missing = sorted(f"{name} -> {start}" for name, start in starts.items() if start not in chosen)
    if missing:
        raise ConfigError(f"experiments start from the runs of experiments the pipeline does not run: {missing}")
    return [name for name in chosen if name not in starts], starts


def _mtlib_imports(source: str) -> set[str]:
    """Modules of mtlib that ``source`` imports anywhere (top level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mtlib":
            # ``from mtlib.study import figures`` may name a module or a function: keep both
            # candidates, module_closure keeps those that are files.
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "mtlib"}
    return names


def module_closure(modules, root: str | Path = ".") -> list[str]:
    """The files (``mtlib/x.py``) of ``modules`` and of every mtlib module they import,
    transitively: what a stage running them depends on. ``mtlib/__init__.py`` is left out."""
    root = Path(root)
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        path = root / (module.replace(".", "/") + ".py")
        if module in seen or not path.exists():
            continue
        seen.add(module)
        todo += _mtlib_imports(path.read_text())
    return sorted(module.replace(".", "/") + ".py" for module in seen)


def read_notebook(path: str | Path):
    """A notebook (NotebookNode) from its source: a percent-format ``.py`` through jupytext,
    anything else as an ``.ipynb``."""
    path = Path(path)
    if path.suffix == ".py":
        import jupytext

        return jupytext.read(path)
    import nbformat

    return nbformat.read(path, as_version=4)


def notebook_modules(path: str | Path, root: str | Path = ".") -> list[str]:
    """:func:`module_closure` of what a notebook's code cells import: its mtlib deps in dvc.yaml."""
    notebook = read_notebook(path)
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    python = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))  # magics
    return module_closure(_mtlib_imports(python), root)


def layer_deps(files: Iterable[str]) -> list[str]:
    """The dvc.yaml deps that cover ``files`` (``mtlib/...py``): a module of a lower layer
    subpackage counts as its whole layer folder (``mtlib/training``), a module of
    :data:`FILE_LAYERS` (the study layer) and a top-level module as itself. Layers import
    only downwards (tests/test_architecture.py), so a stage depends on the layers its
    notebook reaches and on nothing above them."""
    deps = set()
    for name in files:
        parts = Path(name).parts
        folder = "/".join(parts[:2])
        deps.add(folder if len(parts) > 2 and folder not in FILE_LAYERS else name)
    return sorted(deps)


# ---------------------------------------------------------------------------------------
# dvc.yaml, generated

def stage_deps(stage: Mapping, root: str | Path = ".") -> list[str]:
    """The deps of a stage's code: what its cmd runs (a notebook, or a module run with
    ``python -m``), then that code's mtlib import closure (:func:`layer_deps`)."""
    root = Path(root)
    notebooks = [m.group(0) for m in STAGE_CODE.finditer(stage["cmd"]) if not m.group(1)]
    modules = [m.group(1) for m in STAGE_CODE.finditer(stage["cmd"]) if m.group(1)]
    files = [f for n in notebooks for f in notebook_modules(root / n, root)] + module_closure(modules, root)
    return [*notebooks, *layer_deps(files)]


def dvc_yaml(params: Mapping | str | Path = "params.yaml", root: str | Path = ".", every: bool = False) -> str:
    """dvc.yaml's text: the stages of :data:`STAGES_TEMPLATE`, comments and layout kept, with
    their deps filled in (:func:`stage_deps`) and one fine-tuning stage per experiment the
    pipeline runs (:func:`pipeline_experiments`; ``every``: all of them). DVC's templating
    loops only over lists that params.yaml spells out, while params.yaml declares each
    experiment once, in one entry: so dvc.yaml is generated, and a test checks it is current."""
    round_trip = YAML()
    round_trip.width = 110
    round_trip.indent(mapping=2, sequence=4, offset=2)
    template = round_trip.load(STAGES_TEMPLATE.read_text())
    stages, (fine_tuned, starts) = template["stages"], pipeline_experiments(params, every)
    filled = [stages["finetune"]["matrix"]["experiment"], stages["pal_after"]["foreach"]]
    filled[0].extend(fine_tuned)
    filled[1].update(starts)
    for stage in stages.values():
        body = stage.get("do", stage)
        body["deps"][:0] = stage_deps(body, root)
        filled.append(body["deps"])
    for values in filled:
        values.fa.set_flow_style()  # inline, as the template writes lists (an empty one loads as block)
    text = io.StringIO()
    round_trip.dump(template, text)
    return "".join(line.rstrip() + "\n" for line in text.getvalue().splitlines())  # no trailing blanks


# ---------------------------------------------------------------------------------------
# Checks

def check_notebook(path: str | Path) -> list[str]:
    """Problems of a notebook source (empty list: none): the first code cell not tagged
    ``parameters``, a kernel other than ``python3``, a ``def``/``class`` line (logic belongs
    in mtlib), or (in an ``.ipynb``) outputs, execution counts or papermill's injected cell."""
    path = Path(path)
    notebook = read_notebook(path)
    problems = []
    kernel = notebook.metadata.get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"{path}: kernel is {kernel!r}, not 'python3'")
    code = [(i, c) for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    if not code or "parameters" not in code[0][1].metadata.get("tags", []):
        problems.append(f"{path}: the first code cell is not tagged 'parameters'")
    for i, cell in code:
        if cell.get("outputs") or cell.get("execution_count") is not None:
            problems.append(f"{path}: cell {i} has outputs or an execution count (commit notebooks cleared)")
        if "injected-parameters" in cell.metadata.get("tags", []):
            problems.append(f"{path}: cell {i} holds papermill's injected parameters (an executed copy?)")
        for n, line in enumerate(cell.source.splitlines(), 1):
            if DEF_OR_CLASS.match(line):
                problems.append(f"{path}: cell {i} line {n} defines a function or class ({line.strip()!r}); "
                                "move it into mtlib")
    return problems


def _out_paths(entries) -> list[str]:
    return [path for entry in entries or [] for path in ([entry] if isinstance(entry, str) else entry)]


def declared_outputs(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, list[str]]:
    """``{stage: [path, ...]}``: each stage's outs, metrics and plots as written in dvc.yaml
    (templated paths such as ``${item.experiment}`` or ``${key}`` are left as they are)."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text()).get("stages", {})
    bodies = {name: stage.get("do", stage) for name, stage in stages.items()}  # a foreach stage's body is `do`
    return {name: _out_paths(body.get("outs")) + _out_paths(body.get("metrics")) + _out_paths(body.get("plots"))
            for name, body in bodies.items()}


def _nonempty(root: Path, name: str) -> list[str]:
    path = root / name
    if not path.exists():
        return [f"{name}: missing"]
    if path.is_dir():
        files = [f for f in path.rglob("*") if f.is_file()]
        return ([f"{name}: folder holds no files"] if not files else []) + \
            [f"{f.relative_to(root)}: empty file" for f in files if f.stat().st_size == 0]
    return [f"{name}: empty file"] if path.stat().st_size == 0 else []


def machine_paths(root: str | Path = ".") -> list[str]:
    """Absolute paths of this machine that published files must not contain: the
    repository's, the course data folder's (where it is found) and the Python environment's."""
    paths = [Path(root).resolve(), Path(sys.prefix).resolve()]
    try:
        paths.append(find_data_dir(root=Path(root).resolve()).resolve())
    except DataError:
        pass
    return sorted({str(p) for p in paths if p.parent != p})  # never '/' itself


def _published_files(root: Path) -> list[Path]:
    """The files a published report is made of: executed notebooks, HTML pages, the results table, the figures."""
    found = [p for folder in ("reports", "figures") if (root / folder).is_dir()
             for p in (root / folder).rglob("*") if p.is_file()]
    return sorted(found + [root / name for name in TABLE_FILES if (root / name).is_file()])


def find_machine_paths(root: str | Path = ".", forbidden: Sequence[str] | None = None) -> list[str]:
    """Problems (empty list: none) where a published file (see :func:`_published_files`)
    names an absolute path of this machine (:func:`machine_paths`), in its name or, for the
    text files (notebooks, HTML, tables), in its content."""
    root = Path(root)
    forbidden = list(forbidden if forbidden is not None else machine_paths(root))
    problems = []
    for path in _published_files(root):
        name = str(path.relative_to(root))
        text = path.read_text(errors="replace") if path.suffix in (".ipynb", ".html", ".csv", ".md") else ""
        for machine_path in forbidden:
            escaped = machine_path.replace("\\", "\\\\")  # as JSON writes it in a notebook
            if machine_path in name or machine_path in text or escaped in text:
                problems.append(f"{name}: names the machine's path {machine_path}")
    return problems


def check_outputs(root: str | Path = ".", dvc_yaml: str | Path = "dvc.yaml", required: Sequence[str] = TABLE_FILES,
                  forbidden: Sequence[str] | None = None) -> list[str]:
    """Problems with the pipeline's products under ``root`` (empty list: none): each of ``required``
    and each output of dvc.yaml under figures/ must exist and not be empty (a folder must hold files,
    none of them empty), and no published file may name an absolute path of the machine
    (:func:`find_machine_paths`; ``forbidden`` replaces :func:`machine_paths`)."""
    root = Path(root)
    declared = [p for paths in declared_outputs(root / dvc_yaml).values() for p in paths
                if "${" not in p and p.startswith("figures/")]
    problems = [problem for name in dict.fromkeys([*required, *declared]) for problem in _nonempty(root, name)]
    return problems + find_machine_paths(root, forbidden)


# ---------------------------------------------------------------------------------------
# Published outputs against dvc.lock

def _tracked(root: Path) -> set[str] | None:
    """The files git tracks under ``root`` (paths relative to it), None outside a git repository."""
    result = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=root, capture_output=True, text=True)
    return {name for name in result.stdout.split("\0") if name} if result.returncode == 0 else None


def check_lock(root: str | Path = ".") -> list[str]:
    """Problems (empty list: none) where the published outputs disagree with dvc.lock.

    Published outputs are the ``cache: false`` outs of dvc.yaml (the table, the figures, the
    report) that git tracks. Each must have the hash dvc.lock records for it (DVC computes
    and compares it); a stage of which one output is published must have published every
    output dvc.lock records for it (one declared since the locked run waits for the next run);
    and every tracked file under :data:`PUBLISHED` must be such an output (no
    stale figure left behind). Outputs that git does not track are unpublished, not in
    disagreement: a clone before the first committed run passes, and so does a working
    copy whose fresh, uncommitted run has updated dvc.lock."""
    from dvc.repo import Repo

    root = Path(root).resolve()
    tracked = _tracked(root)
    problems, covered = [], []
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            outs = [(Path(out.fs_path).relative_to(root).as_posix(), out) for out in stage.outs if not out.use_cache]
            published = [(name, out) for name, out in outs
                         if tracked is None and out.exists or tracked is not None and _covers(name, tracked)]
            covered += [name for name, _ in outs]
            # an output dvc.lock records no hash for is one the locked run predates (declared
            # since): it waits for the next run, as every output did before the first one
            missing = sorted(set(n for n, out in outs if out.hash_info) - set(n for n, _ in published))
            if published and missing:
                problems.append(f"stage {stage.addressing}: {missing} not committed beside its other outputs")
            for name, out in published:
                if not out.hash_info:
                    problems.append(f"{name}: committed, but dvc.lock records no hash for it (run `dvc commit`)")
                elif out.status():
                    problems.append(f"{name}: {out.status()[str(out)]}, not what dvc.lock records")
    stale = sorted(name for name in tracked or () if name.startswith(PUBLISHED)
                   and Path(name).name != ".gitignore" and not _covers(name, covered))
    return problems + [f"{name}: committed under a published folder, but no stage of dvc.yaml writes it"
                       for name in stale]


def _covers(name: str, paths: Iterable[str]) -> bool:
    """True when ``name`` is one of ``paths``, a folder holding one of them, or inside one of them."""
    return any(p == name or p.startswith(name + "/") or name.startswith(p + "/") for p in paths)


# ---------------------------------------------------------------------------------------
# Command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtlib.study.pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="build the report's site from the executed notebooks, the "
                                                "results table, the scorecard and the figures")
    report.add_argument("--executed", default="reports/executed")
    report.add_argument("--html", default="reports/html")
    report.add_argument("--index", default="reports/index.html")
    report.add_argument("--params", default="params.yaml",
                        help="order fine-tuning pages as it lists experiments; its folder holds results/ and figures/")
    generate = commands.add_parser("dvc-yaml", help="generate dvc.yaml from params.yaml's experiments")
    generate.add_argument("--params", default="params.yaml")
    generate.add_argument("--all", action="store_true", help="every experiment, whatever its `run` flag")
    generate.add_argument("--write", metavar="PATH", help="write it there (default: print it)")
    notebooks = commands.add_parser("check-notebooks", help="notebook sources are thin")
    notebooks.add_argument("paths", nargs="*", help="default: notebooks/*.py")
    outputs = commands.add_parser("check-outputs", help="the table and every declared figure exist, non-empty, "
                                                        "and no published file names a path of this machine")
    outputs.add_argument("--root", default=".")
    outputs.add_argument("--dvc-yaml", default="dvc.yaml")
    outputs.add_argument("--require", action="append", default=[], metavar="PATH",
                         help="another file or folder that must exist and not be empty")
    lock = commands.add_parser("check-lock", help="the committed (published) outputs are what dvc.lock records")
    lock.add_argument("--root", default=".")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dvc-yaml":
        text = dvc_yaml(args.params, Path(args.params).parent, every=args.all)  # the notebooks beside it
        if args.write:
            write_text(args.write, text)
        else:
            print(text, end="")
        return 0
    if args.command == "report":
        fine_tuned, starts = pipeline_experiments(args.params)
        not_run = [name for name, entry in read_params(args.params)["experiments"].items() if not entry["run"]]
        landing = build_site(args.executed, args.html, args.index, Path(args.params).parent,
                             order=[*fine_tuned, *starts], not_run=not_run)
        print(f"{args.index} -> {landing}")
        return 0
    if args.command == "check-notebooks":
        paths = args.paths or sorted(str(p) for p in Path("notebooks").glob("*.py"))
        problems = [p for path in paths for p in check_notebook(path)]
    elif args.command == "check-lock":
        problems = check_lock(args.root)
    else:
        problems = check_outputs(args.root, args.dvc_yaml, [*TABLE_FILES, *args.require])
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.command}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
