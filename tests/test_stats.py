"""mtlib.study.stats: resampled metrics against the plain ones, intervals and power against hand
computations, and the interval's coverage of a known truth in simulated studies."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mtlib.study.stats import (MEAN, Interval, bootstrap_scores, curve_mean, detectable_parts, difference_p,
                               equivalence_p, example_weights, interval, minimal_detectable_effect,
                               minimum_effect_p, replicate_scores, satterthwaite_df, shared_dev_variance,
                               weighted_scores)
from mtlib.tasks import accuracy, pearson

T_975_DF2 = 4.302652729911275   # Student t quantiles (tables)
T_975_DF4 = 2.7764451051977987
T_80_DF4 = 0.9409646853805195
Z_975, Z_80 = 1.959963984540054, 0.8416212335729143


def test_weights_of_ones_give_the_plain_metrics():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    predictions = np.vstack([rng.integers(0, 5, 200), labels, np.full(200, 2)])
    scores = weighted_scores(accuracy, np.ones((1, 200)), predictions, labels)[0]
    assert scores == pytest.approx([accuracy(p, labels) for p in predictions])
    similarity = rng.uniform(0, 5, 150)
    guesses = np.vstack([similarity + rng.normal(0, 1, 150), -similarity, np.full(150, 2.5)])
    r = weighted_scores(pearson, np.ones((1, 150)), guesses, similarity)[0]
    assert r == pytest.approx([pearson(g, similarity) for g in guesses])
    assert r[1] == pytest.approx(-1.0) and r[2] == 0.0  # a constant prediction has r = 0, as in mtlib.tasks


def test_bootstrap_counts_give_the_metric_of_the_resampled_rows():
    rng = np.random.default_rng(1)
    n = 60
    labels, predictions = rng.uniform(0, 5, n), rng.uniform(0, 5, (3, n))
    index = rng.integers(0, n, (4, n))
    counts = np.array([np.bincount(i, minlength=n) for i in index], float)
    expected = [[pearson(p[i], labels[i]) for p in predictions] for i in index]
    assert weighted_scores(pearson, counts, predictions, labels) == pytest.approx(np.array(expected))
    classes = rng.integers(0, 2, n)
    guesses = rng.integers(0, 2, (3, n))
    expected = [[accuracy(p[i], classes[i]) for p in guesses] for i in index]
    assert weighted_scores(accuracy, counts, guesses, classes) == pytest.approx(np.array(expected))


def test_example_weights_are_resample_counts():
    weights = example_weights(50, 30, np.random.default_rng(0))
    assert weights.shape == (30, 50) and (weights.sum(1) == 50).all() and (weights >= 0).all()
    assert (weights == np.round(weights)).all() and not (weights == 1).all()
    assert np.array_equal(weights, example_weights(50, 30, np.random.default_rng(0)))


def test_every_run_sees_the_same_resamples_together_or_apart():
    rng = np.random.default_rng(2)
    labels, predictions = rng.integers(0, 2, 80), rng.integers(0, 2, (3, 80))
    together = bootstrap_scores(accuracy, predictions, labels, replicates=600, seed=5)  # spans blocks
    apart = np.hstack([bootstrap_scores(accuracy, p, labels, replicates=600, seed=5) for p in predictions])
    assert together.shape == (600, 3) and np.array_equal(together, apart)
    assert not np.array_equal(together, bootstrap_scores(accuracy, predictions, labels, replicates=600, seed=6))


def test_an_unknown_metric_is_an_error():
    with pytest.raises(KeyError, match="no resampled version of metric 'median'"):
        weighted_scores(np.median, np.ones((1, 3)), np.ones((1, 3)), np.ones(3))


def test_replicates_hold_each_task_and_the_mean_of_runs_with_every_task():
    rng = np.random.default_rng(3)
    labels = {"sst": rng.integers(0, 5, 40), "sts": rng.uniform(0, 5, 30)}
    predictions = {"sst": {("a", 1): rng.integers(0, 5, 40), ("b", 1): rng.integers(0, 5, 40)},
                   "sts": {("a", 1): rng.uniform(0, 5, 30)}}
    replicates = replicate_scores(labels, predictions, {"sst": accuracy, "sts": pearson}, replicates=50, seed=0)
    assert replicates.runs == (("a", 1), ("b", 1))
    assert replicates.point["sst"][1] == accuracy(predictions["sst"][("b", 1)], labels["sst"])
    assert replicates.point[MEAN][0] == pytest.approx((replicates.point["sst"][0] + replicates.point["sts"][0]) / 2)
    assert np.isnan(replicates.point[MEAN][1]) and np.isnan(replicates.boot[MEAN][:, 1]).all()  # b has no sts
    both = (replicates.boot["sst"][:, 0] + replicates.boot["sts"][:, 0]) / 2
    assert replicates.boot[MEAN][:, 0] == pytest.approx(both)
    with pytest.raises(KeyError, match="c"):
        replicates.values("sst", [("c", 1)])
    nobody = replicate_scores({**labels, "para": np.empty(0)}, predictions,
                              {"sst": accuracy, "sts": pearson, "para": accuracy}, replicates=20)
    assert np.isnan(nobody.point["para"]).all() and np.isnan(nobody.point[MEAN]).all()  # no run predicted para


# ---------------------------------------------------------------------------------------
# Intervals, by hand

def test_without_a_dev_part_the_interval_is_the_t_interval_over_seeds():
    result = interval([0.01, 0.03, 0.05])
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    assert result.estimate == pytest.approx(0.03) and result.sd == pytest.approx(0.02)
    assert (result.lo, result.hi) == pytest.approx((0.03 - half, 0.03 + half))
    assert result.seed_half == pytest.approx(half) and result.df == 2 and result.n == 3
    assert math.isnan(result.dev_lo)


def test_the_dev_part_adds_to_the_seed_part_with_satterthwaite_degrees_of_freedom():
    # every seed moves together on each resample (the dev error is all shared): v_shared = var(e)
    point = np.array([0.01, 0.03, 0.05])
    shift = np.array([-0.01, 0.01])
    result = interval(point, point[None, :] + shift[:, None])
    seed_part, dev_part = 0.02 ** 2 / 3, 2 * 0.01 ** 2    # s^2/k; var(e) with ddof=1
    df = 2 * ((seed_part + dev_part) / seed_part) ** 2    # (k-1)(SE^2/(s^2/k))^2 = 12.5
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(seed_part + dev_part)
    assert result.df == pytest.approx(12.5)
    assert (result.lo, result.hi) == pytest.approx((0.03 - half, 0.03 + half))
    assert result.dev_se == pytest.approx(math.sqrt(dev_part))
    assert (result.dev_lo, result.dev_hi) == pytest.approx(np.quantile([0.02, 0.04], [0.025, 0.975]))


def test_shared_dev_variance_keeps_only_what_every_seed_shares():
    a = 0.01
    shared = np.array([[a, a], [-a, -a]])        # the resample moves both seeds alike
    opposite = np.array([[a, -a], [-a, a]])      # it moves them apart: seed-specific only
    assert shared_dev_variance(shared) == pytest.approx(2 * a ** 2)
    assert shared_dev_variance(opposite) == 0.0
    assert shared_dev_variance(np.array([[a], [-a]])) == pytest.approx(2 * a ** 2)  # one seed: all of it


def test_one_seed_has_no_interval_but_a_dev_interval():
    result = interval([0.4], np.array([[0.38], [0.40], [0.42]]))
    assert result.estimate == 0.4 and math.isnan(result.lo) and math.isnan(result.hi)
    assert result.resolved is None and result.dev_lo < 0.4 < result.dev_hi
    assert interval([]).n == 0 and math.isnan(interval([]).estimate)


@pytest.mark.parametrize("lo, hi, expected", [(0.01, 0.02, True), (-0.02, -0.01, True), (-0.01, 0.02, False),
                                              (0.0, 0.02, False), (math.nan, 0.1, None)])
def test_resolved_means_the_interval_excludes_zero(lo, hi, expected):
    assert Interval(0.0, lo, hi, 5).resolved is expected


def test_minimal_detectable_effect_by_hand():
    # seeds alone: the paired t-test's (t_{.975,4} + t_{.80,4}) sd / sqrt(5)
    assert minimal_detectable_effect(0.015, 5) == pytest.approx((T_975_DF4 + T_80_DF4) * 0.015 / math.sqrt(5))
    # the dev part alone: the normal formula
    assert minimal_detectable_effect(0.0, 5, dev_se=0.004) == pytest.approx((Z_975 + Z_80) * 0.004)
    both = minimal_detectable_effect(0.015, 5, dev_se=0.004)
    df = satterthwaite_df(0.015 ** 2, 5, 0.004 ** 2)
    se = math.sqrt(0.015 ** 2 / 5 + 0.004 ** 2)
    assert both == pytest.approx((scipy_stats.t.ppf(0.975, df) + scipy_stats.t.ppf(0.8, df)) * se)
    assert minimal_detectable_effect(0.015, 10) < minimal_detectable_effect(0.015, 5) < both
    assert math.isnan(minimal_detectable_effect(0.015, 1))


def test_detectable_parts_split_the_mde_into_what_seeds_lower_and_the_floor():
    mde, seed_part, floor = detectable_parts(0.015, 5, dev_se=0.004)
    assert mde == minimal_detectable_effect(0.015, 5, dev_se=0.004)
    assert floor == pytest.approx((Z_975 + Z_80) * 0.004)
    assert mde ** 2 == pytest.approx(seed_part ** 2 + (mde / math.sqrt(0.015 ** 2 / 5 + 0.004 ** 2) * 0.004) ** 2)
    # more seeds lower the MDE towards the floor, never below it
    many = [detectable_parts(0.015, n, dev_se=0.004)[0] for n in (5, 20, 100, 10_000)]
    assert many == sorted(many, reverse=True) and floor < many[-1] < floor * 1.01
    assert detectable_parts(0.015, 5, math.nan) == pytest.approx((minimal_detectable_effect(0.015, 5),) * 2 + (0.0,))
    assert all(math.isnan(x) for x in detectable_parts(0.015, 1)[:2])


@pytest.mark.parametrize("boot", [None, "dev"])
def test_p_values_say_what_the_interval_says(boot):
    # from the interval's own SE and df: p = 0.05 exactly when a bound sits on 0 (or on the margin)
    rng = np.random.default_rng(4)
    point = rng.normal(0.02, 0.01, 5)
    result = interval(point, None if boot is None else rng.normal(0, 0.004, (400, 5)) + point)
    assert result.se == pytest.approx((result.hi - result.lo) / 2 / scipy_stats.t.ppf(0.975, result.df))
    for shift in (result.lo, result.hi):           # move the interval so that the bound is at 0
        moved = Interval(result.estimate - shift, result.lo - shift, result.hi - shift, result.n, result.sd,
                         dev_se=result.dev_se, df=result.df)
        assert difference_p(moved) == pytest.approx(0.05)
    assert (difference_p(result) < 0.05) == bool(result.resolved)
    low, high = result.lo, result.hi
    assert equivalence_p(result, max(abs(low), abs(high))) == pytest.approx(0.05)
    assert equivalence_p(result, 2 * max(abs(low), abs(high))) < 0.05 < equivalence_p(result, abs(result.estimate))
    if low > 0:
        assert minimum_effect_p(result, low) == pytest.approx(0.05)
        assert minimum_effect_p(result, low / 2) < 0.05 < minimum_effect_p(result, result.estimate)
    nothing = Interval(math.nan, math.nan, math.nan, 0)
    assert math.isnan(difference_p(nothing)) and math.isnan(equivalence_p(nothing, 0.01))


def test_curve_mean_is_the_normalised_area_under_the_interpolated_curve():
    assert curve_mean([0, 10], [0.0, 1.0], 0, 10) == pytest.approx(0.5)
    assert curve_mean([10, 0, 20], [1.0, 0.0, 1.0], 0, 5) == pytest.approx(0.25)   # unsorted rows
    assert curve_mean([0, 10, 20], [0.0, 1.0, 1.0], 0, 20) == pytest.approx(0.75)
    assert curve_mean([0, 10, 20], [0.0, 1.0, 1.0], 5, 15) == pytest.approx((0.5 * 0.75 + 0.5 * 1.0))
    assert math.isnan(curve_mean([5, 10], [0.2, 0.4], 0, 10))   # no evaluation before 5: no extrapolation


# ---------------------------------------------------------------------------------------
# Simulated studies with a known truth

P_A, P_B = 0.52, 0.50


def simulate(rng, seeds, examples, seed_sd, own):
    """Correctness (seeds, examples) of A and B: example difficulty u shared by every run,
    a share ``own`` of each run's draws its own, a normal seed effect on the accuracy."""
    u = rng.random(examples)

    def runs(p):
        q = p + rng.normal(0, seed_sd, seeds)
        v = np.where(rng.random((seeds, examples)) < own, rng.random((seeds, examples)), u)
        return (v < q[:, None]).astype(float)

    return runs(P_A), runs(P_B)


