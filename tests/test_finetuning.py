"""The fine-tuning notebooks' library: runs flattened for DVC's metrics and plots, the
tables of seeds, and the validation curves."""
import json
import math

import pandas as pd
import pytest

from mtlib.record import RunRecord
from mtlib.study import finetuning


def _run(tmp_path, dev, history=None, seed=1):
    run = tmp_path / "exp" / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"dev": dev, "updates": 4, "best_update": 2, "train_seconds": 1.5,
                                                  "params": {"total": 10}, "data": {"loaded": {"sst": 3}}}))
    if history is not None:
        history.to_csv(run / "history.csv", index=False)
    return run


def test_export_runs_flattens_metrics_and_curves_of_every_seed(tmp_path):
    history = pd.DataFrame({"update": [2, 4], "epoch": [1, 2], "examples": [64, 128], "train_seconds": [1.0, 2.0],
                            "sst/acc": [0.3, 0.4], "para/acc": [0.6, 0.7], "sts/pearson": [0.1, 0.2],
                            "mean": [1 / 3, 13 / 30]})
    one = _run(tmp_path, {"sst/acc": 0.4, "para/acc": 0.7, "sts/pearson": 0.2, "mean": 13 / 30}, history)
    three = _run(tmp_path, {"sst/acc": 0.5, "para/acc": 0.6, "sts/pearson": 0.3, "mean": 0.4}, history.head(1), seed=3)
    flat = finetuning.export_runs({1: one, 3: three}, tmp_path / "m" / "exp.json", tmp_path / "c" / "exp.csv")
    assert flat == json.loads((tmp_path / "m" / "exp.json").read_text())
    assert list(flat) == ["seed1", "seed3"]
    assert set(flat["seed1"]) == {"dev", "updates", "best_update", "train_seconds"}  # no params, no data counts
    assert flat["seed3"]["dev"]["sst/acc"] == 0.5
    curve = pd.read_csv(tmp_path / "c" / "exp.csv")
    assert curve.columns.tolist() == ["seed", "update", "epoch", "examples", "sst/acc", "para/acc", "sts/pearson",
                                      "validation_mean"]
    assert curve["seed"].tolist() == [1, 1, 3]
    assert curve["validation_mean"].tolist() == pytest.approx(history["mean"].tolist() + [1 / 3])


def test_curves_of_single_task_and_untrained_runs(tmp_path):
    single = _run(tmp_path / "single", {"sts/pearson": 0.5},
                  pd.DataFrame({"update": [1], "epoch": [1], "examples": [8], "sts/pearson": [0.5]}))
    finetuning.export_runs({1: single}, tmp_path / "s.json", tmp_path / "s.csv")
    assert pd.read_csv(tmp_path / "s.csv")["validation_mean"].tolist() == [0.5]
    untrained = _run(tmp_path / "random", {"sst/acc": 0.2})
    finetuning.export_runs({1: untrained}, tmp_path / "r.json", tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().strip() == "seed,update,epoch,examples,validation_mean"


def test_seeds_table_has_a_row_per_seed():
    records = [RunRecord(seed=2, dev={"sst/acc": 0.5, "mean": 0.5}, updates=4, best_update=2, train_seconds=3.0,
                         train_examples_per_second=10.0, precision="bf16"),
               RunRecord(seed=1, dev={"sst/acc": 0.2, "mean": 0.2}, updates=0)]  # the random predictor
    table = finetuning.seeds_table(records)
    assert table.index.tolist() == [2, 1] and table.index.name == "seed"
    assert table.loc[2, "dev sst/acc"] == 0.5 and table.loc[2, "precision"] == "bf16 autocast"
    assert table.loc[1, "precision"] == "–" and math.isnan(table.loc[1, "examples/s"])


def test_run_summary_for_multitask_single_task_and_random_runs():
    multi = RunRecord(dev={"sst/acc": 0.5, "para/acc": 0.8, "sts/pearson": 0.7, "mean": 2 / 3}, updates=30,
                      best_update=20, train_seconds=12.0, train_examples_per_second=40.0,
                      params={"total": 100, "trainable": 60})
    summary = finetuning.run_summary(multi)
    assert summary["dev_score"] == pytest.approx(2 / 3) and summary["curve_metric"] == "mean"
    assert summary["params_trainable"] == 60 and summary["examples_per_second"] == 40.0
    single = finetuning.run_summary(RunRecord(dev={"sts/pearson": 0.6}))
    assert single["dev_score"] == pytest.approx(0.6) and single["curve_metric"] == "sts/pearson"
    random = finetuning.run_summary(RunRecord(dev={"sst/acc": 0.2}, updates=0, train_seconds=0.0))
    assert math.isnan(random["examples_per_second"]) and random["params_total"] == 0
    assert finetuning.run_scores(RunRecord(dev={"sst/acc": 0.5}, test={"sst/acc": 0.4}, updates=3, params={"a": 1})) == {
        "dev": {"sst/acc": 0.5}, "test": {"sst/acc": 0.4}, "updates": 3}


def test_the_setup_says_what_a_matched_or_heads_only_or_continued_run_trains():
    from mtlib.config import load_config
    from tests.helpers import ROOT

    def setup(name):
        return finetuning.describe_setup(load_config(ROOT / "params.yaml", name, "smoke"), [1])

    assert "trains only the sst batches that a random sampler over sst, para, sts draws" in setup("single_sst_matched")
    assert "only the heads train" in setup("continued_heads") and "only the heads" not in setup("continued")
    assert "starts from `results/runs/advanced_model/seed{seed}`" in setup("continued")
    assert setup("base_model").endswith("micro-batches at learning rate 0.0001.")
