"""Sharing runs across machines through a DVC remote and its run-cache (docs/pipeline.md: *Several
machines*): two clones each run a share of the stages that train and push them, a third
fetches and restores every one of them, running only the stages that draw the published
report from the data and the runs."""
import re

import pandas as pd
import pytest
import yaml

from mtlib.data.nltk_data import DEFAULT_TARGET, is_complete
from mtlib.study import pipeline
from tests.helpers import run_tool, scratch_pipeline, tool_env, write_task_files

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not is_complete(DEFAULT_TARGET),
                                 reason="NLTK data not built: run `python -m mtlib.data.nltk_data`")]

# Each machine's share of the stages that train (the head-pretraining notebook goes with the first).
SHARES = {"machine_a": ["pretraining", "finetune@base_model", "finetune@hidden"],
          "machine_b": ["finetune@hidden_compromise", "finetune@frozen_cosine", "budget"]}
# 05 compares hidden_compromise with hidden; the best model is compared with frozen_cosine
EXPERIMENTS = ["base_model", "hidden", "hidden_compromise", "frozen_cosine"]
# The stages with published (cache: false) outputs: DVC's run-cache cannot restore them from a
# remote, and they only read the data or finished runs.
DRAWING_STAGES = {"data", "results", "errors", "report"}
# The best model chooses from every machine's runs together: the assembler trains it, its
# dependency (results/runs) being whole there only.
ASSEMBLED_STAGES = DRAWING_STAGES | {"best_model"}


def origin_project(folder, remote):
    """A git repository of the pipeline on the smoke profile with one seed and three
    experiments, its default DVC remote a local folder (standing for S3 or SSH)."""
    project = scratch_pipeline(folder)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["pipeline"]["seeds"] = [1]
    for name, entry in params["experiments"].items():
        entry["run"] = name in EXPERIMENTS
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / "dvc.yaml").write_text(pipeline.dvc_yaml(project / "params.yaml", project))
    run_tool(["git", "init", "-q"], project)
    run_tool(["dvc", "init", "-q"], project)
    run_tool(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    run_tool(["git", "add", "-A"], project)
    run_tool(["git", "commit", "-q", "-m", "the study"], project)
    return project


def test_two_machines_share_their_runs_and_a_third_reruns_only_the_summary(tmp_path):
    env = tool_env(MTLIB_DATA=str(write_task_files(tmp_path / "data", n_train=60, n_dev=40)),
                   MTLIB_NLTK_DATA=str(DEFAULT_TARGET))
    origin = origin_project(tmp_path / "origin", tmp_path / "remote")
    for machine, targets in SHARES.items():
        run_tool(["git", "clone", "-q", str(origin), machine], tmp_path, env)
        run_tool(["dvc", "repro", *targets], tmp_path / machine, env)
        run_tool(["dvc", "push", "--run-cache"], tmp_path / machine, env)

    assembler = tmp_path / "assembler"
    run_tool(["git", "clone", "-q", str(origin), assembler.name], tmp_path, env)
    run_tool(["dvc", "fetch", "--run-cache"], assembler, env)  # the record of every pushed run
    log = run_tool(["dvc", "repro", "--pull"], assembler, env)  # --pull: a restored run's outputs

    ran = set(re.findall(r"Running stage '([^']+)'", log))
    restored = set(re.findall(r"Stage '([^']+)' is cached - skipping run", log))
    assert ran == ASSEMBLED_STAGES, log
    assert restored == {stage for targets in SHARES.values() for stage in targets}, log
    table = pd.read_csv(assembler / "results" / "table.csv")
    assert sorted(table["experiment"]) == sorted(EXPERIMENTS) and (table["n_seeds"] == 1).all()
    for machine, targets in SHARES.items():
        for experiment in (t.split("@")[1] for t in targets if t.startswith("finetune@")):
            run = f"results/runs/{experiment}/seed1/metrics.json"
            assert (assembler / run).read_bytes() == (tmp_path / machine / run).read_bytes()
    assert (assembler / "reports" / "html" / "03_finetune" / "hidden_compromise.html").stat().st_size > 0
