"""The study as a DVC pipeline of notebooks: what its stages and its checks share.

dvc.yaml runs the numbered notebooks under notebooks/ with papermill. This module holds
the pieces around them:

- :func:`pipeline_runs`: the (experiment, seed) runs params.yaml's ``pipeline:`` asks for;
- :func:`build_report`: every executed notebook rendered to HTML, and an index page
  linking them in reading order;
- :func:`check_notebook`: a committed source notebook is clean and thin (no outputs, a
  ``parameters`` cell first, kernel ``python3``, no ``def``/``class``);
- :func:`check_outputs`: after ``dvc repro``, the results table and every figure dvc.yaml
  declares exist and are not empty.

Command line: ``python -m mtlib.study.pipeline {runs,deps,report,check-notebooks,check-outputs} ...``.
"""
from __future__ import annotations

import argparse
import ast
import html
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import yaml

from mtlib.io import write_csv, write_json, write_text

TABLE_FILES = ("results/table.csv", "results/table.md")
DEF_OR_CLASS = re.compile(r"^\s*(async\s+def|def|class)\s")


# ---------------------------------------------------------------------------------------
# What runs

def pipeline_runs(params: Mapping | str | Path = "params.yaml", pal: bool | None = None) -> list[tuple[str, int]]:
    """``(experiment, seed)`` for every run the pipeline makes: ``pipeline.experiments`` x
    ``pipeline.seeds``, then ``pipeline.pal_experiments`` x seeds (``pal=False``: only the
    former, ``pal=True``: only the latter)."""
    if not isinstance(params, Mapping):
        params = yaml.safe_load(Path(params).read_text())
    section = params.get("pipeline") or {}
    listed = set(section.get("experiments", [])) | set(section.get("pal_experiments", []))
    unknown = sorted(listed - set(params.get("experiments", {})))
    if unknown:
        raise KeyError(f"pipeline lists experiment(s) {unknown} that params.yaml's experiments lack")
    lists = {False: section.get("experiments", []), True: section.get("pal_experiments", [])}
    chosen = [False, True] if pal is None else [pal]
    return [(e, int(s)) for which in chosen for e in lists[which] for s in section.get("seeds", [])]


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


def notebook_modules(path: str | Path, root: str | Path = ".") -> list[str]:
    """:func:`module_closure` of what a notebook's code cells import: its mtlib deps in dvc.yaml."""
    import nbformat

    notebook = nbformat.read(Path(path), as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    python = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))  # magics
    return module_closure(_mtlib_imports(python), root)


def layer_deps(files) -> list[str]:
    """The dvc.yaml deps that cover ``files`` (``mtlib/...py``): a module in a layer
    subpackage counts as its whole layer folder (``mtlib/training``), a top-level module as
    itself. Layers import only downwards (tests/test_architecture.py), so a stage depends on
    the layers its notebook reaches and on nothing above them."""
    deps = set()
    for name in files:
        parts = Path(name).parts
        deps.add("/".join(parts[:2]) if len(parts) > 2 else name)
    return sorted(deps)


# ---------------------------------------------------------------------------------------
# The HTML report

def notebook_heading(notebook) -> str:
    """The first Markdown heading of a notebook (without the #s)."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            heading = next((line for line in cell.source.splitlines() if line.startswith("#")), None)
            if heading:
                return heading.lstrip("#").strip()
    return "untitled notebook"


def _parameters(notebook) -> dict:
    return dict(notebook.metadata.get("papermill", {}).get("parameters", {}))


def notebook_title(notebook) -> str:
    """:func:`notebook_heading`, plus the experiment and seed papermill ran it with."""
    parameters = _parameters(notebook)
    identity = ", ".join(f"{key} {parameters[key]}" for key in ("experiment", "seed") if key in parameters)
    heading = notebook_heading(notebook)
    return f"{heading} ({identity})" if identity else heading


def _reading_order(relative: Path, notebook, order: Sequence[str]) -> tuple:
    parameters = _parameters(notebook)
    rank = {name: i for i, name in enumerate(order)}
    experiment = str(parameters.get("experiment", ""))
    return relative.parts[0], rank.get(experiment, len(rank)), experiment, int(parameters.get("seed") or 0), relative


def render_html(notebook, path: str | Path) -> Path:
    """One executed notebook (a NotebookNode) as a self-contained HTML page (images inline)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    write_text(path, body)
    return Path(path)


def index_page(pages: Sequence[Mapping[str, str]], title: str) -> str:
    """An HTML page linking ``pages`` (dicts with 'section', 'heading', 'title', 'href') in
    order: a section of one page is one link, a larger one its heading over a list of links."""
    sections: dict[str, list] = {}
    for page in pages:
        sections.setdefault(page["section"], []).append(page)

    def link(page):
        return f'<a href="{html.escape(page["href"])}">{html.escape(page["title"])}</a>'

    items = []
    for members in sections.values():
        if len(members) == 1:
            items.append(f"<li>{link(members[0])}</li>")
        else:
            inner = "\n".join(f"<li>{link(p)}</li>" for p in members)
            items.append(f"<li>{html.escape(members[0]['heading'])} ({len(members)} runs)<ul>\n{inner}\n</ul></li>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>\n"
            "<style>body{font-family:sans-serif;max-width:52em;margin:2em auto;line-height:1.5}</style>\n"
            f"</head>\n<body>\n<h1>{html.escape(title)}</h1>\n<ol>\n" + "\n".join(items) + "\n</ol>\n</body>\n</html>\n")


