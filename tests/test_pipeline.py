"""mtlib.study.pipeline, and the repository's pipeline itself: notebook sources, dvc.yaml,
params.yaml and dvc.lock agree, and each stage depends on exactly what it uses."""
from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys

import jupytext
import nbformat
import pandas as pd
import pytest
import yaml

from mtlib.config import ConfigError, read_params
from mtlib.study import analysis, pipeline, report, scorecard
from tests.helpers import ROOT, run_tool, scratch_pipeline, tool_env

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


# ---------------------------------------------------------------------------------------
# Runs and their flat exports

def _entry(run=True, init_from=None):
    """An experiment's params.yaml entry; ``init_from`` makes it start from another's runs."""
    overrides = {"train": {"init_from": init_from}} if init_from else {}
    return {"set": overrides, "parent": None, "report": None, "group": None, "run": run}


def test_pipeline_experiments_start_from_the_encoder_or_from_another_experiment():
    params = {"experiments": {"b": _entry(), "p": _entry(init_from="results/runs/a/seed{seed}"), "a": _entry(),
                              "off": _entry(run=False), "elsewhere": _entry(init_from="/models/x/seed{seed}")}}
    assert pipeline.pipeline_experiments(params) == (["b", "a", "elsewhere"], {"p": "a"})
    assert pipeline.pipeline_experiments(params, every=True)[0] == ["b", "a", "off", "elsewhere"]
    params["experiments"]["a"]["run"] = False  # p would wait for runs that nothing makes
    with pytest.raises(ConfigError, match="p -> a"):
        pipeline.pipeline_experiments(params)


# The HTML report: tests/test_site.py


# ---------------------------------------------------------------------------------------
# Checks

