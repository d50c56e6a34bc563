"""Inference from a finished run: re-scoring dev reproduces the run's own numbers, and
predicting a file in chunks gives the predictions the run wrote, whatever the chunk size."""
import json

import pandas as pd
import pytest

from mtlib.training.inference import evaluate_run, predict_file
from mtlib.training.loop import train
from tests.helpers import smoke_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("inference")
    cfg = smoke_config(tmp_path, "base_model", "train.keep_checkpoint=true", "train.predict_test=false")
    train(cfg, tmp_path / "run", progress=False)
    return tmp_path / "run", tmp_path / "data"


def test_evaluate_run_reproduces_the_runs_dev_metrics(run, tmp_path):
    folder, data = run
    results = evaluate_run(folder, data_dir=data, cache_dir=tmp_path / "cache")
    recorded = json.loads((folder / "metrics.json").read_text())["dev"]
    assert results["dev"] == pytest.approx(recorded)
    assert "test" not in results  # the test-student files carry no labels: predicted, not scored
    assert len(pd.read_csv(folder / "evaluation" / "sts-test.csv")) > 0
    for task in ("sst", "para", "sts"):
        again = pd.read_csv(folder / "evaluation" / f"{task}-dev.csv")
        written = pd.read_csv(folder / "predictions" / f"{task}-dev.csv")
        pd.testing.assert_frame_equal(again, written)


@pytest.mark.parametrize("chunk_rows", [1, 7, None])
def test_predict_file_in_chunks_matches_the_runs_dev_predictions(run, tmp_path, chunk_rows):
    folder, data = run
    out = tmp_path / "pred.csv"
    scores = predict_file(folder, "sts", data / "sts-dev.csv", out, chunk_rows=chunk_rows)
    written = pd.read_csv(folder / "predictions" / "sts-dev.csv")
    predicted = pd.read_csv(out).set_index("id").loc[written["id"]].reset_index()
    pd.testing.assert_frame_equal(predicted, written, check_exact=False, rtol=1e-5)
    assert "sts/pearson" in scores
