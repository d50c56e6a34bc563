"""mtlib.study.site: the report as a site, built from executed notebooks: each page, the
landing page, the navigation (the browser test of the site: tests/test_site_check.py)."""
from __future__ import annotations

import json

import base64
import math
import re

import nbformat
import pandas as pd
import pytest

from mtlib.record import RunRecord
from mtlib.study import pipeline, site
from mtlib.study.report import SUMMARY_COLUMNS
from tests.helpers import ROOT

# The smallest PNG: one transparent pixel.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()
SCORECARD = """Verdicts: how a claim is judged.

| claim | the report | our Δ [95% interval] | rests on | verdict |
|---|---|---|---|---|
| a gain | mean 0.7 vs 0.6 | mean +0.1 [+0.05, +0.15] | b − a (2 seeds) | **confirmed** |
| a loss | mean 0.5 vs 0.6 | mean +0.1 [+0.05, +0.15] | c − b (2 seeds) | **contradicted (on the 1 of 2 comparisons run)** |
| no effect | mean 0.6 vs 0.6 | mean: not run | d − b (0 seeds) | **not run at this profile** |
"""


def _executed(path, heading, parameters=None, stderr="", figures=0):
    """An executed notebook as papermill leaves it: a title, the parameters cells, a computation
    with ``stderr``, prose, and a section whose cell draws ``figures`` figures."""
    notebook = nbformat.v4.new_notebook()
    computed = nbformat.v4.new_code_cell("computed = 41 + 1")
    if stderr:
        computed.outputs = [nbformat.v4.new_output("stream", name="stderr", text=stderr),
                            nbformat.v4.new_output("stream", name="stdout", text="printed 42\n")]
    plot = nbformat.v4.new_code_cell("draw()", metadata={"tags": ["hide-input"]})
    plot.outputs = [nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})
                    for _ in range(figures)]
    notebook.cells = [nbformat.v4.new_markdown_cell(f"# {heading}\n\nintro"),
                      nbformat.v4.new_code_cell("seed = 1", metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell("seed = 2", metadata={"tags": ["injected-parameters"]}),
                      computed,
                      nbformat.v4.new_markdown_cell("## Curves\n\nHigher is better. The rest."),
                      plot]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["papermill"] = {"parameters": parameters or {}, "start_time": "2026-01-02T10:00:00",
                                      "end_time": "2026-01-03T09:00:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return nbformat.read(path, as_version=4)


def test_a_page_folds_all_code_drops_parameters_boxes_logs_and_numbers_each_figure(tmp_path):
    notebook = _executed(tmp_path / "a.ipynb", "03 Fine-tuning", stderr="x.csv: dropped 2 row(s) <bad>\n", figures=2)
    page = site.prepare_notebook(notebook, "alpha", "03 Fine-tuning")
    code = [c for c in page.cells if c.cell_type == "code"]
    assert all("hide-input" in c.metadata["tags"] for c in code)
    assert not any("seed = " in c.source for c in code)  # papermill's parameters left out
    assert page.cells[0].source.startswith("# alpha\n\n*03 Fine-tuning*")
    computed = next(c for c in code if c.source == "computed = 41 + 1")
    assert [o.get("name") for o in computed.outputs] == ["stdout"]  # stderr out of the body ...
    log = page.cells[page.cells.index(computed) + 1]
    assert log.cell_type == "markdown" and log.source.startswith('<details class="mtlib-log"><summary>Log: 1 line')
    assert "x.csv: dropped 2 row(s) &lt;bad&gt;" in log.source  # ... into a collapsed box, escaped
    figures = [c for c in code if any(o.get("output_type") == "display_data" for o in c.outputs)]
    assert len(figures) == 2 and [len(c.outputs) for c in figures] == [1, 1]  # one figure per cell
    assert [c.metadata["mystnb"]["figure"] for c in figures] == [
        {"caption": "Curves. Higher is better.", "name": f"figure-{i}"} for i in (1, 2)]
    assert len(notebook.cells) == 6 and "seed = 1" in notebook.cells[1].source  # the original is untouched
    notebook.cells[-1].metadata["caption"] = "What to see."  # a cell's own caption wins
    page = site.prepare_notebook(notebook)
    assert [c.metadata["mystnb"]["figure"]["caption"] for c in page.cells if "mystnb" in c.metadata] == ["What to see."] * 2


def _summary_row(experiment, parent, mean, lo, hi, diff=math.nan, diff_lo=math.nan, diff_hi=math.nan,
                 resolved=None, report=math.nan, seeds=2):
    row = dict.fromkeys(SUMMARY_COLUMNS, math.nan)
    row.update(experiment=experiment, parent=parent, n_seeds=seeds, sst_mean=0.4, para_mean=0.75, sts_mean=0.8,
               mean_mean=mean, mean_lo=lo, mean_hi=hi, mean_diff=diff, mean_diff_lo=diff_lo, mean_diff_hi=diff_hi,
               mean_resolved=resolved, mean_report=report)
    return row


def _study(root):
    """A made-up study under ``root``: the table, the scorecard, a figure, two runs' records."""
    (root / "results").mkdir(parents=True)
    rows = [_summary_row("head_only", None, 0.5, 0.49, 0.51),
            _summary_row("base_model", "head_only", 0.61, 0.6, 0.62, 0.11, 0.1, 0.12, True, 0.58),
            _summary_row("base_annealed", "base_model", 0.612, 0.6, 0.63, 0.002, -0.01, 0.014, False)]
    pd.DataFrame(rows, columns=SUMMARY_COLUMNS).to_csv(root / "results" / "table.csv", index=False)
    (root / "results" / "scorecard.md").write_text(SCORECARD)
    (root / "figures").mkdir()
    (root / "figures" / "05_budget.png").write_bytes(base64.b64decode(PNG))
    for seed, packages in ((1, {"torch": "2.13.0+cpu", "numpy": "2.1.0"}), (2, None)):
        folder = root / "results" / "runs" / "base_model" / f"seed{seed}"
        folder.mkdir(parents=True)
        RunRecord(dev={"mean": 0.6}, precision="bf16", backbone="minilm", profile="cpu", experiment="base_model",
                  seed=seed, machine="CPU X (2 logical CPUs)", packages=packages).write(folder / "metrics.json")


def test_landing_page_findings_table_scorecard_and_what_the_runs_recorded(tmp_path):
    _study(tmp_path)
    text = site.landing_page(tmp_path, ["05_budget.png"], "2026-01-02", ["pal_start"])
    assert text.startswith(f"# {site.TITLE}\n")
    assert "- The best dev mean is `base_annealed`: 0.612 [0.600, 0.630] over 2 seeds." in text
    assert "- `base_model` scores above `head_only`, the row it builds on: Δ mean +0.110 [+0.100, +0.120]." in text
    assert "1 other row differ" in text  # base_annealed's Δ is not resolved
    assert "Of the report's 3 claims: 1 confirmed, 1 contradicted, 1 not run" in text
    assert '<strong><abbr class="mtlib-interval" title="95% interval [+0.100, +0.120]">+0.110</abbr></strong>' in text
    assert "<td>+0.002</td>" not in text and 'title="95% interval [-0.010, +0.014]">+0.002</abbr></td>' in text
    assert "```{figure} _figures/05_budget.png" in text and site.LANDING_FIGURES["05_budget.png"] in text
    assert "| a gain |" in text and "`pal_start`" in text
    assert "these runs use `minilm` to fit a CPU" in text and "optimistic" in text
    assert "| torch | 2.13.0+cpu |" in text and "| machine | CPU X (2 logical CPUs) |" in text
    assert "| precision | bf16 autocast |" in text and "| notebooks executed | 2026-01-02 |" in text
    assert "The best model" not in text  # results/best_model/scores.json is the best_model stage's ...
    (tmp_path / "results" / "best_model").mkdir()
    row = {"sst": 0.45, "para": 0.82, "sts": 0.86, "mean": 0.71}
    (tmp_path / "results" / "best_model" / "scores.json").write_text(json.dumps(
        {"split": "dev", "rows": [{"row": "best_model", "label": "best model (cpu, 800 updates)", "seeds": 1, **row}]}))
    text = site.landing_page(tmp_path, [], "2026-01-02", [])
    assert "## The best model" in text and "| best model (cpu, 800 updates) | 1 | 0.450 | 0.820 | 0.860 | 0.710 |" in text
    assert "mtlib predict --run results/best_model/seed1" in text


def test_scorecard_verdicts_read_the_verdict_column_only():
    assert site.scorecard_verdicts(SCORECARD) == {"confirmed": 1, "contradicted": 1, "not run": 1}
    assert site.scorecard_verdicts("no table here\n") == {}


def test_scorecard_verdicts_count_the_claim_table_not_the_secondary_or_budget_tables():
    # regression: the secondary comparisons' table (one line per comparison, a verdict each)
    # was counted as claims: 18 claims read as 48 on the canonical scorecard
    after = ("\n## Secondary comparisons\n\n| claim | secondary comparison | verdict |\n|---|---|---|\n"
             "| a | x − y | contradicted |\n| b | x − z | confirmed |\n")
    assert site.scorecard_verdicts(SCORECARD + after) == {"confirmed": 1, "contradicted": 1, "not run": 1}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A site built by the report stage's command from made-up executed notebooks and study."""
    root = tmp_path_factory.mktemp("study")
    _study(root)
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    executed = root / "reports" / "executed"
    _executed(executed / "05_results.ipynb", "05 Results", figures=1)
    _executed(executed / "01_data.ipynb", "01 Data & more", {"profile": "smoke"}, stderr="Traceback-free warning\n")
    for experiment in ("base_model", "head_only", "random_predictor"):  # params.yaml lists them the other way
        _executed(executed / "03_finetune" / f"{experiment}.ipynb", "03 Fine-tuning", {"experiment": experiment})
    html, index = root / "reports" / "html", root / "reports" / "index.html"
    (html / "stale.html").parent.mkdir(parents=True)
    (html / "stale.html").write_text("from an earlier build")
    assert pipeline.main(["report", "--executed", str(executed), "--html", str(html), "--index", str(index),
                          "--params", str(root / "params.yaml")]) == 0
    return root


def test_the_site_has_every_page_in_order_with_navigation_and_no_leftovers(built):
    html = built / "reports" / "html"
    assert not (html / "stale.html").exists() and not (html / ".buildinfo").exists()
    assert not (html / "_sources").exists() and not (html / "_static" / "locales").exists()
    assert not list((html / "_static").rglob("*.html")) and not list((html / "_static").rglob("*.map"))
    # nothing beside what the stage declares (myst-nb's jupyter_execute folder was left in reports/)
    assert sorted(p.name for p in (built / "reports").iterdir()) == ["executed", "html", "index.html"]
    index = (html / "index.html").read_text()
    order = ["01_data.html", "03_finetune.html", "03_finetune/random_predictor.html", "03_finetune/head_only.html",
             "03_finetune/base_model.html", "05_results.html"]
    positions = [index.index(f'href="{page}"') for page in order]  # the sidebar, in reading order
    assert positions == sorted(positions)
    assert "01 Data &amp; more" in index
    page = (html / "03_finetune" / "head_only.html").read_text()
    assert re.search(r'class="prev-next-area".*href="random_predictor.html".*href="base_model.html"', page, re.S)
    assert 'href="../index.html"' in page  # back to the landing page
    assert "<h1>head_only" in page and '<span class="n">computed</span>' in page  # the code is there ...
    folded = page.count('<details class="admonition hide above-input">')  # ... each code cell folded
    assert folded == page.count('<div class="cell_input') == 2 and "Show code cell source" in page
    data = (html / "01_data.html").read_text()
    assert '<details class="mtlib-log">' in data and "Traceback-free warning" in data and "printed 42" in data
    results = (html / "05_results.html").read_text()
    # numbered through the site, as in a paper (the landing page's figure comes first)
    assert '<span class="caption-number">Figure 2 </span><span class="caption-text">Curves. Higher is better.' in results
    redirect = (built / "reports" / "index.html").read_text()
    assert 'url=html/index.html"' in redirect and 'href="html/index.html"' in redirect
    assert pipeline.find_machine_paths(built, [str(built)]) == []
