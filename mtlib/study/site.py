"""The report as a site: a landing page that reads as the paper's first page, then every
executed notebook as a page, with navigation, built by Sphinx with myst-nb and
sphinx-book-theme (Jupyter Book's stack) from the notebooks papermill executed (execution off).

:func:`build_site` writes the source folder (:func:`prepare_notebook` for each notebook,
:func:`landing_page` for the first page) in a temporary folder, runs Sphinx there and
replaces the HTML folder whole. What a reader sees on each notebook page:

- every code cell's source folded (one click shows it); papermill's parameters left out;
- what a cell printed to stderr (warnings, logs, progress) in a collapsed "Log" box under it;
- each figure numbered, its caption the section it sits in (heading and first sentence),
  or a cell's own ``caption`` metadata;
- the pages of one notebook run per experiment grouped under that notebook.
"""
from __future__ import annotations

import copy
import html
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from mtlib.io import atomic_dir, write_text
from mtlib.record import RECORDED_PACKAGES, RunRecord
from mtlib.study import readme

HIDE_INPUT, REMOVE_CELL = "hide-input", "remove-cell"
REMOVED_CELL_TAGS = ("parameters", "injected-parameters")
TITLE = "Multitask BERT fine-tuning, reproduced: SST-5, Quora paraphrase and STS-B"
# The figures that carry the findings, shown on the landing page in this order where they exist.
LANDING_FIGURES = {
    "05_report_comparison.png": "This study's dev scores beside the report's single runs, row by row: "
                                "where the two part, the report's number lies outside our seeds' interval.",
    "05_score_vs_parameters.png": "Dev mean against the parameters each task owns: more task-specific "
                                  "parameters do not buy a higher score.",
    "05_compromise_vs_annealed.png": "Gradient Compromise against the annealed sampler it builds on, at "
                                     "matched examples seen: the report's claim of faster early learning.",
    "05_budget.png": "Validation mean at twice the profile's budget: whether the rows were still learning "
                     "when the canonical budget stopped them.",
}
BEST_MODEL_SCORES = "results/best_model/scores.json"  # the best_model stage's (mtlib.study.best_model.comparison)
VERDICTS = ("confirmed", "contradicted", "not resolvable", "not run")
CONF = '''\
project = {title!r}
author = "the mtlib authors"
extensions = ["myst_nb"]
nb_execution_mode = "off"           # the notebooks ran in their own stages
nb_output_stderr = "remove"         # moved into a collapsed Log box by mtlib.study.site
nb_merge_streams = True
nb_render_markdown_format = "myst"  # text/markdown outputs hold pipe tables
numfig = True
numfig_format = {{"figure": "Figure %s", "table": "Table %s"}}
myst_enable_extensions = ["dollarmath"]
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
html_theme = "sphinx_book_theme"
html_title = {title!r}
html_copy_source = False
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["mtlib.css"]
html_context = {{"default_mode": "light"}}
html_theme_options = {{"show_navbar_depth": 1, "use_download_button": False,
                      "use_fullscreen_button": False, "show_prev_next": True}}
html_last_updated_fmt = None
exclude_patterns = ["_build"]
'''
CSS = """\
/* compact tables: one line per row, scrolled sideways when wide */
.bd-article table { font-size: 0.82em; }
.bd-article table td, .bd-article table th { white-space: nowrap; padding: 0.2em 0.5em; }
.bd-article .cell_output { overflow-x: auto; }
details.mtlib-log { margin: 0.2em 0 0.8em; font-size: 0.8em; color: #555; }
details.mtlib-log pre { max-height: 20em; overflow: auto; }
abbr.mtlib-interval { text-decoration: underline dotted; cursor: help; }
table.mtlib-headline td { font-weight: 400; }
table.mtlib-headline td strong { font-weight: 700; }
"""


# ---------------------------------------------------------------------------------------
# One notebook as a page

def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _log_cell(text: str):
    import nbformat

    lines = text.rstrip("\n").count("\n") + 1
    body = (f'<details class="mtlib-log"><summary>Log: {lines} line{"s" * (lines != 1)} '
            f'(warnings and progress this cell printed)</summary>\n<pre>{html.escape(text.rstrip())}</pre>\n</details>')
    return nbformat.v4.new_markdown_cell(body)


def _is_image(output) -> bool:
    return output.get("output_type") in ("display_data", "execute_result") and any(
        key.startswith("image/") for key in output.get("data", {}))