def _source(path, cells, kernel="python3"):
    """A notebook source written as jupytext writes it (``.py``: percent format)."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = cells
    notebook.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    jupytext.write(notebook, path, fmt="py:percent" if path.suffix == ".py" else None)
    return path


def test_check_notebook_accepts_a_thin_source(tmp_path):
    parameters = nbformat.v4.new_code_cell("seed = 1", metadata={"tags": ["parameters"]})
    path = _source(tmp_path / "ok.py", [nbformat.v4.new_markdown_cell("# title\n\ndef in prose is fine"),
                                       parameters, nbformat.v4.new_code_cell("undefined = 'class x'")])
    assert "# %% tags=[\"parameters\"]" in path.read_text()
    assert pipeline.check_notebook(path) == []


def test_check_notebook_names_each_problem(tmp_path):
    first = nbformat.v4.new_code_cell("seed = 1")
    body = nbformat.v4.new_code_cell("x = 1\nif x:\n    def helper():\n        pass\nclass Thing: pass")
    problems = pipeline.check_notebook(_source(tmp_path / "bad.py", [first, body], kernel="conda-env"))
    text = "\n".join(problems)
    assert "kernel is 'conda-env'" in text
    assert "not tagged 'parameters'" in text
    assert "line 3 defines" in text and "line 5 defines" in text
    assert len(problems) == 4


def test_check_notebook_finds_an_executed_copy(tmp_path):
    parameters = nbformat.v4.new_code_cell("seed = 1", metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("seed = 2", metadata={"tags": ["injected-parameters"]}, execution_count=3)
    injected.outputs = [nbformat.v4.new_output("stream", text="hi")]
    path = tmp_path / "run.ipynb"
    notebook = nbformat.v4.new_notebook(cells=[parameters, injected])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    problems = pipeline.check_notebook(path)
    assert len(problems) == 2 and "has outputs" in problems[0] and "injected parameters" in problems[1]


def test_check_outputs(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "x", "outs": ["figures/a.png", {"figures/dir": {"cache": True}}, "reports/x.ipynb"]},
        "b": {"matrix": {"k": [1]}, "cmd": "y", "outs": ["figures/${item.k}.png"],
              "plots": [{"figures/b.png": {"cache": False}}]}}}))
    problems = pipeline.check_outputs(tmp_path, forbidden=[])
    assert sorted(problems) == sorted(["results/table.csv: missing", "results/table.md: missing",
                                       "figures/a.png: missing", "figures/dir: missing", "figures/b.png: missing"])
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    (tmp_path / "results" / "table.md").write_text("")
    (tmp_path / "figures" / "dir").mkdir(parents=True)
    (tmp_path / "figures" / "a.png").write_bytes(b"png")
    (tmp_path / "figures" / "b.png").write_bytes(b"png")
    assert sorted(pipeline.check_outputs(tmp_path, forbidden=[])) == ["figures/dir: folder holds no files",
                                                                      "results/table.md: empty file"]
    (tmp_path / "results" / "table.md").write_text("| a |\n")
    (tmp_path / "figures" / "dir" / "ok.png").write_bytes(b"png")
    (tmp_path / "figures" / "dir" / "empty.png").write_bytes(b"")
    assert pipeline.check_outputs(tmp_path, forbidden=[]) == ["figures/dir/empty.png: empty file"]
    (tmp_path / "figures" / "dir" / "empty.png").write_bytes(b"png")
    assert pipeline.check_outputs(tmp_path, forbidden=[]) == []


def test_published_files_must_not_name_the_machine_paths(tmp_path):
    data = "/srv/elsewhere/cs224n"  # a data folder outside the repository
    (tmp_path / "reports" / "executed").mkdir(parents=True)
    (tmp_path / "reports" / "html").mkdir()
    (tmp_path / "figures").mkdir()
    (tmp_path / "reports" / "executed" / "01.ipynb").write_text(json.dumps({"text": f"{data}/quora-dev.csv: dropped"}))
    (tmp_path / "reports" / "html" / "01.html").write_text(f"<p>run in {tmp_path}/results</p>")
    (tmp_path / "reports" / "html" / "02.html").write_text("<p>results/runs/x/seed1</p>")  # relative: fine
    (tmp_path / "figures" / "a.png").write_bytes(str(tmp_path).encode())  # a figure's content is not text
    forbidden = [str(tmp_path), data]
    assert pipeline.find_machine_paths(tmp_path, forbidden) == [
        f"reports/executed/01.ipynb: names the machine's path {data}",
        f"reports/html/01.html: names the machine's path {tmp_path}"]
    (tmp_path / "reports" / "executed" / "01.ipynb").unlink()
    (tmp_path / "reports" / "html" / "01.html").unlink()
    misplaced = tmp_path / "figures" / data.lstrip("/") / "a.png"  # a figure saved under the data path
    misplaced.parent.mkdir(parents=True)
    misplaced.write_bytes(b"png")
    assert pipeline.find_machine_paths(tmp_path, forbidden) == [
        f"figures{data}/a.png: names the machine's path {data}"]
    assert str(tmp_path.resolve()) in pipeline.machine_paths(tmp_path)


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


def test_layer_deps_are_folders_below_the_study_layer_and_files_in_it():
    assert pipeline.layer_deps(["mtlib/config.py", "mtlib/training/loop.py", "mtlib/training/runs.py",
                                "mtlib/study/figures.py", "mtlib/study/report.py"]) == [
        "mtlib/config.py", "mtlib/study/figures.py", "mtlib/study/report.py", "mtlib/training"]


# ---------------------------------------------------------------------------------------
# Published outputs against dvc.lock

@pytest.fixture
def published_project(tmp_path):
    """A git + DVC project whose one stage writes a published table and figure folder and a
    cached run, reproduced and committed."""
    env = tool_env()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"draw": {
        "cmd": "mkdir -p results figures/curves && echo '| a |' > results/table.md "
               "&& echo png > figures/curves/a.png && echo run > results/run.txt",
        "outs": [{"results/table.md": {"cache": False}}, {"figures/curves": {"cache": False}}, "results/run.txt"]}}}))
    run_tool(["git", "init", "-q"], tmp_path, env)
    run_tool(["dvc", "init", "-q"], tmp_path, env)
    run_tool(["git", "add", "-A"], tmp_path, env)
    run_tool(["git", "commit", "-q", "-m", "pipeline"], tmp_path, env)
    return tmp_path, env


def test_check_lock_passes_before_anything_is_published_and_after(published_project):
    root, env = published_project
    assert pipeline.check_lock(root) == []        # no dvc.lock, nothing committed: nothing to disagree
    run_tool(["dvc", "repro", "-q"], root, env)
    assert pipeline.check_lock(root) == []        # a fresh run, not committed: still unpublished
    run_tool(["git", "add", "-A"], root, env)
    run_tool(["git", "commit", "-q", "-m", "results"], root, env)
    assert pipeline.check_lock(root) == []        # published, as dvc.lock records it


def test_check_lock_finds_each_disagreement(published_project):
    root, env = published_project
    run_tool(["dvc", "repro", "-q"], root, env)
    run_tool(["git", "add", "-A"], root, env)
    run_tool(["git", "commit", "-q", "-m", "results"], root, env)
    (root / "results" / "table.md").write_text("| edited by hand |\n")
    (root / "figures" / "curves" / "b.png").write_text("a figure no stage writes any more\n")
    (root / "figures" / "old.png").write_text("stale\n")
    run_tool(["git", "add", "-A"], root, env)
    assert pipeline.check_lock(root) == ["results/table.md: modified, not what dvc.lock records",
                                         "figures/curves: modified, not what dvc.lock records",
                                         "figures/old.png: committed under a published folder, but no stage of "
                                         "dvc.yaml writes it"]
    run_tool(["git", "rm", "-q", "--cached", "results/table.md"], root, env)
    assert "not committed beside its other outputs" in pipeline.check_lock(root)[0]


def test_check_lock_lets_an_output_declared_since_the_locked_run_wait_for_the_next(published_project):
    root, env = published_project
    run_tool(["dvc", "repro", "-q"], root, env)
    run_tool(["git", "add", "-A"], root, env)
    run_tool(["git", "commit", "-q", "-m", "results"], root, env)
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    spec["stages"]["draw"]["outs"].append({"figures/new.png": {"cache": False}})
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec))
    assert pipeline.check_lock(root) == []  # dvc.lock has no record of it: nothing to disagree with
    run_tool(["git", "rm", "-q", "--cached", "results/table.md"], root, env)
    problems = pipeline.check_lock(root)  # what the lock does record is still checked
    assert len(problems) == 1 and problems[0].endswith("draw: ['results/table.md'] not committed beside its other outputs")


def test_committed_outputs_agree_with_dvc_lock():
    """The repository's own published report (the CI check): see pipeline.check_lock."""
    assert pipeline.check_lock(ROOT) == []


