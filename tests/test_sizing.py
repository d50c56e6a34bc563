"""mtlib.study.sizing: what the evaluation cuts cost, on tiny cases with known answers."""
import math

import numpy as np
import pandas as pd
import pytest

from mtlib.study.sizing import (correctness_difference, parse_sizes, point_se, quora_cut_effect, quora_dev_se,
                                selection_summary, width_ratio)


def test_quora_dev_se_known_answer():
    # 8 pairs; seed 1: A right on all, B right on the first 6 -> z = (0,0,0,0,0,0,1,1);
    # seed 2: A and B both right on all but pair 0, which A gets wrong -> z = (-1,0,...,0).
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    wrong = 1 - labels
    a1, b1 = labels.copy(), np.r_[labels[:6], wrong[6:]]
    a2, b2 = np.r_[wrong[:1], labels[1:]], labels.copy()
    predictions = {("a", 1): a1, ("b", 1): b1, ("a", 2): a2, ("b", 2): b2, ("b", 3): labels}
    z = correctness_difference(labels, predictions, "a", "b")
    assert z.tolist() == [-0.5, 0, 0, 0, 0, 0, 0.5, 0.5]   # seed 3 has no 'a': not used
    table = quora_dev_se(labels, predictions, [("a", "b"), ("a", "missing")], other_n=32)
    assert len(table) == 1                                   # no common seed: no row
    sd = np.std(z, ddof=1)
    row = table.iloc[0]
    assert row["n"] == 8
    assert row["se"] == pytest.approx(sd / math.sqrt(8))
    assert row["se_other"] == pytest.approx(sd / math.sqrt(32)) == pytest.approx(row["se"] / 2)
    assert row["mean_se"] == pytest.approx(row["se"] / 3)


def test_point_se_binomial_and_pearson():
    scores = {"sst/acc": 0.5, "para/acc": 0.8, "sts/pearson": 0.6, "mean": 0.633}
    sizes = {"sst": 100, "para": 400, "sts": 64}
    expected = math.sqrt(0.25 / 100 + 0.16 / 400 + (1 - 0.36) ** 2 / 64) / 3
    assert point_se(scores, sizes) == pytest.approx(expected)
    # four times the examples halve it
    assert point_se(scores, {k: 4 * v for k, v in sizes.items()}) == pytest.approx(expected / 2)


def test_selection_summary_counts_last_points_and_climbs():
    def run(experiment, seed, means):
        n = len(means)
        return pd.DataFrame({"experiment": experiment, "seed": seed, "update": range(1, n + 1),
                             "sst/acc": [0.5] * n, "para/acc": [0.7] * n, "sts/pearson": [0.6] * n,
                             "mean": means})
    histories = pd.concat([run("a", 1, [0.5, 0.6, 0.7]),         # last selected, climbs 0.1, 0.1
                           run("a", 2, [0.5, 0.7, 0.65]),        # middle selected, climbs 0.2, -0.05
                           run("b", 1, [0.4, 0.4])])             # tie: the first best is kept, climb 0
    summary = selection_summary(histories.sample(frac=1.0, random_state=1),
                                {"sst": 100, "para": 100, "sts": 100}, {"sst": 400, "para": 400, "sts": 400})
    assert (summary["runs"], summary["selected_last"], summary["points"]) == (3, 1, 3)
    assert summary["climb"] == pytest.approx(0.1)               # median of 0.1, 0.1, 0.2, -0.05, 0
    assert summary["se_other"] == pytest.approx(summary["se"] / 2)


def test_parse_sizes():
    assert parse_sizes("sst=300,para=400,sts=300") == {"sst": 300, "para": 400, "sts": 300}
    with pytest.raises(ValueError, match="task=count"):
        parse_sizes("sst=300,quora=4")


def test_width_ratio_known_answer():
    differences = [0.01, 0.03, 0.05]   # s = 0.02, k = 3: s^2/k = 0.0004/3
    seed_part = 0.0004 / 3
    assert width_ratio(differences, 0.02, 0.01) == pytest.approx(math.sqrt((seed_part + 4e-4) / (seed_part + 1e-4)))
    assert width_ratio(differences, 0.01, 0.01) == 1.0
    assert math.isnan(width_ratio([0.01], 0.02, 0.01))
    assert math.isnan(width_ratio([0.01, 0.01], 0.0, 0.0))     # identical runs: no interval to compare


def test_quora_cut_effect_pairs_runs_by_seed():
    labels = np.array([1, 0, 1, 0])
    predictions = {("a", 1): labels, ("a", 2): 1 - labels, ("b", 1): 1 - labels, ("b", 2): labels}
    runs = pd.DataFrame({"experiment": ["a", "a", "b", "b"], "seed": [1, 2, 1, 2],
                         "para": [1.0, 0.0, 0.0, 1.0], "mean": [0.6, 0.2, 0.2, 0.6]})
    table = quora_cut_effect(runs, labels, predictions, [("a", "b")], other_n=16)
    row = table.iloc[0]
    # z averages +1 (seed 1) and -1 (seed 2) on every pair: no dev-sample part at all
    assert row["se"] == 0 and row["para_width_ratio"] == 1.0
    # per-seed para Δ +1, -1
    assert row["n"] == 4
