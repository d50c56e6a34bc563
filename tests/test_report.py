"""mtlib.study.report: run folders -> one row per experiment, checked against explicit formulas."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mtlib.config import read_params
from mtlib.record import RecordError
from mtlib.study.report import (METRICS, MINILM_CAVEAT, bootstrap_runs, collect_histories, collect_predictions,
                                collect_runs, interval_sources, report_row,
                                summarise, table_markdown, write_table)
from mtlib.tasks import TASKS, metric_key
from tests.helpers import ROOT, dev_labels, write_predicted_run, write_task_files

T_975_DF2 = 4.302652729911275   # Student t, 97.5% quantile, 2 degrees of freedom (tables)
T_975_DF4 = 2.7764451051977987  # ... 4 degrees of freedom
BASE_REPORT = {"label": "BaseModel: BERT + sentence concat", "sst": 0.465, "para": 0.731, "sts": 0.749, "mean": 0.648}
BASE_ROW = {"base_model": {"report": BASE_REPORT, "parent": None}}


def write_run(root, experiment, seed, sst, para=None, sts=None, backbone="bert-base-uncased",
              profile="paper", train_seconds=100.0, task_specific=(3845, 769, 769)):
    """A metrics.json as mtlib.training.loop writes it; tasks passed as None are left out of 'dev'."""
    dev = {k: v for k, v in (("sst/acc", sst), ("para/acc", para), ("sts/pearson", sts)) if v is not None}
    if len(dev) == 3:
        dev["mean"] = (sst + para + sts) / 3
    folder = root / experiment / f"seed{seed}"
    folder.mkdir(parents=True)
    metrics = {"dev": dev, "best_update": 10, "updates": 12, "stopped_early": False,
               "eval_examples_per_second": 50.0, "train_seconds": train_seconds,
               "train_examples_per_second": 20.0, "train_tokens_per_second": 500.0,
               "params": {"total": 1000 + sum(task_specific), "trainable": 1000 + sum(task_specific),
                          "shared": 1000, "task_specific": dict(zip(("sst", "para", "sts"), task_specific))},
               "backbone": backbone, "profile": profile, "experiment": experiment, "seed": seed}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def mean_std_half(values, t):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std, t * std / math.sqrt(n)


def test_report_rows_in_params_are_self_consistent():
    # a typo in the typed-in table would usually break mean = (sst + para + sts) / 3
    rows = [report_row(entry) for entry in read_params(ROOT / "params.yaml")["experiments"].values()]
    for label, (sst, para, sts, mean) in rows:
        assert label is None or abs((sst + para + sts) / 3 - mean) < 0.0006, label
    assert ("BaseModel: BERT + sentence concat", (0.465, 0.731, 0.749, 0.648)) in rows


def test_metric_keys_match_the_tasks():
    assert [METRICS[t] for t in TASKS] == [metric_key(t) for t in TASKS]


def test_collect_runs_reads_every_folder_and_skips_hidden_copies(tmp_path):
    write_run(tmp_path, "b", 2, 0.5, 0.7, 0.8)
    write_run(tmp_path, "a", 1, 0.4, 0.6, 0.7)
    write_run(tmp_path, "single", 1, 0.45)
    write_run(tmp_path / "b", ".seed1.old", 1, 0.1, 0.1, 0.1)  # a left-over atomic_dir copy
    runs = collect_runs(tmp_path)
    assert list(runs["experiment"]) == ["a", "b", "single"]
    assert runs.loc[0, "sst"] == 0.4 and runs.loc[0, "mean"] == pytest.approx((0.4 + 0.6 + 0.7) / 3)
    assert runs.loc[0, "params_task_specific"] == 3845 + 769 + 769
    assert runs.loc[2, ["para", "sts", "mean"]].isna().all()
    assert runs.loc[1, "backbone"] == "bert-base-uncased"


@pytest.mark.parametrize("content, words", [
    ("{not json", "malformed"),
    ('{"seed": 1}', "dev"),
    ('{"dev": {"sst/acc": "high"}, "seed": 1}', "sst/acc"),
    ('{"dev": {"sst/acc": 0.5}, "seed": "one"}', "seed"),
])
def test_malformed_metrics_error_names_the_file(tmp_path, content, words):
    write_run(tmp_path, "good", 1, 0.5, 0.5, 0.5)
    bad = tmp_path / "broken" / "seed3"
    bad.mkdir(parents=True)
    (bad / "metrics.json").write_text(content)
    with pytest.raises(RecordError) as error:
        collect_runs(tmp_path)
    assert str(bad / "metrics.json") in str(error.value) and words in str(error.value)


def test_duplicate_experiment_and_seed_is_an_error(tmp_path):
    write_run(tmp_path, "a", 1, 0.5, 0.5, 0.5)
    folder = write_run(tmp_path, "copy", 1, 0.5, 0.5, 0.5)
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps({**metrics, "experiment": "a"}))
    with pytest.raises(ValueError, match="same experiment and seed"):
        collect_runs(tmp_path)


def test_summarise_matches_hand_computed_mean_std_and_interval(tmp_path):
    sst = [0.50, 0.52, 0.55]
    for seed, value in enumerate(sst, start=1):
        write_run(tmp_path, "base_model", seed, value, 0.70, 0.80 + seed / 100, train_seconds=10.0 * seed)
    summary = summarise(collect_runs(tmp_path), BASE_ROW)
    row = summary.iloc[0]
    mean, std, half = mean_std_half(sst, T_975_DF2)
    assert row["n_seeds"] == 3 and row["label"] == "BaseModel: BERT + sentence concat"
    assert row["sst_mean"] == pytest.approx(mean)
    assert row["sst_std"] == pytest.approx(std)
    assert row["sst_ci95"] == pytest.approx(half)
    assert row["para_std"] == pytest.approx(0.0, abs=1e-12) and row["para_ci95"] == pytest.approx(0.0, abs=1e-12)
    means = [(s + 0.70 + 0.80 + k / 100) / 3 for k, s in enumerate(sst, start=1)]
    assert row["mean_mean"] == pytest.approx(sum(means) / 3)
    assert row["mean_ci95"] == pytest.approx(mean_std_half(means, T_975_DF2)[2])
    report = (row["sst_report"], row["para_report"], row["sts_report"], row["mean_report"])
    assert report == (0.465, 0.731, 0.749, 0.648)
    assert row["train_seconds"] == pytest.approx(20.0)
    assert row["params_task_specific"] == 3845 + 769 + 769
    assert (row["backbone"], row["profile"]) == ("bert-base-uncased", "paper")
    # no parent: no difference; no dev predictions: no interval beyond the t-interval
    assert row["parent"] is None and row["n_paired"] == 0 and math.isnan(row["sst_diff"])
    assert math.isnan(row["sst_lo"]) and pd.isna(row["sst_resolved"])


def test_each_delta_is_taken_against_its_parent_paired_by_seed(tmp_path):
    # hidden builds on base_model, pcgrad on hidden: pcgrad's Δ is against hidden, not base_model.
    # Seeds move every experiment together (a shared seed effect): pairing removes it.
    base = {1: 0.40, 2: 0.50, 3: 0.60}
    hidden = {1: 0.50, 2: 0.60, 3: 0.70, 5: 0.10}      # seed 5 has no partner in pcgrad
    pcgrad = {1: 0.52, 2: 0.63, 3: 0.71, 4: 0.99}      # seed 4 has no partner in hidden
    for name, values in (("base_model", base), ("hidden", hidden), ("pcgrad", pcgrad)):
        for seed, value in values.items():
            write_run(tmp_path, name, seed, value, 0.8, 0.8)
    rows = {**BASE_ROW, "hidden": {"report": None, "parent": "base_model"}, "pcgrad": {"parent": "hidden"}}
    summary = summarise(collect_runs(tmp_path), rows).set_index("experiment")
    row = summary.loc["pcgrad"]
    assert row["parent"] == "hidden" and row["n_paired"] == 3 and row["n_seeds"] == 4
    # by hand: (0.52 - 0.50 + 0.63 - 0.60 + 0.71 - 0.70) / 3 = 0.02, sd of (0.02, 0.03, 0.01) = 0.01
    assert row["sst_diff"] == pytest.approx(0.02)
    assert row["sst_diff_std"] == pytest.approx(0.01)
    assert row["sst_diff_ci95"] == pytest.approx(T_975_DF2 * 0.01 / math.sqrt(3))
    assert row["mean_diff"] == pytest.approx(0.02 / 3)
    assert summary.loc["hidden", "sst_diff"] == pytest.approx(0.10) and summary.loc["hidden", "n_paired"] == 3
    # an unpaired (pooled, equal n) interval on the same three seeds is far wider
    _, s1, _ = mean_std_half([hidden[s] for s in base], 1)
    _, s2, _ = mean_std_half([pcgrad[s] for s in base], 1)
    assert row["sst_diff_ci95"] < T_975_DF4 * math.sqrt(s1 ** 2 / 3 + s2 ** 2 / 3) / 5
    assert math.isnan(row["sst_report"])  # no report row for an unlabelled experiment


def test_one_seed_gives_a_mean_and_no_interval(tmp_path):
    write_run(tmp_path, "hidden", 1, 0.5, 0.7, 0.8)
    write_run(tmp_path, "hidden", 2, 0.6, 0.7, 0.8)
    write_run(tmp_path, "lstm", 2, 0.55, 0.75, 0.85)
    write_run(tmp_path, "sst_only", 7, 0.45)
    lstm_report = {"label": "... + LSTM 256 + [CLS]", "sst": 0.500, "para": 0.842, "sts": 0.872, "mean": 0.738}
    rows = {"lstm": {"report": lstm_report, "parent": "hidden"}, "hidden": {}}
    summary = summarise(collect_runs(tmp_path), rows).set_index("experiment")
    assert list(summary.index) == ["lstm", "hidden", "sst_only"]  # rows first, then the rest
    lstm = summary.loc["lstm"]
    assert lstm["n_seeds"] == 1 and lstm["sst_mean"] == 0.55
    assert math.isnan(lstm["sst_std"]) and math.isnan(lstm["sst_ci95"])
    assert lstm["sst_diff"] == pytest.approx(0.55 - 0.6) and math.isnan(lstm["sst_diff_ci95"])
    assert lstm["mean_report"] == 0.738 and lstm["label"] == "... + LSTM 256 + [CLS]"
    only = summary.loc["sst_only"]
    assert only["sst_mean"] == 0.45 and math.isnan(only["para_mean"]) and math.isnan(only["mean_mean"])
    assert only["n_paired"] == 0 and math.isnan(only["sst_diff"])


def test_a_parent_that_did_not_run_leaves_the_delta_empty(tmp_path):
    write_run(tmp_path, "other", 1, 0.5, 0.7, 0.8)
    summary = summarise(collect_runs(tmp_path), {"base_model": {}, "other": {"parent": "base_model"}})
    assert math.isnan(summary.loc[0, "mean_diff"]) and summary.loc[0, "n_paired"] == 0
    assert "| other | base_model | 0 | – | – | – | – |" in table_markdown(summary)


@pytest.mark.parametrize("backbone, has_caveat", [("minilm", True), ("sentence-transformers/all-MiniLM-L6-v2", True),
                                                  ("bert-base-uncased", False), ("tiny-random", False)])
def test_table_states_the_minilm_caveat_only_for_minilm(tmp_path, backbone, has_caveat):
    for seed, value in ((1, 0.50), (2, 0.52), (3, 0.55)):
        write_run(tmp_path / "runs", "base_model", seed, value, 0.7, 0.8, backbone=backbone)
    summary = summarise(collect_runs(tmp_path / "runs"), BASE_ROW)
    write_table(summary, tmp_path / "results" / "table.csv", tmp_path / "results" / "table.md", caveat=None)
    md = (tmp_path / "results" / "table.md").read_text()
    assert (MINILM_CAVEAT in md) is has_caveat
    assert "quora" in MINILM_CAVEAT.lower() and "nli" in MINILM_CAVEAT.lower()
    mean, std, _ = mean_std_half([0.50, 0.52, 0.55], 1)
    assert f"| {mean:.3f} ± {std:.3f} |" in md and "| 0.465 / 0.731 / 0.749 / 0.648 |" in md
    assert "BaseModel: BERT + sentence concat" in md
    table = pd.read_csv(tmp_path / "results" / "table.csv")
    assert table.loc[0, "sst_mean"] == pytest.approx(mean) and table.loc[0, "n_seeds"] == 3
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["table.csv", "table.md"]  # no temp files


def test_an_explicit_caveat_is_written_too(tmp_path):
    write_run(tmp_path / "runs", "base_model", 1, 0.5, 0.7, 0.8, backbone="minilm")
    summary = summarise(collect_runs(tmp_path / "runs"))
    write_table(summary, tmp_path / "t.csv", tmp_path / "t.md", caveat="Quora subsampled to 20,000 pairs.")
    md = (tmp_path / "t.md").read_text()
    assert "Quora subsampled to 20,000 pairs." in md and MINILM_CAVEAT in md
    assert md.count(MINILM_CAVEAT) == 1


def test_collect_histories_is_long_form(tmp_path):
    for seed in (1, 2):
        folder = write_run(tmp_path, "base_model", seed, 0.5, 0.7, 0.8)
        pd.DataFrame({"update": [1, 2], "epoch": [1, 2], "examples": [32, 64], "train_seconds": [1.0, 2.0],
                      "sst/acc": [0.3, 0.4], "para/acc": [0.6, 0.7], "sts/pearson": [0.1, 0.2],
                      "mean": [1 / 3, 1.3 / 3]}).to_csv(folder / "history.csv", index=False)
    histories = collect_histories(tmp_path)
    assert list(histories.columns[:3]) == ["experiment", "seed", "update"]
    assert len(histories) == 4 and set(histories["seed"]) == {1, 2}
    assert np.allclose(histories.groupby("examples")["sst/acc"].mean(), [0.3, 0.4])


def test_an_empty_folder_gives_an_empty_table_and_a_missing_one_an_error(tmp_path):
    summary = summarise(collect_runs(tmp_path))
    assert summary.empty and "mean_ci95" in summary.columns
    write_table(summary, tmp_path / "t.csv", tmp_path / "t.md")
    assert "| experiment |" in (tmp_path / "t.md").read_text()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        collect_runs(tmp_path / "nowhere")


def test_rows_without_a_report_label_show_a_dash_not_nan(tmp_path):
    write_run(tmp_path / "runs", "base_model", 1, 0.5, 0.7, 0.8)
    write_run(tmp_path / "runs", "no_pretraining", 1, 0.3, 0.6, 0.1)
    summary = summarise(collect_runs(tmp_path / "runs"), BASE_ROW)
    write_table(summary, tmp_path / "t.csv", tmp_path / "t.md")
    row = next(line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| no_pretraining"))
    assert row.split("|")[2].strip() == "–" and "nan" not in row


# ---------------------------------------------------------------------------------------
# Dev predictions and the bootstrap

def predicted(rng, data, right: float) -> dict:
    """Predictions for every task: a share ``right`` of SST and Quora labels kept (the rest
    guessed), STS labels plus noise that shrinks as ``right`` grows."""
    out = {}
    for task in TASKS:
        _, labels = dev_labels(data, task)
        if TASKS[task].integer_labels:
            guesses = rng.integers(0, TASKS[task].label_max + 1, len(labels))
            out[task] = np.where(rng.random(len(labels)) < right, labels, guesses)
        else:
            out[task] = np.clip(labels + rng.normal(0, 3 * (1 - right), len(labels)), 0, 5)
    return out


@pytest.fixture
def study(tmp_path):
    """Four seeds of a parent, a clearly better child and a child with the parent's predictions."""
    data = write_task_files(tmp_path / "data", n_train=4, n_dev=120, n_test=2)
    rng = np.random.default_rng(0)
    for seed in range(1, 5):
        base = predicted(rng, data, 0.4)
        write_predicted_run(tmp_path / "runs", "base_model", seed, data, base)
        write_predicted_run(tmp_path / "runs", "same", seed, data, base)
        write_predicted_run(tmp_path / "runs", "better", seed, data, predicted(rng, data, 0.95))
    rows = {**BASE_ROW, "better": {"parent": "base_model"}, "same": {"parent": "base_model"}}
    return tmp_path, data, rows