def delta_intervals(studies, seeds, examples, seed_sd, own, replicates=200):
    rng = np.random.default_rng(11)
    labels = np.ones(examples)
    out = []
    for study in range(studies):
        a, b = simulate(rng, seeds, examples, seed_sd, own)
        boot = bootstrap_scores(accuracy, np.vstack([a, b]), labels, replicates, seed=study)
        out.append(interval(a.mean(1) - b.mean(1), boot[:, :seeds] - boot[:, seeds:]))
    return out


@pytest.mark.parametrize("seed_sd, own", [(0.02, 0.0), (0.003, 0.0), (0.0, 0.5)],
                         ids=["seed effects dominate", "shared dev sample dominates", "per-run noise dominates"])
def test_the_interval_covers_a_known_difference_at_about_the_nominal_rate(seed_sd, own):
    results = delta_intervals(240, 5, 300, seed_sd, own, replicates=150)
    coverage = np.mean([r.lo <= P_A - P_B <= r.hi for r in results])
    assert 0.905 <= coverage <= 0.99, coverage   # 240 studies: 95% +- 4.5 points is 3 standard errors


def test_intervals_shrink_with_more_seeds_and_more_examples():
    def width(seeds, examples):
        return np.mean([r.hi - r.lo for r in delta_intervals(20, seeds, examples, 0.01, 0.2)])

    assert width(10, 400) < 0.7 * width(3, 400)
    assert width(5, 2000) < 0.7 * width(5, 200)


def test_a_true_effect_of_the_mde_is_resolved_about_80_percent_of_the_time():
    rng = np.random.default_rng(4)
    sd, n = 0.015, 5
    effect = minimal_detectable_effect(sd, n)
    resolved = [interval(rng.normal(effect, sd, n)).resolved for _ in range(3000)]
    assert 0.76 <= np.mean(resolved) <= 0.84