# ---------------------------------------------------------------------------------------
# The repository's own pipeline

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_sources_are_thin(path):
    assert pipeline.check_notebook(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_sources_are_python_in_jupytext_form(path):
    """Each source is valid Python (magics commented out) and exactly what jupytext writes
    for it, so saving it from Jupyter changes nothing but the edit."""
    text = path.read_text()
    ast.parse(text, str(path))
    assert jupytext.writes(jupytext.read(path), fmt="py:percent") == text


def _stage_notebook(stage) -> str:
    return re.search(r"notebooks/\S+\.py", stage["cmd"]).group(0)


def _stages():
    """dvc.yaml's stages, each as its definition (a foreach stage's `do`)."""
    return {name: stage.get("do", stage) for name, stage in DVC["stages"].items()}


def _notebook_stages():
    return {name: stage for name, stage in _stages().items() if "papermill" in stage["cmd"]}


def test_every_notebook_has_one_stage_and_numbers_are_in_order():
    notebooks = [_stage_notebook(stage) for stage in _notebook_stages().values()]
    assert notebooks == [f"notebooks/{p.name}" for p in NOTEBOOKS]
    for stage in _notebook_stages().values():
        notebook = _stage_notebook(stage)
        assert f"jupytext --to ipynb --output - {notebook} | papermill --cwd . -k python3" in stage["cmd"]
        assert "mkdir -p" in stage["cmd"]


def test_training_stages_import_from_the_study_layer_only_what_shows_a_run():
    """The training stages' notebooks show their runs (mtlib.study.finetuning, provenance);
    a figure, the report or the statistics change without retraining anything."""
    shows_a_run = {"mtlib/study/finetuning.py", "mtlib/study/provenance.py"}
    for name in ("finetune", "pal_after"):
        assert {d for d in _stages()[name]["deps"] if d.startswith("mtlib/study")} <= shows_a_run, name


def test_a_stage_depends_on_the_code_its_cmd_runs_and_that_codes_imports(tmp_path):
    (tmp_path / "mtlib" / "training").mkdir(parents=True)
    (tmp_path / "mtlib" / "study").mkdir()
    (tmp_path / "mtlib" / "training" / "loop.py").write_text("from mtlib import tasks\n")
    (tmp_path / "mtlib" / "tasks.py").write_text("")
    (tmp_path / "mtlib" / "study" / "draw.py").write_text("from mtlib.training import loop\n")
    (tmp_path / "notebooks").mkdir()
    _source(tmp_path / "notebooks" / "01_x.py", [nbformat.v4.new_code_cell("from mtlib.study import draw")])
    assert pipeline.stage_deps({"cmd": "python -m mtlib.study.draw --x y"}, tmp_path) == [
        "mtlib/study/draw.py", "mtlib/tasks.py", "mtlib/training"]
    assert pipeline.stage_deps({"cmd": "jupytext notebooks/01_x.py | papermill - out.ipynb"}, tmp_path) == [
        "notebooks/01_x.py", "mtlib/study/draw.py", "mtlib/tasks.py", "mtlib/training"]


def test_committed_dvc_yaml_is_the_generated_one():
    """dvc.yaml is generated (`python -m mtlib.study.pipeline dvc-yaml --write dvc.yaml`):
    after an edit of params.yaml's experiments, the template or a notebook's imports, rerun it."""
    assert (ROOT / "dvc.yaml").read_text() == pipeline.dvc_yaml(ROOT / "params.yaml", ROOT)


def test_training_stages_train_every_seed_and_pal_after_waits_for_its_start():
    for name in ("finetune", "pal_after"):
        assert "pipeline.seeds" in _stages()[name]["params"]  # one stage trains every seed
    assert DVC["stages"]["pal_after"]["foreach"] == {"pal_after": "advanced_model", "pal_after_adjusted": "pal_after",
                                                     "continued": "advanced_model", "continued_heads": "advanced_model"}
    assert "results/runs/${item}" in _stages()["pal_after"]["deps"]  # the runs it starts from


def test_an_experiment_declared_once_is_everywhere_and_removed_in_one_place(tmp_path):
    """Every list, the table's rows, the report's numbers and dvc.yaml follow params.yaml's
    one entry per experiment: removing `hidden_pcgrad` there removes it from all of them."""
    def everywhere(path):
        experiments = read_params(path)["experiments"]
        runs = pd.DataFrame([{"experiment": name, "seed": 1, "sst": 0.5, "para": 0.5, "sts": 0.5, "mean": 0.5,
                              "params_total": 1, "params_trainable": 1, "params_task_specific": 1,
                              "train_seconds": 1.0, "backbone": "b", "profile": "p"} for name in PARAMS["experiments"]])
        summary = report.summarise(runs[runs["experiment"].isin(experiments)], experiments)
        stages = yaml.safe_load(pipeline.dvc_yaml(path, ROOT))["stages"]
        pcgrad = next(c for claim in scorecard.CLAIMS for c in claim.comparisons if c.experiment == "hidden_pcgrad")
        fine_tuned, starts = pipeline.pipeline_experiments(path)
        return {"runs": {*fine_tuned, *starts}, "rows": list(summary["experiment"]),
                "labels": set(summary["label"].dropna()), "numbers": scorecard.report_difference(pcgrad, experiments),
                "stages": set(stages["finetune"]["matrix"]["experiment"]),
                "curves": {e for names in analysis.curve_groups(experiments, list(experiments)).values() for e in names}}

    before = everywhere(ROOT / "params.yaml")
    assert "hidden_pcgrad" in before["runs"] & set(before["rows"]) & before["stages"] & before["curves"]
    assert "BaseModel + 1 hidden + PCGrad" in before["labels"] and not math.isnan(before["numbers"][0])
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["experiments"]["hidden_pcgrad"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    after = everywhere(tmp_path / "params.yaml")
    assert after["runs"] == before["runs"] - {"hidden_pcgrad"}
    assert after["rows"] == [e for e in before["rows"] if e != "hidden_pcgrad"]
    assert after["labels"] == before["labels"] - {"BaseModel + 1 hidden + PCGrad"}
    assert math.isnan(after["numbers"][0])  # the scorecard has no report number for it any more
    assert after["stages"] == before["stages"] - {"hidden_pcgrad"}
    assert after["curves"] == before["curves"] - {"hidden_pcgrad"}
    assert "hidden_pcgrad" not in pipeline.dvc_yaml(tmp_path / "params.yaml", ROOT)


def test_the_best_rows_keep_their_checkpoints():
    """PAL-after starts from the AdvancedModel's weights, and its run is the one docs/library.md predicts with."""
    for experiment in ("advanced_model", "pal_after"):
        assert PARAMS["experiments"][experiment]["set"]["train"]["keep_checkpoint"] is True


def test_every_row_of_the_reports_table_2_is_one_experiment():
    labels = [report.report_row(entry)[0] for entry in PARAMS["experiments"].values()]
    assert len([label for label in labels if label]) == len({label for label in labels if label}) == 20
    for name in ("single_sst", "no_pretraining", "hidden_compromise_reference", "head_only"):  # not the report's
        assert report.report_row(PARAMS["experiments"][name])[0] is None


def _parameters(notebook_path) -> dict:
    notebook = pipeline.read_notebook(notebook_path)
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
    for name, item in (("finetune", "${item.experiment}"), ("pal_after", "${key}")):
        stage = _stages()[name]
        defaults = _parameters(ROOT / _stage_notebook(stage))
        outs = pipeline.declared_outputs(ROOT / "dvc.yaml")[name]
        assert f"{defaults['runs_dir']}/{item}" in outs
        assert f"{defaults['metrics_dir']}/{item}.json" in outs
        assert f"{defaults['curves_dir']}/{item}.csv" in outs
        assert f"experiments.{item}.set" in stage["params"]  # its overrides: a label edit retrains nothing
        assert defaults["seeds"] is None  # params.yaml's pipeline.seeds


def _cache(entry) -> bool:
    return isinstance(entry, str) or next(iter(entry.values())).get("cache", True)


def test_published_outputs_are_git_files_and_training_outputs_dvc_cached():
    """What the repository publishes (table, figures, report, the best model's config, scores and
    test predictions) is `cache: false`; every other output of a stage that trains (the best
    model's run folder among them) is in DVC's cache, which a remote's run-cache needs to share it."""
    published = ("figures/", "reports/html", "reports/index.html", "results/table.", "results/scorecard.md",
                 "results/best_model/config.yaml", "results/best_model/predictions", "results/best_model/scores.json")
    for name, stage in _stages().items():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            assert _cache(entry) is not path.startswith(published), (name, path)
            assert not path.startswith(published) or name in ("data", "results", "errors", "report", "best_model"), \
                (name, path)


def test_every_declared_figure_is_written_by_its_notebook():
    declared = pipeline.declared_outputs(ROOT / "dvc.yaml")
    for name, stage in _notebook_stages().items():
        source = (ROOT / _stage_notebook(stage)).read_text()
        for path in declared[name]:
            if path.startswith("figures/"):
                assert path.removeprefix("figures/") in source, (name, path)
    figures = [p for paths in declared.values() for p in paths if p.startswith("figures/")]
    assert len(figures) == len(set(figures)) >= 8


def test_finetune_notebook_runs_end_to_end_on_generated_data(tmp_path):
    """03_finetune as its stage runs it (jupytext, then papermill) on the smoke profile: a
    run folder per seed and DVC's flat exports."""
    from tests.helpers import write_task_files

    env = tool_env(MTLIB_DATA=str(write_task_files(tmp_path / "data")), PYTHONPATH=str(ROOT))  # this mtlib
    runs, metrics, curves = tmp_path / "runs", tmp_path / "metrics", tmp_path / "curves"
    command = (f"jupytext --to ipynb --output - {ROOT / 'notebooks' / '03_finetune.py'} | "
               f"papermill -k python3 --no-progress-bar - out.ipynb -p profile smoke -p experiment base_model "
               f"-p seeds 2 -p params {ROOT / 'params.yaml'} -p runs_dir {runs} -p metrics_dir {metrics} "
               f"-p curves_dir {curves}")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    run = runs / "base_model" / "seed2"
    assert json.loads((run / "metrics.json").read_text())["seed"] == 2
    assert sorted(p.name for p in (runs / "base_model").glob("seed*")) == ["seed2"]  # -p seeds 2: that seed only
    assert set(json.loads((metrics / "base_model.json").read_text())["seed2"]["dev"]) >= {"sst/acc", "mean"}
    assert set(pd.read_csv(curves / "base_model.csv")["seed"]) == {2}
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    markdown = [o["data"]["text/markdown"] for c in executed.cells if c.cell_type == "code"
                for o in c.get("outputs", []) if "text/markdown" in o.get("data", {})]
    assert markdown[0].startswith("**What was run**") and "| seeds | 2 |" in markdown[0]
    assert any(text.startswith("Dev score ") for text in markdown)
    assert any("image/png" in o.get("data", {}) for c in executed.cells if c.cell_type == "code"
               for o in c.get("outputs", []))


# ---------------------------------------------------------------------------------------
# Stages depend on what they use: dvc status after an edit

@pytest.fixture(scope="module")
def locked_pipeline(tmp_path_factory):
    """The repository's pipeline in a scratch DVC project whose dvc.lock records every stage
    as done, without running one: each output is a placeholder and `dvc commit` records the
    hashes of the deps (the real notebooks and mtlib) and of the placeholders."""
    from dvc.repo import Repo

    root = scratch_pipeline(tmp_path_factory.mktemp("locked"))
    run_tool(["dvc", "init", "-q", "--no-scm"], root)
    with Repo(str(root)) as repo:
        for out in (out for stage in repo.index.stages for out in stage.outs):
            path = root / out.def_path
            target = path if path.suffix else path / "placeholder"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("placeholder\n")
    run_tool(["dvc", "commit", "-f", "-q"], root)
    assert _stages_to_rerun(root) == set()
    return root


def _stages_to_rerun(root) -> set[str]:
    """The stages `dvc status` finds changed (their names: the keys of its JSON)."""
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, env=tool_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def _after_editing(root, module: str) -> set[str]:
    path = root / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        return _stages_to_rerun(root)
    finally:
        path.write_text(original)


def test_editing_a_figure_reruns_only_the_summary_stages(locked_pipeline):
    # The report stage follows when these two rewrite their executed notebooks.
    assert _after_editing(locked_pipeline, "mtlib/study/figures.py") == {"results", "errors"}


def test_editing_a_rows_label_retrains_nothing_and_its_overrides_one_stage(locked_pipeline):
    path = locked_pipeline / "params.yaml"
    original = path.read_text()
    try:
        path.write_text(original.replace('label: "+ 1 hidden layer"', 'label: "+ one hidden layer"'))
        assert _stages_to_rerun(locked_pipeline) == {"results", "report"}
        path.write_text(original.replace("      train: {sampler: annealed}\n    parent: base_annealed",
                                         "      train: {sampler: round_robin}\n    parent: base_annealed"))
        # hidden is one of the budget study's experiments (notebook 07): its stage follows
        assert _stages_to_rerun(locked_pipeline) == {"finetune@hidden", "budget", "results", "report"}
    finally:
        path.write_text(original)


def test_editing_the_training_loop_reruns_every_fine_tuning_stage(locked_pipeline):
    stages = _after_editing(locked_pipeline, "mtlib/training/loop.py")
    fine_tuned, starts = pipeline.pipeline_experiments(PARAMS)
    training = {f"finetune@{e}" for e in fine_tuned} | {f"pal_after@{e}" for e in starts}
    assert training <= stages


def test_the_pipeline_runs_every_experiment_and_its_table_has_a_row_for_each(tmp_path):
    """Every experiment of params.yaml trains in a stage of dvc.yaml (03 or 04), so the table the
    results stage writes from those runs (on smoke as on any profile) has a row for each."""
    from tests.test_report import write_run

    experiments = read_params(ROOT / "params.yaml")["experiments"]
    fine_tuned, starts = pipeline.pipeline_experiments(ROOT / "params.yaml")
    assert sorted([*fine_tuned, *starts]) == sorted(experiments)
    assert set(DVC["stages"]["finetune"]["matrix"]["experiment"]) == set(fine_tuned)
    assert DVC["stages"]["pal_after"]["foreach"] == starts
    for name in [*fine_tuned, *starts]:  # a run of each, as the stages leave them
        tasks = read_params(ROOT / "params.yaml")["experiments"][name]["set"].get("train", {}).get("tasks")
        scores = [0.5 if tasks is None or task in tasks else None for task in ("sst", "para", "sts")]
        write_run(tmp_path / "runs", name, 1, *scores, profile="smoke")
    summary = report.summarise(report.collect_runs(tmp_path / "runs"), experiments)
    assert list(summary["experiment"]) == list(experiments)  # a row each, in params.yaml's order
    not_run = [e for e in experiments if e not in set(summary["experiment"])]
    assert not_run == [] and "not run at this profile" not in report.table_markdown(summary, not_run=not_run)