def test_the_summary_holds_intervals_of_seeds_and_dev_sample_and_flags_resolved_deltas(study):
    root, _, rows = study
    runs = collect_runs(root / "runs")
    replicates = bootstrap_runs(runs, replicates=400)
    summary = summarise(runs, rows, replicates).set_index("experiment")
    for metric in METRICS:
        base = summary.loc["base_model"]
        assert base[f"{metric}_lo"] < base[f"{metric}_mean"] < base[f"{metric}_hi"]
        assert base[f"{metric}_dev_lo"] < base[f"{metric}_mean"] < base[f"{metric}_dev_hi"]
        better, same = summary.loc["better"], summary.loc["same"]
        assert better[f"{metric}_resolved"] and better[f"{metric}_diff_lo"] > 0
        # the same predictions: Δ is 0 on every seed and every resample, so [0, 0] holds 0
        assert same[f"{metric}_diff"] == 0 and same[f"{metric}_diff_lo"] == same[f"{metric}_diff_hi"] == 0
        assert not same[f"{metric}_resolved"]
    md = table_markdown(summary.reset_index())
    better = summary.loc["better"]
    interval = f"[{better['mean_diff_lo']:+.3f}, {better['mean_diff_hi']:+.3f}]"
    assert f"**{better['mean_diff']:+.3f} {interval} resolved**" in md
    assert "+0.000 [+0.000, +0.000] not resolved" in md
    base = summary.loc["base_model"]
    assert f"{base['sst_mean']:.3f} ± {base['sst_std']:.3f} [{base['sst_lo']:.3f}, {base['sst_hi']:.3f}]" in md
    assert "| better | base_model | 4 |" in md


