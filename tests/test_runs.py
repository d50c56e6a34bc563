"""Run folders: the typed run state, and a run flattened for DVC's metrics and plots."""
import json
import math

import pandas as pd
import pytest

from mtlib.training import runs
from mtlib.training.runs import RunState


def _run(tmp_path, dev, history=None):
    run = tmp_path / "exp" / "seed1"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"dev": dev, "updates": 4, "best_update": 2, "train_seconds": 1.5,
                                                  "params": {"total": 10}, "data": {"loaded": {"sst": 3}}}))
    if history is not None:
        history.to_csv(run / "history.csv", index=False)
    return run


def test_export_run_flattens_metrics_and_curve(tmp_path):
    history = pd.DataFrame({"update": [2, 4], "epoch": [1, 2], "examples": [64, 128], "train_seconds": [1.0, 2.0],
                            "sst/acc": [0.3, 0.4], "para/acc": [0.6, 0.7], "sts/pearson": [0.1, 0.2],
                            "mean": [1 / 3, 13 / 30]})
    run = _run(tmp_path, {"sst/acc": 0.4, "para/acc": 0.7, "sts/pearson": 0.2, "mean": 13 / 30}, history)
    flat = runs.export_run(run, tmp_path / "m" / "exp" / "seed1.json", tmp_path / "c" / "exp" / "seed1.csv")
    assert flat == json.loads((tmp_path / "m" / "exp" / "seed1.json").read_text())
    assert set(flat) == {"dev", "updates", "best_update", "train_seconds"}  # no params, no data counts
    curve = pd.read_csv(tmp_path / "c" / "exp" / "seed1.csv")
    assert curve.columns.tolist() == ["update", "epoch", "examples", "sst/acc", "para/acc", "sts/pearson", "dev_mean"]
    assert curve["dev_mean"].tolist() == pytest.approx(history["mean"].tolist())


def test_export_run_of_single_task_and_untrained_runs(tmp_path):
    single = _run(tmp_path / "single", {"sts/pearson": 0.5},
                  pd.DataFrame({"update": [1], "epoch": [1], "examples": [8], "sts/pearson": [0.5]}))
    runs.export_run(single, tmp_path / "s.json", tmp_path / "s.csv")
    assert pd.read_csv(tmp_path / "s.csv")["dev_mean"].tolist() == [0.5]
    untrained = _run(tmp_path / "random", {"sst/acc": 0.2})
    runs.export_run(untrained, tmp_path / "r.json", tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().strip() == "update,epoch,examples,dev_mean"


def test_run_state_survives_its_json_round_trip():
    state = RunState(update=3, examples=96, best_score=0.5, history=[{"update": 3, "mean": 0.5}])
    again = RunState.from_json(json.loads(json.dumps(state.to_json())))
    assert again == state
    assert RunState.from_json(json.loads(json.dumps(RunState().to_json()))).best_score == -math.inf
