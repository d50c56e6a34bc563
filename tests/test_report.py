"""mtlib.study.report: run folders -> one row per experiment, checked against explicit formulas."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mtlib.study.report import (METRICS, MINILM_CAVEAT, REPORT_TABLE2, MetricsError, collect_histories,
                          collect_runs, summarise, write_table)
from mtlib.tasks import TASKS, metric_key

T_975_DF2 = 4.302652729911275   # Student t, 97.5% quantile, 2 degrees of freedom (tables)
T_975_DF4 = 2.7764451051977987  # ... 4 degrees of freedom


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


def test_report_rows_are_self_consistent():
    # a typo in the typed-in table would usually break mean = (sst + para + sts) / 3
    assert len(REPORT_TABLE2) == 20
    for label, (sst, para, sts, mean) in REPORT_TABLE2.items():
        assert abs((sst + para + sts) / 3 - mean) < 0.0006, label
    assert REPORT_TABLE2["BaseModel: BERT + sentence concat"] == (0.465, 0.731, 0.749, 0.648)


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
    with pytest.raises(MetricsError) as error:
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
    summary = summarise(collect_runs(tmp_path), {"base_model": "BaseModel: BERT + sentence concat"})
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
    # the baseline against itself: no difference, no spread
    assert row["sst_diff"] == 0.0 and row["sst_diff_ci95"] == 0.0


def test_paired_difference_is_the_mean_of_per_seed_differences_and_narrower(tmp_path):
    # seeds move both experiments together (a shared seed effect): pairing removes it
    base = {1: 0.50, 2: 0.60, 3: 0.70}
    other = {1: 0.52, 2: 0.63, 3: 0.71, 4: 0.99}  # seed 4 has no baseline partner
    for seed, value in base.items():
        write_run(tmp_path, "base_model", seed, value, 0.8, 0.8)
    for seed, value in other.items():
        write_run(tmp_path, "pcgrad", seed, value, 0.8, 0.8)
    summary = summarise(collect_runs(tmp_path), {}).set_index("experiment")
    row = summary.loc["pcgrad"]
    differences = [other[s] - base[s] for s in base]
    d_mean, _, d_half = mean_std_half(differences, T_975_DF2)
    assert row["n_paired"] == 3 and row["n_seeds"] == 4
    assert row["sst_diff"] == pytest.approx(d_mean) == pytest.approx(0.02)
    assert row["sst_diff_ci95"] == pytest.approx(d_half)
    # an unpaired (pooled, equal n) interval on the same three seeds
    _, s1, _ = mean_std_half(list(base.values()), 1)
    _, s2, _ = mean_std_half([other[s] for s in base], 1)
    unpaired = T_975_DF4 * math.sqrt(s1 ** 2 / 3 + s2 ** 2 / 3)
    assert row["sst_diff_ci95"] < unpaired / 5
    assert math.isnan(row["sst_report"])  # no report row for an unlabelled experiment


def test_one_seed_gives_a_mean_and_no_interval(tmp_path):
    write_run(tmp_path, "base_model", 1, 0.5, 0.7, 0.8)
    write_run(tmp_path, "base_model", 2, 0.6, 0.7, 0.8)
    write_run(tmp_path, "lstm", 2, 0.55, 0.75, 0.85)
    write_run(tmp_path, "sst_only", 7, 0.45)
    summary = summarise(collect_runs(tmp_path), {"lstm": "... + LSTM 256 + [CLS]"}).set_index("experiment")
    assert list(summary.index) == ["lstm", "base_model", "sst_only"]  # labelled ones first
    lstm = summary.loc["lstm"]
    assert lstm["n_seeds"] == 1 and lstm["sst_mean"] == 0.55
    assert math.isnan(lstm["sst_std"]) and math.isnan(lstm["sst_ci95"])
    assert lstm["sst_diff"] == pytest.approx(0.55 - 0.6) and math.isnan(lstm["sst_diff_ci95"])
    assert lstm["mean_report"] == REPORT_TABLE2["... + LSTM 256 + [CLS]"][3]
    only = summary.loc["sst_only"]
    assert only["sst_mean"] == 0.45 and math.isnan(only["para_mean"]) and math.isnan(only["mean_mean"])
    assert only["n_paired"] == 0 and math.isnan(only["sst_diff"])


def test_unknown_report_label_is_an_error(tmp_path):
    write_run(tmp_path, "base_model", 1, 0.5, 0.7, 0.8)
    with pytest.raises(KeyError, match="BaseModel: BERT \\+ sentence concat"):
        summarise(collect_runs(tmp_path), {"base_model": "Basemodel"})


def test_missing_baseline_leaves_differences_empty(tmp_path):
    write_run(tmp_path, "other", 1, 0.5, 0.7, 0.8)
    summary = summarise(collect_runs(tmp_path), {}, baseline="base_model")
    assert math.isnan(summary.loc[0, "mean_diff"]) and summary.loc[0, "n_paired"] == 0


@pytest.mark.parametrize("backbone, has_caveat", [("minilm", True), ("sentence-transformers/all-MiniLM-L6-v2", True),
                                                  ("bert-base-uncased", False), ("tiny-random", False)])
def test_table_states_the_minilm_caveat_only_for_minilm(tmp_path, backbone, has_caveat):
    for seed, value in ((1, 0.50), (2, 0.52), (3, 0.55)):
        write_run(tmp_path / "runs", "base_model", seed, value, 0.7, 0.8, backbone=backbone)
    summary = summarise(collect_runs(tmp_path / "runs"), {"base_model": "BaseModel: BERT + sentence concat"})
    write_table(summary, tmp_path / "results" / "table.csv", tmp_path / "results" / "table.md", caveat=None)
    md = (tmp_path / "results" / "table.md").read_text()
    assert (MINILM_CAVEAT in md) is has_caveat
    assert "quora" in MINILM_CAVEAT.lower() and "nli" in MINILM_CAVEAT.lower()
    mean, std, _ = mean_std_half([0.50, 0.52, 0.55], 1)
    assert f"{mean:.3f} ± {std:.3f} [0.465]" in md
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
    summary = summarise(collect_runs(tmp_path / "runs"), {"base_model": "BaseModel: BERT + sentence concat"})
    write_table(summary, tmp_path / "t.csv", tmp_path / "t.md")
    row = next(line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| no_pretraining"))
    assert row.split("|")[2].strip() == "–" and "nan" not in row