def test_the_bootstrap_is_reproducible_and_its_scores_are_the_runs_own(study):
    root, data, _ = study
    runs = collect_runs(root / "runs")
    first, again = bootstrap_runs(runs, replicates=50), bootstrap_runs(runs, replicates=50)
    assert all(np.array_equal(first.boot[m], again.boot[m]) for m in METRICS)
    for row in runs.itertuples():
        column = first.runs.index((row.experiment, row.seed))
        assert [first.point[m][column] for m in METRICS] == pytest.approx([getattr(row, m) for m in METRICS])
    labels, _ = collect_predictions(runs)
    assert len(labels["sst"]) == 120 and np.array_equal(np.sort(labels["sst"]), np.sort(dev_labels(data, "sst")[1]))


def test_predictions_that_cannot_be_trusted_are_errors_naming_the_file(study):
    root, data, _ = study
    path = root / "runs" / "better" / "seed2" / "predictions" / "sst-dev.csv"
    original = pd.read_csv(path, dtype={"id": str})
    cases = [(original.iloc[:-1], "scored on 119 dev rows"),
             (original.assign(id=original["id"].where(original.index > 0, "nowhere")), "'nowhere'"),
             (original.assign(sentiment=(original["sentiment"] + 1) % 5), "metrics.json says sst/acc")]
    for frame, words in cases:
        frame.to_csv(path, index=False)
        with pytest.raises(ValueError) as error:
            collect_predictions(collect_runs(root / "runs"))
        assert str(path) in str(error.value) and words in str(error.value)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="missing, but metrics.json has a dev sst/acc"):
        collect_predictions(collect_runs(root / "runs"))