def build_report(executed_dir: str | Path, html_dir: str | Path, index_path: str | Path,
                 order: Sequence[str] = (), title: str = "Multitask BERT: the study, notebook by notebook") -> list[dict]:
    """Render every ``*.ipynb`` under ``executed_dir`` to ``html_dir`` (same relative paths,
    .html) and write ``index_path`` linking them: by top-level name (the notebook number),
    then in ``order`` of experiments (the rest alphabetically), then by seed. Returns the
    pages in that order."""
    import nbformat

    executed_dir, html_dir, index_path = Path(executed_dir), Path(html_dir), Path(index_path)
    relatives = [p.relative_to(executed_dir) for p in executed_dir.rglob("*.ipynb")
                 if ".ipynb_checkpoints" not in p.parts]
    if not relatives:
        raise FileNotFoundError(f"{executed_dir}: no executed notebooks to render")
    notebooks = {r: nbformat.read(executed_dir / r, as_version=4) for r in relatives}
    pages = []
    for relative in sorted(relatives, key=lambda r: _reading_order(r, notebooks[r], order)):
        target = render_html(notebooks[relative], html_dir / relative.with_suffix(".html"))
        pages.append({"section": relative.parts[0].split(".")[0], "heading": notebook_heading(notebooks[relative]),
                      "title": notebook_title(notebooks[relative]),
                      "href": Path(os.path.relpath(target.resolve(), index_path.resolve().parent)).as_posix()})
    write_text(index_path, index_page(pages, title))
    return pages


# ---------------------------------------------------------------------------------------
# Checks

def check_notebook(path: str | Path) -> list[str]:
    """Problems of a committed source notebook (empty list: none): outputs or execution
    counts left in, the first code cell not tagged ``parameters``, a kernel other than
    ``python3``, or a ``def``/``class`` line (logic belongs in mtlib)."""
    import nbformat

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
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
    paths = []
    for entry in entries or []:
        paths.extend([entry] if isinstance(entry, str) else list(entry))
    return paths


def declared_outputs(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, list[str]]:
    """``{stage: [path, ...]}``: each stage's outs, metrics and plots as written in dvc.yaml
    (templated paths such as ``${item.seed}`` are left as they are)."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text()).get("stages", {})
    return {name: _out_paths(stage.get("outs")) + _out_paths(stage.get("metrics")) + _out_paths(stage.get("plots"))
            for name, stage in stages.items()}


def check_outputs(root: str | Path = ".", dvc_yaml: str | Path = "dvc.yaml",
                  required: Sequence[str] = TABLE_FILES, prefixes: Sequence[str] = ("figures/",)) -> list[str]:
    """Problems with the pipeline's products under ``root`` (empty list: none): each of
    ``required`` and each output of dvc.yaml under one of ``prefixes`` must exist and not be
    empty; a folder must hold at least one file, and none of its files may be empty."""
    root = Path(root)
    declared = [p for paths in declared_outputs(root / dvc_yaml).values() for p in paths
                if "${" not in p and any(p.startswith(prefix) for prefix in prefixes)]
    problems = []
    for name in dict.fromkeys([*required, *declared]):
        path = root / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.is_dir():
            files = [f for f in path.rglob("*") if f.is_file()]
            if not files:
                problems.append(f"{name}: folder holds no files")
            problems += [f"{f.relative_to(root)}: empty file" for f in files if f.stat().st_size == 0]
        elif path.stat().st_size == 0:
            problems.append(f"{name}: empty file")
    return problems


# ---------------------------------------------------------------------------------------
# Command line

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mtlib.study.pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runs = commands.add_parser("runs", help="list the (experiment, seed) runs params.yaml's pipeline asks for")
    runs.add_argument("--params", default="params.yaml")
    report = commands.add_parser("report", help="render executed notebooks to HTML and write an index page")
    report.add_argument("--executed", default="reports/executed")
    report.add_argument("--html", default="reports/html")
    report.add_argument("--index", default="reports/index.html")
    report.add_argument("--params", help="order fine-tuning notebooks as params.yaml's pipeline lists experiments")
    deps = commands.add_parser("deps", help="the mtlib files a notebook depends on (for dvc.yaml)")
    deps.add_argument("notebook")
    notebooks = commands.add_parser("check-notebooks", help="source notebooks are clean and thin")
    notebooks.add_argument("paths", nargs="*", help="default: notebooks/*.ipynb")
    outputs = commands.add_parser("check-outputs", help="the table and every declared figure exist, non-empty")
    outputs.add_argument("--root", default=".")
    outputs.add_argument("--dvc-yaml", default="dvc.yaml")
    outputs.add_argument("--require", action="append", default=[], metavar="PATH",
                         help="another file or folder that must exist and not be empty")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "runs":
        for experiment, seed in pipeline_runs(args.params):
            print(f"{experiment}\t{seed}")
        return 0
    if args.command == "deps":
        print("\n".join(layer_deps(notebook_modules(args.notebook))))
        return 0
    if args.command == "report":
        order = [e for e, _ in pipeline_runs(args.params)] if args.params else []
        pages = build_report(args.executed, args.html, args.index, order=list(dict.fromkeys(order)))
        print(f"{args.index}: {len(pages)} notebooks")
        return 0
    if args.command == "check-notebooks":
        paths = args.paths or sorted(str(p) for p in Path("notebooks").glob("*.ipynb"))
        problems = [p for path in paths for p in check_notebook(path)]
    else:
        problems = check_outputs(args.root, args.dvc_yaml, [*TABLE_FILES, *args.require])
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.command}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
