"""mtlib.study.analysis: small hand-made inputs, results checked against numbers worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from mtlib.study import analysis
from mtlib.data.nltk_data import DEFAULT_TARGET, is_complete
from tests.helpers import smoke_config, write_task_files


# ---------------------------------------------------------------------------------------
# Classes and lengths

def test_class_counts_list_every_class_and_bin_sts_scores():
    assert analysis.class_counts([0, 0, 4, 2], "sst").tolist() == [2, 0, 1, 0, 1]
    assert analysis.class_counts([1, 1, 1], "para").tolist() == [0, 3]
    sts = analysis.class_counts([0.0, 0.99, 1.0, 4.2, 5.0], "sts")
    assert sts.index.astype(str).tolist() == ["[0, 1)", "[1, 2)", "[2, 3)", "[3, 4)", "[4, 5]"]
    assert sts.tolist() == [2, 1, 0, 0, 2]  # 5.0 belongs to the last bin


def test_class_table_shares_sum_to_one_per_task():
    frames = {"sst": pd.DataFrame({"sentiment": [0, 1, 1, 3]}),
              "para": pd.DataFrame({"is_duplicate": [0, 1, 1]}),
              "sts": pd.DataFrame({"similarity": [0.5, 2.5, 4.5, 5.0]})}
    table = analysis.class_table(frames)
    assert table.groupby("task")["share"].sum().round(12).eq(1).all()
    sst = table[table["task"] == "sst"].set_index("class")
    assert sst.loc["somewhat negative", "count"] == 2 and sst.loc["positive", "count"] == 0
    assert table[table["task"] == "para"].set_index("class").loc["duplicate", "share"] == pytest.approx(2 / 3)


def test_length_summary():
    summary = analysis.length_summary({"sst": np.arange(1, 101)})
    assert summary.loc["sst", "n"] == 100
    assert summary.loc["sst", "mean"] == pytest.approx(50.5)
    assert summary.loc["sst", "p98"] == pytest.approx(np.percentile(np.arange(1, 101), 98))
    assert summary.loc["sst", "max"] == 100


def test_length_filter_counts_match_the_filter():
    lengths = {"sst": np.r_[np.arange(1, 99), 500, 400], "sts": [3, 3, 3]}
    counts = analysis.length_filter_counts(lengths, 0.02)
    assert counts.loc["sst"].to_dict() == {"rows": 100, "dropped": 2, "kept": 98, "longest_kept": 98,
                                           "shortest_dropped": 400}
    assert counts.loc["sts", "dropped"] == 0 and math.isnan(counts.loc["sts", "shortest_dropped"])


# ---------------------------------------------------------------------------------------
# Augmentation

def test_augmentation_counts_split_original_and_new_rows():
    ids = ["a", "b", "c", "a-aug1", "a-aug2", "b-aug1"]
    labels = [0, 0, 1, 0, 0, 0]
    assert analysis.is_augmented(ids).tolist() == [False, False, False, True, True, True]
    counts = analysis.augmentation_counts(ids, labels, "para")
    assert counts["name"].tolist() == ["not duplicate", "duplicate"]
    assert counts[["before", "after", "added"]].values.tolist() == [[2, 5, 3], [1, 1, 0]]


def test_data_counts_table_keeps_integers_and_marks_absent_steps():
    table = analysis.data_counts_table({"loaded": {"sst": 10, "sts": 8}, "augmented": {"sst": 15}})
    assert table.loc["sst", "augmented"] == 15
    assert pd.isna(table.loc["sts", "augmented"])
    assert str(table["augmented"].dtype) == "Int64"


@pytest.mark.skipif(not is_complete(DEFAULT_TARGET), reason="NLTK data not built: run `python -m mtlib.data.nltk_data`")
def test_eda_examples_apply_each_operation_reproducibly():
    sentences = ["the film is a good and funny story", "a slow , dull plot"]
    first = analysis.eda_examples(sentences, seed=3)
    assert len(first) == 8 and first["operation"].tolist()[:4] == [
        "synonym replacement", "random insertion", "random swap", "random deletion"]
    deleted = first[first["operation"] == "random deletion"]
    assert all(len(a.split()) < len(s.split()) for s, a in zip(deleted["sentence"], deleted["augmented"]))
    pd.testing.assert_frame_equal(first, analysis.eda_examples(sentences, seed=3))


# ---------------------------------------------------------------------------------------
# Samplers and pretraining

def test_sampler_probabilities_cover_every_sampler_and_epoch():
    sizes = {"sst": 100, "para": 800, "sts": 100}
    probabilities = analysis.sampler_probabilities(sizes, epochs=3)
    assert set(probabilities) == {"random", "round_robin", "proportional", "square_root", "annealed"}
    for per_epoch in probabilities.values():
        assert sorted(per_epoch) == [1, 2, 3]
        assert all(sum(p.values()) == pytest.approx(1) for p in per_epoch.values())
    annealed = probabilities["annealed"]
    assert annealed[1]["para"] == pytest.approx(0.8)  # alpha(1) = 1: proportional
    assert annealed[3]["para"] == pytest.approx(800 ** 0.2 / (800 ** 0.2 + 2 * 100 ** 0.2))  # alpha(E) = 0.2
    assert analysis.sampler_probabilities(sizes, epochs=1, samplers=["annealed"])["annealed"][1]["para"] == \
        pytest.approx(0.8)
    table = analysis.sampler_table(probabilities)
    assert table.shape == (15, 3) and table.loc[("random", 2), "sts"] == pytest.approx(1 / 3)


def test_pretrain_frame():
    history = {"sst": [{"epoch": 1, "loss": 1.5, "sst/acc": 0.3, "seconds": 4.0},
                       {"epoch": 2, "loss": 1.2, "sst/acc": 0.4, "seconds": 0.5, "kept": True},
                       {"epoch": 3, "loss": 1.1, "sst/acc": 0.4, "seconds": 0.5}],
               "sts": [{"epoch": 1, "loss": 2.0, "sts/pearson": 0.1, "seconds": 3.0}]}
    frame = analysis.pretrain_frame(history)
    assert frame.columns.tolist() == ["task", "epoch", "loss", "metric", "score", "kept", "seconds"]
    assert frame["kept"].tolist() == [False, True, False, False]
    assert frame["metric"].tolist() == ["sst/acc"] * 3 + ["sts/pearson"]


# ---------------------------------------------------------------------------------------
# Runs

def test_best_experiment_averages_seeds_and_skips_runs_without_the_metric():
    runs = pd.DataFrame({"experiment": ["a", "a", "b", "b", "single", "random"],
                         "seed": [1, 2, 1, 2, 1, 1],
                         "mean": [0.9, 0.1, 0.6, 0.5, np.nan, 0.95]})
    assert analysis.best_experiment(runs) == "random"
    assert analysis.best_experiment(runs, exclude=["random"]) == "b"  # a's mean over seeds is 0.5
    with pytest.raises(ValueError, match="no run"):
        analysis.best_experiment(runs[runs["experiment"] == "single"])


def test_curve_groups_come_from_the_rows_and_add_the_parents_they_build_on():
    rows = {"base_model": {"group": "ladder"}, "hidden": {"group": "ladder", "parent": "base_model"},
            "hidden_pcgrad": {"group": "gradients", "parent": "hidden"},
            "no_pretraining": {"group": "controls", "parent": "base_model"},
            "single_sst": {"group": None}, "random_predictor": {}, "not_run": {"group": "ladder"}}
    ran = ["hidden", "base_model", "hidden_pcgrad", "no_pretraining", "single_sst", "random_predictor"]
    assert analysis.curve_groups(rows, ran) == {"ladder": ["base_model", "hidden"],
                                                "gradients": ["hidden", "hidden_pcgrad"],
                                                "controls": ["base_model", "no_pretraining"]}


def test_select_experiments_keeps_the_given_order():
    frame = pd.DataFrame({"experiment": ["a", "b", "c", "a", "b"], "x": [1, 2, 3, 4, 5]})
    chosen = analysis.select_experiments(frame, ["b", "a", "missing"])
    assert chosen["experiment"].tolist() == ["b", "b", "a", "a"] and chosen["x"].tolist() == [2, 5, 1, 4]


# ---------------------------------------------------------------------------------------
# Errors

@pytest.fixture
def run_with_predictions(tmp_path):
    """A run folder whose predictions cover the first 10 dev rows of generated task files."""
    cfg = smoke_config(tmp_path)
    data = tmp_path / "data"
    run = tmp_path / "runs" / "x" / "seed1"
    (run / "predictions").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    return run, data


def _dev(data, task):
    from mtlib.data.files import file_name, read_task_file

    return read_task_file(data / file_name(task, "dev"), task)


def test_read_predictions_joins_text_and_scores(run_with_predictions):
    run, data = run_with_predictions
    dev = _dev(data, "sst").head(10)
    predictions = (dev["sentiment"] + np.r_[0, 0, 1, 0, 2, 0, 0, 0, 0, 0]).clip(0, 4)
    pd.DataFrame({"id": dev["id"], "sentiment": predictions}).to_csv(run / "predictions" / "sst-dev.csv", index=False)
    frame = analysis.read_predictions(run, "sst")  # the data folder comes from the run's config.yaml
    assert frame.columns.tolist() == ["id", "sentence", "label", "prediction", "words", "correct", "abs_error"]
    assert frame["sentence"].tolist() == dev["sentence"].tolist()
    assert frame["correct"].tolist() == (predictions == dev["sentiment"]).tolist()
    assert frame["words"].tolist() == dev["sentence"].str.split().str.len().tolist()

    sts = _dev(data, "sts").head(4)
    pd.DataFrame({"id": sts["id"], "similarity": [0, 1, 2, 3]}).to_csv(run / "predictions" / "sts-dev.csv", index=False)
    frame = analysis.read_predictions(run, "sts", data_dir=data)
    assert "correct" not in frame
    assert frame["abs_error"].tolist() == pytest.approx((sts["similarity"] - [0, 1, 2, 3]).abs().tolist())
    assert frame["words"].tolist() == (sts["sentence1"].str.split().str.len()
                                       + sts["sentence2"].str.split().str.len()).tolist()


def test_read_predictions_refuses_ids_the_data_lacks(run_with_predictions):
    run, _ = run_with_predictions
    pd.DataFrame({"id": ["nope"], "sentiment": [1]}).to_csv(run / "predictions" / "sst-dev.csv", index=False)
    with pytest.raises(ValueError, match="not in the sst dev file"):
        analysis.read_predictions(run, "sst")
    with pytest.raises(FileNotFoundError, match="para-dev"):
        analysis.read_predictions(run, "para")


def test_read_predictions_of_an_unlabelled_split(run_with_predictions):
    run, data = run_with_predictions
    from mtlib.data.files import read_task_file

    test = read_task_file(data / "ids-sst-test-student.csv", "sst").head(3)
    pd.DataFrame({"id": test["id"], "sentiment": [1, 2, 3]}).to_csv(run / "predictions" / "sst-test.csv", index=False)
    frame = analysis.read_predictions(run, "sst", split="test")
    assert frame["label"].isna().all() and "correct" not in frame and len(frame) == 3


def _errors_frame():
    return pd.DataFrame({"id": ["a", "b", "c", "d", "e", "f"], "sentence": list("uvwxyz"),
                         "label": [0, 4, 2, 2, 1, 3], "prediction": [4, 4, 1, 3, 1, 1],
                         "words": [3, 5, 8, 10, 20, 30]}).assign(
        correct=lambda f: f["label"] == f["prediction"], abs_error=lambda f: (f["label"] - f["prediction"]).abs())


def test_worst_errors_order_by_class_distance_then_id():
    worst = analysis.worst_errors(_errors_frame(), "sst", n=3)
    assert worst["id"].tolist() == ["a", "f", "c"]  # distance 4, then 2, then the first id of distance 1
    named = analysis.with_label_names(worst, "sst")
    assert named.loc[0, "label"] == "negative" and named.loc[0, "prediction"] == "positive"
    sts = pd.DataFrame({"id": ["p", "q", "r"], "sentence1": list("abc"), "sentence2": list("def"),
                        "label": [1.0, 4.0, 2.0], "prediction": [1.5, 1.0, 2.0], "abs_error": [0.5, 3.0, 0.0]})
    assert analysis.worst_errors(sts, "sts", n=2)["id"].tolist() == ["q", "p"]


def test_read_predictions_keeps_the_stored_probability(run_with_predictions):
    run, data = run_with_predictions
    dev = _dev(data, "para").head(4)
    pd.DataFrame({"id": dev["id"], "is_duplicate": [1, 0, 1, 0], "probability": [0.9, 0.6, 0.55, 0.99]}).to_csv(
        run / "predictions" / "para-dev.csv", index=False)
    frame = analysis.read_predictions(run, "para")
    assert frame["probability"].tolist() == [0.9, 0.6, 0.55, 0.99] and "correct" in frame


def _quora_errors():
    """Quora-like: every error is one class off (the old ranking's ties), probabilities differ."""
    return pd.DataFrame({"id": list("abcdefgh"), "sentence1": [f"question {i}" for i in range(8)],
                         "sentence2": [f"another question {i}" for i in range(8)],
                         "label": [0, 1, 0, 1, 0, 1, 1, 0], "prediction": [1, 0, 1, 0, 0, 1, 0, 1],
                         "probability": [0.55, 0.97, 0.71, 0.62, 0.99, 0.8, 0.93, 0.51],
                         "words": [4, 6, 8, 5, 12, 9, 30, 7]}).assign(
        correct=lambda f: f["label"] == f["prediction"], abs_error=lambda f: (f["label"] - f["prediction"]).abs())


def test_worst_errors_rank_by_the_probability_of_the_wrong_class():
    worst = analysis.worst_errors(_quora_errors(), "para", n=4)
    assert worst["id"].tolist() == ["b", "g", "c", "d"]  # 0.97, 0.93, 0.71, 0.62: not ids in order
    assert worst["probability"].is_monotonic_decreasing and worst["probability"].is_unique
    assert not worst["probability"].duplicated().any() and "sentence2" in worst
    sst = _errors_frame().assign(probability=[0.4, 0.9, 0.3, 0.8, 0.5, 0.35])
    assert analysis.worst_errors(sst, "sst", n=3)["id"].tolist() == ["d", "a", "f"]  # errors only (b, e are right)


def test_error_kinds_follow_their_rules():
    frame = pd.DataFrame({"id": list("abcdef"),
                          "sentence": ["it is not good", "the film does n't work", "a notable , nothing-like film",
                                       "no", "great fun", "an undeniably noteworthy knot of a film , long and slow"],
                          "label": [3, 1, 2, 0, 4, 2], "prediction": [1, 1, 0, 0, 0, 2],
                          "probability": [0.95, 0.7, 0.6, 0.99, 0.92, 0.5]})
    frame = frame.assign(words=frame["sentence"].str.split().str.len(), correct=frame["label"] == frame["prediction"],
                         abs_error=(frame["label"] - frame["prediction"]).abs())
    kinds = analysis.error_kinds(frame, "sst")
    # "not", "n't", "nothing" (a word inside "nothing-like") and "no" negate; "notable", "knot", "noteworthy" do not
    assert kinds["negation"].tolist() == [True, True, True, True, False, False]
    assert kinds["long"].tolist() == (frame["words"] >= frame["words"].quantile(0.75)).tolist()
    assert kinds["long"].tolist()[-1] and not kinds["long"].tolist()[3]
    assert kinds["label_noise"].tolist() == [True, False, False, False, True, False]  # wrong and >= 0.9 sure
    counts = analysis.error_kind_counts(frame, "sst")
    assert counts.loc["negation", "examples"] == 4 and counts.loc["negation", "errors"] == 2
    assert counts.loc["negation", "share_of_errors"] == pytest.approx(2 / 3)
    assert counts.loc["negation", "error_rate_with"] == 0.5 and counts.loc["negation", "error_rate_without"] == 0.5
    assert counts.loc["label_noise", "errors"] == 2
    assert not analysis.error_kinds(frame.drop(columns="probability"), "sst")["label_noise"].any()


def test_sts_errors_and_label_noise_by_distance_from_gold():
    frame = pd.DataFrame({"id": list("abc"), "sentence1": ["a man is not here", "x", "y"],
                          "sentence2": ["a man", "x y", "y z"], "label": [4.0, 1.0, 2.0],
                          "prediction": [1.0, 1.5, 3.2], "words": [6, 3, 3]})
    frame["abs_error"] = (frame["label"] - frame["prediction"]).abs()
    assert analysis.is_error(frame, "sts").tolist() == [True, False, True]
    kinds = analysis.error_kinds(frame, "sts")
    assert kinds["label_noise"].tolist() == [True, False, False] and kinds["negation"].tolist() == [True, False, False]
    assert analysis.worst_errors(frame, "sts", n=3)["id"].tolist() == ["a", "c", "b"]


def test_length_buckets_are_whole_words_and_cover_every_row():
    words = np.array([3, 5, 8, 10, 20, 30, 30, 31])
    buckets = analysis.length_buckets(words, 4)
    assert not pd.isna(buckets).any()
    # quantiles 3, 7.25, 15, 30, 31 -> whole-word edges 7, 15, 30 (each bucket includes both ends)
    assert list(buckets.categories) == ["3–7 words", "8–15 words", "16–30 words", "31–31 words"]
    for name, n in zip(buckets, words):  # each length lies inside its bucket's (inclusive) range
        low, high = map(int, name.removesuffix(" words").split("–"))
        assert low <= n <= high
    assert len(analysis.length_buckets([7, 7, 7], 4).categories) == 1  # all lengths tie: one bucket


def test_errors_by_length_and_by_class():
    frame = _errors_frame()
    by_length = analysis.errors_by_length(frame, "sst", buckets=2)
    assert by_length["n"].sum() == 6 and by_length["n"].dtype.kind == "i"
    assert by_length["accuracy"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert by_length["errors"].tolist() == [2, 2]
    by_class = analysis.errors_by_class(frame, "sst")
    assert by_class.loc["neutral"].to_dict() == {"n": 2, "accuracy": 0.0, "errors": 2,
                                                 "most_common_wrong": "somewhat negative", "its_share": 0.5}
    assert by_class.loc["somewhat negative", "most_common_wrong"] == "–"
    sts = pd.DataFrame({"label": [0.5, 0.7, 4.5, 5.0], "prediction": [1.5, 0.7, 4.0, 4.0],
                        "words": [5, 6, 7, 8]}).assign(abs_error=lambda f: (f["label"] - f["prediction"]).abs())
    by_bin = analysis.errors_by_class(sts, "sts")
    assert by_bin.loc["[0, 1)", "mean_abs_error"] == pytest.approx(0.5)
    assert by_bin.loc["[4, 5]", "mean_prediction"] == pytest.approx(4.0)
    assert by_bin.loc["[2, 3)", "n"] == 0
    assert set(analysis.errors_by_length(sts, "sts", 2).columns) == {"n", "pearson", "mean_abs_error"}


def test_most_confused():
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 1, 1, 1, 0, 2]
    assert analysis.most_confused(labels, predictions) == ("negative", "somewhat negative", pytest.approx(2 / 3))


def test_training_frames_follow_the_profile_sample(tmp_path):
    cfg = smoke_config(tmp_path)
    frames = analysis.training_frames(cfg)
    assert set(frames) == {"sst", "para", "sts"}
    assert all(len(f) == min(cfg.data.train_size[t], 40) for t, f in frames.items())  # helpers write 40 rows
    write_task_files(tmp_path / "other", seed=1)
    other = analysis.training_frames(cfg, data_dir=tmp_path / "other")
    assert other["sst"]["sentence"].tolist() != frames["sst"]["sentence"].tolist()