def test_interval_sources(study):
    root, _, rows = study
    runs = collect_runs(root / "runs")
    summary = summarise(runs, rows, bootstrap_runs(runs, replicates=200))
    sources = interval_sources(summary, "sst")
    base = summary.set_index("experiment").loc["base_model"]
    assert sources.loc["base_model", "both"] == pytest.approx((base["sst_hi"] - base["sst_lo"]) / 2)
    assert sources.loc["base_model", "seeds"] == base["sst_ci95"]
    assert sources.loc["same", "delta_both"] == 0 and sources.loc["better", "delta_dev_sample"] > 0


def test_sts_predictions_rounded_to_four_decimals_still_match_their_metrics(tmp_path):
    # training writes STS predictions to 4 decimals; for a nearly constant predictor (the
    # smoke profile's tiny random BERT) that moves r by ~1e-3, which must not be an error
    data = write_task_files(tmp_path / "data", n_train=4, n_dev=200, n_test=2)
    _, labels = dev_labels(data, "sts")
    rng = np.random.default_rng(3)
    exact = 0.2 + 0.0005 * (labels / 5 + rng.normal(0, 1, len(labels)))
    folder = write_predicted_run(tmp_path / "runs", "base_model", 1, data, {"sts": exact})
    path = folder / "predictions" / "sts-dev.csv"
    pd.read_csv(path).assign(similarity=lambda f: f["similarity"].round(4)).to_csv(path, index=False)
    runs = collect_runs(tmp_path / "runs")
    aligned, predictions = collect_predictions(runs)
    rounded = TASKS["sts"].score(predictions["sts"][("base_model", 1)], aligned["sts"])
    assert 1e-4 < abs(rounded - runs.loc[0, "sts"]) < 0.01


