"""A run's record: metrics.json written and read in one place, in the key order runs have
always written, and the one score that counts."""
import json
import math

import pandas as pd
import pytest

from mtlib.record import (TRAINED_ORDER, RecordError, RunRecord, curve, folder_seed, read_history,
                          score_that_counts)

IDENTITY = {"backbone": "tiny-random", "profile": "smoke", "experiment": "x", "seed": 1, "machine": "CPU"}
DEV = {"sst/acc": 0.5, "para/acc": 0.6, "sts/pearson": 0.1, "mean": 0.4}


def keys(record, tmp_path, order=None):
    return list(record.write(tmp_path / "metrics.json", order))


def test_a_fine_tuning_run_keeps_its_key_order(tmp_path):
    record = RunRecord(dev=DEV, validation=DEV, best_update=4, updates=8, stopped_early=False,
                       eval_examples_per_second=100.0, train_seconds=1.5, train_examples_per_second=10.0,
                       train_tokens_per_second=90.0, params={"total": 3}, data={"loaded": {"sst": 2}},
                       precision="none", **IDENTITY)
    assert keys(record, tmp_path, TRAINED_ORDER) == [
        "dev", "validation", "best_update", "updates", "stopped_early", "eval_examples_per_second", "train_seconds",
        "train_examples_per_second", "train_tokens_per_second", "params", "data", "precision", *IDENTITY]


@pytest.mark.parametrize("fields, expected", [
    ({}, ["dev", "best_update", "updates", "stopped_early", "train_seconds", "data", "params", *IDENTITY]),  # random
    ({"validation": DEV, "head_epochs": {"sst": 2}, "precision": "none"},  # heads
     ["dev", "validation", "head_epochs", "best_update", "updates", "stopped_early", "train_seconds", "data",
      "params", "precision", *IDENTITY]),
    ({"dev_unadjusted": DEV, "eval_examples_per_second": 5.0, "precision": "none"},  # posthoc
     ["dev", "dev_unadjusted", "eval_examples_per_second", "best_update", "updates", "stopped_early",
      "train_seconds", "data", "params", "precision", *IDENTITY]),
])
def test_runs_without_updates_keep_their_key_order(tmp_path, fields, expected):
    record = RunRecord(dev=DEV, best_update=0, updates=0, stopped_early=False, train_seconds=0.0, data={},
                       params={}, **fields, **IDENTITY)
    assert keys(record, tmp_path) == expected


def test_a_record_reads_back_what_it_wrote(tmp_path):
    record = RunRecord(dev=DEV, validation=DEV, best_update=2, updates=4, train_seconds=1.0, **IDENTITY)
    written = record.write(tmp_path / "metrics.json", TRAINED_ORDER)
    assert json.loads((tmp_path / "metrics.json").read_text()) == written
    assert RunRecord.read(tmp_path / "metrics.json") == record
    assert RunRecord.from_json({"dev": {}, "unknown": 1}) == RunRecord(dev={})


@pytest.mark.parametrize("content, words", [("{", "malformed metrics.json"), ("[]", "no 'dev' object"),
                                            ('{"dev": 1}', "no 'dev' object")])
def test_a_file_that_holds_no_record_is_named(tmp_path, content, words):
    (tmp_path / "metrics.json").write_text(content)
    with pytest.raises(RecordError, match=words) as error:
        RunRecord.read(tmp_path / "metrics.json")
    assert str(tmp_path / "metrics.json") in str(error.value)


def test_the_score_that_counts_is_the_mean_or_the_trained_tasks_mean():
    assert score_that_counts(DEV) == 0.4
    assert score_that_counts({"sst/acc": 0.5, "para/acc": 0.7}) == pytest.approx(0.6)
    assert math.isnan(score_that_counts({}))
    assert RunRecord(dev={}, precision="bf16").precision_label == "bf16 autocast"


def test_the_curve_is_the_validation_score_that_counts():
    history = pd.DataFrame({"update": [1, 2], "epoch": [1, 1], "examples": [8, 16], "train_seconds": [0.1, 0.2],
                            "sst/acc": [0.2, 0.4], "para/acc": [0.6, 0.8]})
    assert curve(history).columns.tolist() == ["update", "epoch", "examples", "sst/acc", "para/acc", "validation_mean"]
    assert curve(history)["validation_mean"].tolist() == pytest.approx([0.4, 0.6])
    assert curve(history.assign(mean=[0.1, 0.2]))["validation_mean"].tolist() == [0.1, 0.2]


def test_folder_seed():
    assert folder_seed("results/runs/base_model/seed12") == 12
    assert folder_seed("results/runs/base_model/latest") is None


def test_a_history_is_read_with_its_experiment_and_seed(tmp_path):
    run = tmp_path / "hidden" / "seed2"
    run.mkdir(parents=True)
    assert read_history(run).empty and list(read_history(run).columns) == ["experiment", "seed"]
    pd.DataFrame({"examples": [10, 20], "mean": [0.3, 0.4]}).to_csv(run / "history.csv", index=False)
    history = read_history(run)
    assert list(history.columns) == ["experiment", "seed", "examples", "mean"]
    assert history["experiment"].unique().tolist() == ["hidden"] and history["seed"].unique().tolist() == [2]
    with pytest.raises(RecordError, match="not inside a seed<k> folder"):
        read_history(tmp_path / "hidden")


def test_a_continuations_history_is_read_on_its_starts_axis(tmp_path):
    """A run that starts from another's checkpoint (train.init_from) records the examples its
    start had seen there; read_history (what every curve is drawn from) counts on from them."""
    from mtlib.record import examples_at

    start = tmp_path / "advanced_model" / "seed3"
    start.mkdir(parents=True)
    pd.DataFrame({"update": [2, 4], "epoch": [1, 2], "examples": [40, 80], "mean": [0.5, 0.6]}).to_csv(
        start / "history.csv", index=False)
    after = tmp_path / "pal_after" / "seed3"
    after.mkdir(parents=True)
    pd.DataFrame({"update": [2, 4], "epoch": [1, 2], "examples": [30, 60], "start_examples": [80, 80],
                  "mean": [0.61, 0.62]}).to_csv(after / "history.csv", index=False)
    assert list(read_history(start)["examples"]) == [40, 80]
    assert list(read_history(after)["examples"]) == [110, 140] and list(curve(read_history(after))["examples"]) == [110, 140]
    assert examples_at(start, 4) == 80 and examples_at(after, 2) == 110  # a continuation of a continuation adds up
    assert examples_at(tmp_path / "none", 0) == 0  # a start that never trained (heads alone)
    with pytest.raises(RecordError, match="no evaluation at update 3"):
        examples_at(start, 3)


def test_installed_versions_are_what_is_installed_and_leave_out_what_is_not():
    from mtlib.record import installed_versions

    assert installed_versions(("pandas", "no-such-distribution-xyz")) == {"pandas": pd.__version__}
    assert RunRecord.from_json({"dev": {}, "packages": {"pandas": "1"}}).packages == {"pandas": "1"}