def _section_caption(markdown: str) -> str:
    """A caption from the Markdown cell above a figure: its heading, then its first sentence."""
    heading = next((line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")), "")
    prose = " ".join(line.strip() for line in markdown.splitlines() if line.strip() and not line.startswith("#"))
    sentence = re.split(r"(?<=[.!?])\s", prose, maxsplit=1)[0] if prose else ""
    if heading and sentence:
        return f"{heading}. {sentence}"
    return heading or sentence


def prepare_notebook(notebook, title: str | None = None, subtitle: str | None = None):
    """A copy of an executed notebook ready to render as a page (see the module's docstring).
    ``title`` replaces its first heading (``subtitle``: a line of emphasis under it)."""
    import nbformat

    notebook = copy.deepcopy(notebook)
    cells, last_markdown, figures = [], "", 0
    for cell in notebook.cells:
        if any(tag in REMOVED_CELL_TAGS for tag in _tags(cell)):
            continue
        if cell.cell_type == "markdown":
            if title and not any(c.cell_type == "markdown" for c in cells):
                lines = cell.source.splitlines()
                first = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
                if first is not None:
                    lines[first:first + 1] = [f"# {title}"] + ([f"\n*{subtitle}*"] if subtitle else [])
                    cell.source = "\n".join(lines)
            last_markdown = cell.source
            cells.append(cell)
            continue
        if cell.cell_type != "code":
            cells.append(cell)
            continue
        cell.metadata["tags"] = list(dict.fromkeys([*_tags(cell), HIDE_INPUT]))
        outputs = cell.get("outputs", [])
        log = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr")
        kept = [o for o in outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        # One figure per cell, so that each is numbered with its own caption.
        groups, current = [], []
        for output in kept:
            if _is_image(output) and any(_is_image(o) for o in current):
                groups.append(current)
                current = []
            current.append(output)
        groups.append(current)
        caption = cell.metadata.get("caption") or _section_caption(last_markdown)
        for i, group in enumerate(groups):
            part = cell if i == 0 else nbformat.v4.new_code_cell("", metadata={"tags": [HIDE_INPUT]})
            part.outputs = group
            if any(_is_image(o) for o in group) and caption:
                figures += 1
                part.metadata["mystnb"] = {"figure": {"caption": caption, "name": f"figure-{figures}"}}
            cells.append(part)
        if log:
            cells.append(_log_cell(log))
    notebook.cells = cells
    return notebook


# ---------------------------------------------------------------------------------------
# The landing page

def _bracket(lo: float, hi: float, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return "" if math.isnan(lo) or math.isnan(hi) else f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def _with_interval(value: float, lo: float, hi: float, signed: bool = False) -> str:
    text = ("{:+.3f}" if signed else "{:.3f}").format(value)
    interval = _bracket(lo, hi, signed)
    return f'<abbr class="mtlib-interval" title="95% interval {interval}">{text}</abbr>' if interval else text


def headline_table(summary: pd.DataFrame) -> str:
    """The results table cut to what a reader scans first, as HTML: per row its seeds, the three
    dev scores, the mean and its Δ to the row it builds on (bold where resolved) and the report's
    mean; each interval shows on hover (the full table, intervals written out, is on the 05 page)."""
    head = ["experiment", "builds on", "seeds", "sst acc", "para acc", "sts r", "mean", "Δ mean", "report mean"]
    rows = []
    summary = summary.assign(mean_resolved=summary["mean_resolved"].eq(True))
    for _, r in summary.iterrows():
        parent = r["parent"] if isinstance(r["parent"], str) else None
        delta = "–"
        if parent and not math.isnan(r["mean_diff"]):
            delta = _with_interval(r["mean_diff"], r["mean_diff_lo"], r["mean_diff_hi"], signed=True)
            if r["mean_resolved"] is True:
                delta = f"<strong>{delta}</strong>"
        cells = [f"<code>{html.escape(r['experiment'])}</code>",
                 f"<code>{html.escape(parent)}</code>" if parent else "–", str(int(r["n_seeds"])),
                 *(f"{r[f'{m}_mean']:.3f}" for m in ("sst", "para", "sts")),
                 _with_interval(r["mean_mean"], r["mean_lo"], r["mean_hi"]), delta,
                 "–" if math.isnan(r["mean_report"]) else f"{r['mean_report']:.3f}"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ('<table class="table mtlib-headline">\n<thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>")


def scorecard_verdicts(scorecard_md: str) -> dict[str, int]:
    """``{verdict: number of claims}`` from the scorecard's claim table, its first table (its
    last column, e.g. '**confirmed (on the 1 of 2 comparisons run)**' counts as 'confirmed');
    the tables after it (secondary comparisons, the budget) judge no claim."""
    counts: dict[str, int] = {}
    text = scorecard_md.splitlines()
    start = next((i for i, line in enumerate(text) if line.startswith("|")), len(text))
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), text[start:]))
    if not lines or "verdict" not in lines[0]:
        return counts
    for line in lines[2:]:
        cell = line.strip().strip("|").split("|")[-1].strip().strip("*").strip()
        verdict = next((v for v in VERDICTS if cell.startswith(v)), None)
        if verdict:
            counts[verdict] = counts.get(verdict, 0) + 1
    return counts


def findings(summary: pd.DataFrame, verdicts: Mapping[str, int]) -> list[str]:
    """The findings as sentences, from the results table and the scorecard's verdicts."""
    out = []
    trained = summary[summary["n_seeds"] > 0]
    if len(trained):
        best = trained.loc[trained["mean_mean"].idxmax()]
        out.append(f"The best dev mean is `{best['experiment']}`: {best['mean_mean']:.3f} "
                   f"{_bracket(best['mean_lo'], best['mean_hi'])} over {int(best['n_seeds'])} seeds.")
    summary = summary.assign(mean_resolved=summary["mean_resolved"].eq(True))
    resolved = summary[summary["mean_resolved"]]
    for _, r in resolved.iterrows():
        side = "above" if r["mean_diff"] > 0 else "below"
        out.append(f"`{r['experiment']}` scores {side} `{r['parent']}`, the row it builds on: Δ mean "
                   f"{r['mean_diff']:+.3f} {_bracket(r['mean_diff_lo'], r['mean_diff_hi'], signed=True)}.")
    unresolved = summary[summary["parent"].apply(lambda p: isinstance(p, str))
                         & ~summary["mean_resolved"] & summary["mean_diff"].notna()]
    if len(unresolved):
        out.append(f"{len(unresolved)} other row{'s' * (len(unresolved) != 1)} differ from the row they build on "
                   "by less than this study can resolve (their 95% intervals of Δ include 0).")
    if verdicts:
        total = sum(verdicts.values())
        parts = ", ".join(f"{n} {v}" for v, n in verdicts.items())
        out.append(f"Of the report's {total} claims: {parts} (the scorecard below).")
    return out


def _runs(root: Path) -> list[RunRecord]:
    return [RunRecord.read(p) for p in sorted((root / "results" / "runs").glob("*/seed*/metrics.json"))]


def provenance(runs: Sequence[RunRecord], dates: str) -> list[tuple[str, str]]:
    """What the canonical run was: profile, backbone, machine, precision, dates, and the package
    versions its runs recorded ('not recorded' for runs made before they recorded them)."""
    def listed(values):
        unique = list(dict.fromkeys(str(v) for v in values if v is not None))
        return ", ".join(unique) if unique else "not recorded"

    facts = [("runs", f"{len(runs)} runs of {len({r.experiment for r in runs})} experiments"),
             ("profile", listed(r.profile for r in runs)), ("backbone", listed(r.backbone for r in runs)),
             ("machine", listed(r.machine for r in runs)), ("precision", listed(r.precision_label for r in runs)),
             ("notebooks executed", dates)]
    recorded = [r.packages for r in runs if r.packages]
    for name in RECORDED_PACKAGES:
        versions = listed(p.get(name) for p in recorded)
        facts.append((name, versions if recorded else "not recorded by these runs"))
    return facts


def _markdown_table(rows: Sequence[tuple[str, str]], head=("", "")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    return "\n".join(lines + [f"| {a} | {str(b).replace('|', '/')} |" for a, b in rows])


def _best_model(path: Path) -> str:
    """The best-model block from the best_model stage's scores file ``path``, where it exists
    (the stage runs after the results: a site built before it has no such block)."""
    if not path.is_file():
        return ""
    return ("## The best model\n\n" + readme.best_model_block(path) + "\n\n"
            "Use it: `mtlib predict --run results/best_model/seed1 --task sts --input my.csv --output pred.csv`.\n")


def landing_page(root: str | Path, figures: Sequence[str], dates: str, not_run: Sequence[str]) -> str:
    """The landing page's MyST Markdown: title, abstract, findings, headline table, figures
    (``figures``: their file names, copied beside the page), scorecard, what was not measured,
    how to rerun, and what the canonical run was."""
    root = Path(root)
    summary = pd.read_csv(root / "results" / "table.csv")
    scorecard_path = root / "results" / "scorecard.md"
    scorecard = scorecard_path.read_text() if scorecard_path.exists() else ""
    runs = _runs(root)
    experiments = len(summary)
    parts = [f"# {TITLE}", "",
             "**Abstract.** A multitask BERT fine-tuned on three tasks at once (SST-5 sentiment, Quora "
             "paraphrase detection, STS-B similarity), rebuilt from a course report and its public code, "
             f"with the rows of the report's Table 2 that this profile runs and our baselines ({experiments} rows) "
             "each trained over several seeds and compared, paired by seed, with the row it builds on. Every number carries a "
             "95% interval that counts both the seeds and the dev sample; a claim of the report is judged "
             "confirmed or contradicted only where that interval says so.", "",
             "## Findings", "", *(f"- {line}" for line in findings(summary, scorecard_verdicts(scorecard))), "",
             "## Headline results", "",
             "Dev scores, means over seeds; hover over a mean or a Δ for its 95% interval; Δ is bold where "
             "the interval excludes 0. The full table, intervals written out, is on the "
             "[05 Results](05_results.ipynb) page.", "",
             headline_table(summary), ""]
    if figures:
        parts += ["## The figures that carry the findings", ""]
        for i, name in enumerate(figures, 1):
            parts += [f"```{{figure}} _figures/{name}", f":name: landing-figure-{i}", ":width: 100%", "",
                      LANDING_FIGURES.get(name, name), "```", ""]
    best = _best_model(root / BEST_MODEL_SCORES)
    if best:
        parts += [best, ""]
    if scorecard:
        parts += ["## The report's claims, judged", "", scorecard.strip(), ""]
    parts += ["## What was not measured, and why", "",
              "- The test sets: the course's test files carry no labels (Quora's is not available at all), "
              "so every score is on dev, and the report's numbers are compared with ours on dev."]
    backbones = sorted({r.backbone for r in runs if r.backbone})
    if backbones and "bert-base-uncased" not in backbones:
        line = (f"- The report's backbone, bert-base-uncased: these runs use {', '.join(f'`{b}`' for b in backbones)} "
                "to fit a CPU (the `paper` profile runs bert-base on a GPU), so compare directions and "
                "differences with the report, not levels.")
        if any("minilm" in b.lower() for b in backbones):
            line += (" all-MiniLM-L6-v2 was trained on about a billion sentence pairs, Quora duplicates "
                     "among them: its para (and to a lesser degree sts) scores are optimistic.")
        parts.append(line)
    if not_run:
        parts.append(f"- These rows of the report, which this profile does not run (`run: false` in "
                     f"params.yaml, to keep the canonical run within its time): {', '.join(f'`{e}`' for e in not_run)}.")
    parts += ["", "## How to rerun it", "",
              "Everything, from a fresh clone beside the course data (`../shared/data/cs224n`):", "",
              "```bash\nmake repro        # set up .venv from requirements.lock, then dvc repro\n```", "",
              "One notebook: its stage, for example `dvc repro results` (05) or `dvc repro finetune@hidden` "
              "(03, one experiment); DVC reruns what that stage depends on where it changed. The "
              "sources are percent-format scripts under `notebooks/`.", "",
              "## What the canonical run was", "", _markdown_table(provenance(runs, dates)), "",
              "## The notebooks", "",
              "```{toctree}\n:maxdepth: 1\n:caption: Notebooks\n\n{pages}\n```", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------
# The site

def _papermill(notebook) -> Mapping:
    return notebook.metadata.get("papermill", {})


def executed_dates(notebooks) -> str:
    """The day(s) papermill executed ``notebooks`` on, from their metadata (UTC)."""
    days = sorted({str(time)[:10] for nb in notebooks for key in ("start_time", "end_time")
                   if (time := _papermill(nb).get(key))})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}" if days else "unknown dates"


def _heading(notebook) -> str:
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            line = next((line for line in cell.source.splitlines() if line.startswith("#")), None)
            if line:
                return line.lstrip("#").strip()
    return "untitled notebook"


def write_sources(executed_dir: str | Path, source_dir: str | Path, root: str | Path = ".",
                  order: Sequence[str] = (), not_run: Sequence[str] = ()) -> list[str]:
    """The Sphinx source folder: conf.py, the landing page (index.md), one page per executed
    notebook (same relative paths) and one page per folder of notebooks listing its experiments
    in ``order``. Returns the pages' names (without suffix) in reading order."""
    import nbformat

    executed_dir, source_dir, root = Path(executed_dir), Path(source_dir), Path(root)
    found = sorted(p.relative_to(executed_dir) for p in executed_dir.rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
    if not found:
        raise FileNotFoundError(f"{executed_dir}: no executed notebooks to render")
    notebooks = {r: nbformat.read(executed_dir / r, as_version=4) for r in found}
    rank = {name: i for i, name in enumerate(order)}
    top: dict[str, list[Path]] = {}
    for relative in found:
        top.setdefault(relative.parts[0].removesuffix(".ipynb"), []).append(relative)
    pages = []
    for name in sorted(top):
        members = top[name]
        if len(members) == 1 and len(members[0].parts) == 1:
            relative = members[0]
            nbformat.write(prepare_notebook(notebooks[relative]), source_dir / relative)
            pages.append(name)
            continue
        members.sort(key=lambda r: (rank.get(r.stem, len(rank)), r.stem))
        heading = _heading(notebooks[members[0]])
        for relative in members:
            target = source_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            experiment = str(_papermill(notebooks[relative]).get("parameters", {}).get("experiment", relative.stem))
            nbformat.write(prepare_notebook(notebooks[relative], experiment, heading), target)
        entries = "\n".join(r.with_suffix("").as_posix() for r in members)
        write_text(source_dir / f"{name}.md",
                   f"# {heading}\n\nOne page per experiment, in the order of params.yaml's `experiments`.\n\n"
                   f"```{{toctree}}\n:maxdepth: 1\n\n{entries}\n```\n")
        pages.append(name)
    figures = [name for name in LANDING_FIGURES if (root / "figures" / name).is_file()]
    for name in figures:
        (source_dir / "_figures").mkdir(exist_ok=True)
        shutil.copyfile(root / "figures" / name, source_dir / "_figures" / name)
    dates = executed_dates(notebooks.values())
    write_text(source_dir / "index.md", landing_page(root, figures, dates, not_run).replace("{pages}", "\n".join(pages)))
    write_text(source_dir / "conf.py", CONF.format(title=TITLE))
    write_text(source_dir / "_static" / "mtlib.css", CSS)
    return pages


REDIRECT = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="refresh" content="0; url={href}"></head>
<body><p>The report: <a href="{href}">{title}</a>.</p></body>
</html>
"""


def build_site(executed_dir: str | Path, html_dir: str | Path, index_path: str | Path, root: str | Path = ".",
               order: Sequence[str] = (), not_run: Sequence[str] = ()) -> Path:
    """Build the site from ``executed_dir`` into ``html_dir`` (replaced whole, only once the build
    succeeded) and write ``index_path``, a page that sends the reader to its landing page."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    html_dir, index_path = Path(html_dir), Path(index_path)
    with tempfile.TemporaryDirectory(prefix="mtlib-site-") as tmp:
        # built in the temporary folder: myst-nb writes its jupyter_execute folder beside the
        # output folder, which would otherwise be beside html_dir
        source, doctrees, built = Path(tmp) / "source", Path(tmp) / "doctrees", Path(tmp) / "build" / "html"
        source.mkdir()
        write_sources(executed_dir, source, root, order, not_run)
        with docutils_namespace():
            app = Sphinx(str(source), str(source), str(built), str(doctrees), "html",
                         status=None, warning=None, freshenv=True)
            app.build(force_all=True)
        if app.statuscode:
            raise RuntimeError(f"{html_dir}: Sphinx failed (status {app.statuscode})")
        # Sphinx's build state; of the themes' static files, the template fragments, the
        # source maps (for debugging their scripts; a third of the site) and the translations
        static = built / "_static"
        leftovers = [built / name for name in (".buildinfo", "_sources", ".doctrees")] + [static / "locales"]
        for path in leftovers + sorted(static.rglob("*.html")) + sorted(static.rglob("*.map")):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        with atomic_dir(html_dir) as out:
            shutil.copytree(built, out, dirs_exist_ok=True)
    href = Path(os.path.relpath(html_dir.resolve() / "index.html", index_path.resolve().parent)).as_posix()
    write_text(index_path, REDIRECT.format(title=html.escape(TITLE), href=html.escape(href)))
    return html_dir / "index.html"
