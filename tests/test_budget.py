"""mtlib.study.budget: each claim's Δ along its runs' validation points and at a longer budget."""
import math

import pandas as pd
import pytest
from scipy import stats

from mtlib.study.budget import (APPEARS, HOLDS, REVERSES, VANISHES, budget_columns, point_scores, primary_comparisons,
                                stability, stability_markdown)
from mtlib.study.report import collect_histories
from mtlib.study.stats import Interval

CLAIMS = pd.DataFrame([{"claim": "annealing helps", "experiment": "a", "reference": "b", "metric": "sst",
                        "direction": "better"}])


def write_runs(root, scores):
    """``scores[experiment][seed]``: the sst/acc of each validation point; history.csv files
    under root/<experiment>/seed<k>/ as training writes them (other metrics derived)."""
    for experiment, by_seed in scores.items():
        for seed, values in by_seed.items():
            folder = root / experiment / f"seed{seed}"
            folder.mkdir(parents=True)
            n = len(values)
            pd.DataFrame({"update": [20 * (i + 1) for i in range(n)], "epoch": [1 + i // 2 for i in range(n)],
                          "examples": [480 * (i + 1) for i in range(n)], "train_seconds": [1.0] * n,
                          "sst/acc": values, "para/acc": [0.7] * n, "sts/pearson": [0.5] * n,
                          "mean": [(v + 1.2) / 3 for v in values]}).to_csv(folder / "history.csv", index=False)
    return collect_histories(root)


def t_half(differences):
    n = len(differences)
    sd = pd.Series(differences).std(ddof=1)
    return stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def test_budget_columns_from_validation_histories_known_numbers(tmp_path):
    # 3 seeds, 3 validation points each; Δ(first) = 0.00, 0.02, 0.04: mean 0.02, sd 0.02, unresolved;
    # Δ(last) = 0.10, 0.11, 0.11: resolved > 0 -> "appears" along the points; the budget study's
    # last point Δ = -0.05, -0.06, -0.07: resolved < 0 -> "reverses" from the profile's last point.
    runs = write_runs(tmp_path / "runs", {
        "a": {1: [0.50, 0.60, 0.70], 2: [0.52, 0.65, 0.71], 3: [0.54, 0.61, 0.72]},
        "b": {1: [0.50, 0.55, 0.60], 2: [0.50, 0.55, 0.60], 3: [0.50, 0.58, 0.61]},
        "unrelated": {1: [0.9, 0.9, 0.9]}})
    longer = write_runs(tmp_path / "budget", {
        "a": {1: [0.6, 0.7, 0.75, 0.80], 2: [0.6, 0.7, 0.75, 0.80], 3: [0.6, 0.7, 0.75, 0.80]},
        "b": {1: [0.6, 0.7, 0.80, 0.85], 2: [0.6, 0.7, 0.80, 0.86], 3: [0.6, 0.7, 0.80, 0.87]}})

    along = budget_columns(CLAIMS, runs)
    row = along.loc["annealing helps"]
    assert row["first_delta"] == pytest.approx(0.02)
    assert row["first_hi"] - row["first_delta"] == pytest.approx(t_half([0.0, 0.02, 0.04]))
    assert row["last_delta"] == pytest.approx(0.32 / 3)
    assert row["last_lo"] == pytest.approx(0.32 / 3 - t_half([0.10, 0.11, 0.11]))
    assert (row["first_n"], row["last_n"], row["budget_n"]) == (3, 3, 0)
    assert (row["first_examples"], row["last_examples"]) == (480, 1440)
    assert math.isnan(row["budget_delta"])
    assert (row["stability"], row["stability_from"]) == (APPEARS, "first -> last")

    both = budget_columns(CLAIMS, runs, longer).loc["annealing helps"]
    assert both["budget_delta"] == pytest.approx(-0.06)
    assert both["budget_hi"] == pytest.approx(-0.06 + t_half([-0.05, -0.06, -0.07]))
    assert both["budget_examples"] == 4 * 480
    assert (both["stability"], both["stability_from"]) == (REVERSES, "last -> budget")
    assert "reverses (last -> budget)" in stability_markdown(budget_columns(CLAIMS, runs, longer))


def test_pairs_by_seed_and_reads_mean(tmp_path):
    # seed 3 of the reference is missing: the Δ uses seeds 1 and 2 only, each with its own seed.
    runs = write_runs(tmp_path, {"a": {1: [0.3, 0.6], 2: [0.3, 0.9], 3: [0.3, 0.0]},
                                 "b": {1: [0.3, 0.5], 2: [0.3, 0.6]}})
    claims = CLAIMS.assign(metric="mean")
    row = budget_columns(claims, runs).loc["annealing helps"]
    assert row["last_n"] == 2
    assert row["last_delta"] == pytest.approx(((0.6 - 0.5) + (0.9 - 0.6)) / 2 / 3)  # mean = (sst + 1.2) / 3
    assert row["first_delta"] == pytest.approx(0.0)
    # the last point is the last by update, whatever the file's row order
    shuffled = runs.sample(frac=1.0, random_state=0)
    assert point_scores(shuffled, "sst", -1).set_index(["experiment", "seed"]).loc[("a", 2), "score"] == 0.9


def interval_of(estimate, lo, hi):
    return Interval(estimate, lo, hi, 3)


@pytest.mark.parametrize("shorter, longer, word", [
    ((0.02, 0.01, 0.03), (0.05, 0.02, 0.08), HOLDS),       # resolved, same sign
    ((0.00, -0.01, 0.01), (0.01, -0.02, 0.04), HOLDS),     # unresolved at both
    ((0.00, -0.01, 0.01), (0.05, 0.02, 0.08), APPEARS),
    ((-0.03, -0.05, -0.01), (-0.01, -0.03, 0.01), VANISHES),
    ((-0.03, -0.05, -0.01), (0.04, 0.01, 0.07), REVERSES),
])
def test_stability_words(shorter, longer, word):
    assert stability(interval_of(*shorter), interval_of(*longer)) == word


def test_no_word_without_both_sides():
    assert stability(None, interval_of(0.1, 0.05, 0.15)) is None
    assert stability(Interval(0.1, math.nan, math.nan, 1), interval_of(0.1, 0.05, 0.15)) is None


def test_claims_need_their_columns_and_one_row_each(tmp_path):
    runs = write_runs(tmp_path, {"a": {1: [0.5]}, "b": {1: [0.5]}})
    with pytest.raises(ValueError, match="missing column.*direction"):
        budget_columns(CLAIMS.drop(columns="direction"), runs)
    with pytest.raises(ValueError, match="one row per claim"):
        budget_columns(pd.concat([CLAIMS, CLAIMS]), runs)


def test_primary_comparison_is_each_claims_first_line(tmp_path):
    card = pd.DataFrame([
        {"claim": "x", "experiment": "a", "reference": "b", "metric": "mean", "direction": "better", "verdict": "v1"},
        {"claim": "x", "experiment": "c", "reference": "b", "metric": "mean", "direction": "better", "verdict": "v2"},
        {"claim": "y", "experiment": "b", "reference": "a", "metric": "sst", "direction": "worse", "verdict": "v3"}])
    claims = primary_comparisons(card)
    assert claims[["claim", "experiment", "metric"]].values.tolist() == [["x", "a", "mean"], ["y", "b", "sst"]]
    judged = card.assign(role=["secondary", "primary", "primary"], statistic=["dev", "dev", "training speed"])
    assert primary_comparisons(judged)[["claim", "experiment"]].values.tolist() == [["x", "c"]]  # primary, not speed
    runs = write_runs(tmp_path, {"a": {1: [0.5, 0.6], 2: [0.5, 0.7]}, "b": {1: [0.5, 0.5], 2: [0.5, 0.5]}})
    table = budget_columns(claims, runs).join(pd.Series({"x": "confirmed", "y": "contradicted"},
                                                                       name="claim_verdict"))
    text = stability_markdown(table)
    assert "| x | confirmed | a − b (mean) |" in text and "| y | contradicted | b − a (sst) |" in text
