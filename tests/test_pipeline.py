"""mtlib.study.pipeline, and the repository's pipeline itself: notebooks, dvc.yaml and params.yaml agree."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
import yaml

from mtlib.study import pipeline
from mtlib.study.report import REPORT_TABLE2
from tests.helpers import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


# ---------------------------------------------------------------------------------------
# Runs and their flat exports

def test_pipeline_runs_cross_experiments_and_seeds():
    params = {"experiments": {"a": {}, "b": {}, "p": {}},
              "pipeline": {"seeds": [1, 3], "experiments": ["b", "a"], "pal_experiments": ["p"]}}
    assert pipeline.pipeline_runs(params) == [("b", 1), ("b", 3), ("a", 1), ("a", 3), ("p", 1), ("p", 3)]
    assert pipeline.pipeline_runs(params, pal=True) == [("p", 1), ("p", 3)]
    params["pipeline"]["experiments"].append("typo")
    with pytest.raises(KeyError, match="typo"):
        pipeline.pipeline_runs(params)


# ---------------------------------------------------------------------------------------
# The HTML report

def _executed(path, heading, parameters=None):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell(f"intro\n\n# {heading}\n\ntext"),
                      nbformat.v4.new_code_cell("x = 1")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if parameters is not None:
        notebook.metadata["papermill"] = {"parameters": parameters}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def test_build_report_renders_every_notebook_and_links_them_in_order(tmp_path):
    executed = tmp_path / "executed"
    _executed(executed / "05_results.ipynb", "05 Results")
    _executed(executed / "01_data.ipynb", "01 Data <and> more", {"profile": "smoke", "seed": 1})
    _executed(executed / "03_finetune" / "zeta-seed1.ipynb", "03 Fine-tuning", {"experiment": "zeta", "seed": 1})
    _executed(executed / "03_finetune" / "beta-seed2.ipynb", "03 Fine-tuning", {"experiment": "beta", "seed": 2})
    _executed(executed / "03_finetune" / "beta-seed10.ipynb", "03 Fine-tuning", {"experiment": "beta", "seed": 10})
    _executed(executed / "03_finetune" / "alpha-seed1.ipynb", "03 Fine-tuning", {"experiment": "alpha", "seed": 1})
    pages = pipeline.build_report(executed, tmp_path / "out" / "html", tmp_path / "out" / "index.html",
                                  order=["zeta", "beta"])
    assert [p["href"] for p in pages] == ["html/01_data.html", "html/03_finetune/zeta-seed1.html",
                                          "html/03_finetune/beta-seed2.html", "html/03_finetune/beta-seed10.html",
                                          "html/03_finetune/alpha-seed1.html", "html/05_results.html"]
    assert pages[0]["title"] == "01 Data <and> more (seed 1)"
    assert pages[1]["title"] == "03 Fine-tuning (experiment zeta, seed 1)"
    for page in pages:
        html = (tmp_path / "out" / page["href"]).read_text()
        assert html.startswith("<!DOCTYPE html>") and "intro" in html and 'class="mi">1<' in html
    index = (tmp_path / "out" / "index.html").read_text()
    positions = [index.index(f'href="{p["href"]}"') for p in pages]
    assert positions == sorted(positions)
    assert "01 Data &lt;and&gt; more" in index and "<and>" not in index
    assert "03 Fine-tuning (4 runs)" in index


def test_build_report_needs_notebooks(tmp_path):
    with pytest.raises(FileNotFoundError, match="no executed notebooks"):
        pipeline.build_report(tmp_path, tmp_path / "html", tmp_path / "index.html")


# ---------------------------------------------------------------------------------------
# Checks

def _source(path, cells, kernel="python3"):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = cells
    notebook.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_check_notebook_accepts_a_thin_clean_notebook(tmp_path):
    parameters = nbformat.v4.new_code_cell("seed = 1", metadata={"tags": ["parameters"]})
    path = _source(tmp_path / "ok.ipynb", [nbformat.v4.new_markdown_cell("# title\n\ndef in prose is fine"),
                                          parameters, nbformat.v4.new_code_cell("undefined = 'class x'")])
    assert pipeline.check_notebook(path) == []


def test_check_notebook_names_each_problem(tmp_path):
    first = nbformat.v4.new_code_cell("seed = 1")
    body = nbformat.v4.new_code_cell("x = 1\n  def helper():\n    pass\nclass Thing: pass", execution_count=3)
    body.outputs = [nbformat.v4.new_output("stream", text="hi")]
    problems = pipeline.check_notebook(_source(tmp_path / "bad.ipynb", [first, body], kernel="conda-env"))
    text = "\n".join(problems)
    assert "kernel is 'conda-env'" in text
    assert "not tagged 'parameters'" in text
    assert "cell 1 has outputs" in text
    assert "line 2 defines" in text and "line 4 defines" in text
    assert len(problems) == 5


def test_check_outputs(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "x", "outs": ["figures/a.png", {"figures/dir": {"cache": True}}, "reports/x.ipynb"]},
        "b": {"matrix": {"k": [1]}, "cmd": "y", "outs": ["figures/${item.k}.png"],
              "plots": [{"figures/b.png": {"cache": False}}]}}}))
    problems = pipeline.check_outputs(tmp_path)
    assert sorted(problems) == sorted(["results/table.csv: missing", "results/table.md: missing",
                                       "figures/a.png: missing", "figures/dir: missing", "figures/b.png: missing"])
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    (tmp_path / "results" / "table.md").write_text("")
    (tmp_path / "figures" / "dir").mkdir(parents=True)
    (tmp_path / "figures" / "a.png").write_bytes(b"png")
    (tmp_path / "figures" / "b.png").write_bytes(b"png")
    assert sorted(pipeline.check_outputs(tmp_path)) == ["figures/dir: folder holds no files",
                                                        "results/table.md: empty file"]
    (tmp_path / "results" / "table.md").write_text("| a |\n")
    (tmp_path / "figures" / "dir" / "ok.png").write_bytes(b"png")
    (tmp_path / "figures" / "dir" / "empty.png").write_bytes(b"")
    assert pipeline.check_outputs(tmp_path) == ["figures/dir/empty.png: empty file"]
    (tmp_path / "figures" / "dir" / "empty.png").write_bytes(b"png")
    assert pipeline.check_outputs(tmp_path) == []


def test_check_outputs_command_line_exits_non_zero_with_the_problem(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    result = subprocess.run([sys.executable, "-m", "mtlib.study.pipeline", "check-outputs", "--root", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "results/table.csv: missing" in result.stderr


def test_module_closure_follows_imports_inside_functions(tmp_path):
    package = tmp_path / "mtlib"
    package.mkdir()
    (package / "a.py").write_text("from mtlib.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from mtlib import c\n    import mtlib.d as d\n")
    (package / "c.py").write_text("import os\n")
    (package / "d.py").write_text("")
    (package / "unused.py").write_text("")
    assert pipeline.module_closure(["mtlib.a"], tmp_path) == ["mtlib/a.py", "mtlib/b.py", "mtlib/c.py", "mtlib/d.py"]


# ---------------------------------------------------------------------------------------
# The repository's own pipeline

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_clean_and_thin(path):
    assert pipeline.check_notebook(path) == []


def test_notebooks_are_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_notebooks.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _stage_notebook(stage) -> str:
    return re.search(r"notebooks/\S+\.ipynb", stage["cmd"]).group(0)


def _notebook_stages():
    return {name: stage for name, stage in DVC["stages"].items() if "papermill" in stage["cmd"]}


def test_every_notebook_has_one_stage_and_numbers_are_in_order():
    notebooks = [_stage_notebook(stage) for stage in _notebook_stages().values()]
    assert notebooks == [f"notebooks/{p.name}" for p in NOTEBOOKS]
    for stage in _notebook_stages().values():
        assert "-k python3" in stage["cmd"] and "--cwd ." in stage["cmd"] and "mkdir -p" in stage["cmd"]


@pytest.mark.parametrize("name", list(_notebook_stages()))
def test_stage_deps_are_the_notebook_and_its_import_closure(name):
    stage = DVC["stages"][name]
    notebook = _stage_notebook(stage)
    mtlib_deps = sorted(d for d in stage["deps"] if d.startswith("mtlib/"))
    assert notebook in stage["deps"]
    assert mtlib_deps == pipeline.layer_deps(pipeline.notebook_modules(ROOT / notebook, ROOT))


def test_report_stage_deps_are_pipeline_and_its_imports():
    stage = DVC["stages"]["report"]
    assert sorted(d for d in stage["deps"] if d.startswith("mtlib/")) == pipeline.layer_deps(
        pipeline.module_closure(["mtlib.study.pipeline"], ROOT))
    assert "reports/executed" in stage["deps"]


def test_matrix_lists_are_params_pipeline_section():
    section = PARAMS["pipeline"]
    assert DVC["stages"]["finetune"]["matrix"] == {"experiment": "${pipeline.experiments}",
                                                   "seed": "${pipeline.seeds}"}
    assert DVC["stages"]["pal_after"]["matrix"] == {"experiment": "${pipeline.pal_experiments}",
                                                    "seed": "${pipeline.seeds}"}
    assert section["pal_experiments"] == ["pal_after", "pal_after_adjusted"]
    # every experiment runs exactly once: the PAL-after ones in their own stage (they need advanced_model)
    assert sorted(section["experiments"] + section["pal_experiments"]) == sorted(PARAMS["experiments"])
    assert "advanced_model" in section["experiments"]
    assert "results/runs/advanced_model/seed${item.seed}" in DVC["stages"]["pal_after"]["deps"]
    for name in section["pal_experiments"]:
        assert PARAMS["experiments"][name]["train"]["init_from"] == "results/runs/advanced_model/seed{seed}"
    assert section["seeds"] and all(isinstance(s, int) for s in section["seeds"])


def test_rows_cover_the_pipeline_and_label_every_report_row_once():
    rows = PARAMS["pipeline"]["rows"]
    labels = {experiment: row["label"] for experiment, row in rows.items() if row["label"]}
    assert set(rows) >= set(PARAMS["pipeline"]["experiments"]) | set(PARAMS["pipeline"]["pal_experiments"])
    assert set(rows) <= set(PARAMS["experiments"])
    assert {row["parent"] for row in rows.values()} - {None} <= set(rows)
    assert sorted(labels.values()) == sorted(REPORT_TABLE2)  # every row of Table 2 exactly once
    assert not {"single_sst", "no_pretraining", "hidden_compromise_reference", "head_only"} & set(labels)


def _parameters(notebook_path) -> dict:
    notebook = nbformat.read(notebook_path, as_version=4)
    cell = next(c for c in notebook.cells if c.cell_type == "code")
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body}


def test_parameters_are_primitives_and_stages_pass_only_identity():
    for path in NOTEBOOKS:
        for name, value in _parameters(path).items():
            assert value is None or isinstance(value, (str, int, float, bool)), (path.name, name)
    for name, stage in _notebook_stages().items():
        passed = set(re.findall(r"-p (\w+) ", stage["cmd"] + " "))
        assert passed <= {"profile", "experiment", "seed"}, name
        assert passed <= set(_parameters(ROOT / _stage_notebook(stage))), name


def test_run_stage_outputs_match_the_notebook_defaults():
    for name in ("finetune", "pal_after"):
        stage = DVC["stages"][name]
        defaults = _parameters(ROOT / _stage_notebook(stage))
        outs = pipeline.declared_outputs(ROOT / "dvc.yaml")[name]
        assert f"{defaults['runs_dir']}/${{item.experiment}}/seed${{item.seed}}" in outs
        assert f"{defaults['metrics_dir']}/${{item.experiment}}/seed${{item.seed}}.json" in outs
        assert f"{defaults['curves_dir']}/${{item.experiment}}/seed${{item.seed}}.csv" in outs
        assert f"experiments.${{item.experiment}}" in stage["params"]


def test_every_declared_figure_is_written_by_its_notebook():
    declared = pipeline.declared_outputs(ROOT / "dvc.yaml")
    for name, stage in _notebook_stages().items():
        source = (ROOT / _stage_notebook(stage)).read_text()
        for path in declared[name]:
            if path.startswith("figures/"):
                assert path.removeprefix("figures/") in source, (name, path)
    figures = [p for paths in declared.values() for p in paths if p.startswith("figures/")]
    assert len(figures) == len(set(figures)) >= 9


def test_finetune_notebook_runs_end_to_end_on_generated_data(tmp_path, monkeypatch):
    """03_finetune through papermill on the smoke profile: a run folder and DVC's flat exports."""
    import papermill

    from tests.helpers import write_task_files

    monkeypatch.setenv("MTLIB_DATA", str(write_task_files(tmp_path / "data")))
    runs, metrics, curves = tmp_path / "runs", tmp_path / "metrics", tmp_path / "curves"
    papermill.execute_notebook(str(ROOT / "notebooks" / "03_finetune.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"profile": "smoke", "experiment": "base_model", "seed": 2,
                                           "params": str(ROOT / "params.yaml"), "runs_dir": str(runs),
                                           "metrics_dir": str(metrics), "curves_dir": str(curves)},
                               kernel_name="python3", cwd=str(tmp_path), progress_bar=False)
    run = runs / "base_model" / "seed2"
    assert json.loads((run / "metrics.json").read_text())["seed"] == 2
    assert (run / "learning_curve.png").stat().st_size > 0
    assert set(json.loads((metrics / "base_model" / "seed2.json").read_text())["dev"]) >= {"sst/acc", "mean"}
    assert len(pd.read_csv(curves / "base_model" / "seed2.csv")) >= 1
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    markdown = [o["data"]["text/markdown"] for c in executed.cells if c.cell_type == "code"
                for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    assert any(text.startswith("Dev score ") for text in markdown)
    assert any("image/png" in o.get("data", {}) for c in executed.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