def test_the_table_names_the_rows_a_profile_did_not_run(tmp_path):
    write_run(tmp_path, "other", 1, 0.5, 0.7, 0.8)
    summary = summarise(collect_runs(tmp_path), {"base_model": {}, "other": {"parent": "base_model"}})
    assert "not run at this profile" not in table_markdown(summary)
    assert "not run at this profile (to fit its time budget): base_model, pal_start." in table_markdown(
        summary, not_run=["base_model", "pal_start"])


def test_score_tolerance_bounds_what_four_decimal_rounding_can_do():
    from mtlib.study.report import ROUNDING, SCORE_TOLERANCE, score_tolerance

    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 500)
    assert score_tolerance(True, labels) == 1e-9
    for spread in (2.0, 1e-2, 1e-3, 2e-4):  # a trained model, then ever more nearly constant ones
        raw = 2.5 + spread * (labels / 5 + rng.normal(0, 0.3, 500))
        written = np.round(raw, 4)
        moved = abs(TASKS["sts"].score(written, labels) - TASKS["sts"].score(raw, labels))
        assert moved <= score_tolerance(False, written) - SCORE_TOLERANCE + 1e-12
    trained = np.round(labels + rng.normal(0, 1, 500), 4)
    assert score_tolerance(False, trained) < SCORE_TOLERANCE + 1e-3  # still tight where it matters
    misjoined = TASKS["sts"].score(np.roll(trained, 1), labels)
    assert abs(misjoined - TASKS["sts"].score(trained, labels)) > score_tolerance(False, trained)
    assert score_tolerance(False, np.full(5, 2.0)) == math.inf and ROUNDING == 5e-5
