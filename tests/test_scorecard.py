"""mtlib.study.scorecard: the claims as data, the verdict rules, and verdicts on constructed studies."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mtlib.config import read_params
from mtlib.study.report import METRICS, bootstrap_runs, collect_runs, summarise
from mtlib.study.scorecard import (BETTER, CLAIMS, CONFIRMED, CONTRADICTED, DIRECTIONS, EARLY, MARGIN, NO_EFFECT,
                                   NOT_RESOLVABLE, NOT_RUN, WORSE, Claim, Comparison, combine, judge,
                                   report_difference, scorecard_markdown, verdict)
from mtlib.study.stats import curve_mean
from tests.helpers import ROOT, dev_labels, write_predicted_run, write_task_files

PARAMS = read_params(ROOT / "params.yaml")
ROWS = PARAMS["experiments"]  # the table's rows, with the report's numbers
BASE = {"label": "BaseModel: BERT + sentence concat", "sst": 0.465, "para": 0.731, "sts": 0.749, "mean": 0.648}
ANNEALED = {"label": "BaseModel + annealed schedule", "sst": 0.499, "para": 0.869, "sts": 0.856, "mean": 0.741}


def test_the_scorecard_covers_every_claim_of_the_issue():
    assert [c.name for c in CLAIMS] == [
        "annealed", "sentence_concat", "individual_pretraining", "hidden_and_augmentation", "gradient_surgery",
        "compromise_speed", "recurrent_heads", "pal_start", "pal_after", "smart", "adjustment_matrix"]
    for claim in CLAIMS:
        assert claim.direction in DIRECTIONS and claim.comparisons, claim.name
        for comparison in claim.comparisons:
            assert {comparison.experiment, comparison.reference} <= set(PARAMS["experiments"]), comparison
            assert comparison.metric in METRICS


def test_the_report_own_numbers_agree_with_each_claim_as_written():
    # a claim whose comparisons the report's Table 2 does not support would be mis-transcribed
    # (rows the report does not have, such as round robin, have no number to check)
    for claim in (c for c in CLAIMS if c.statistic != EARLY):
        numbers = [(comparison, report_difference(comparison, ROWS)) for comparison in claim.comparisons]
        assert any(not math.isnan(delta) for _, (delta, _, _) in numbers), claim.name
        for comparison, (delta, ours, theirs) in numbers:
            if not math.isnan(delta):
                assert verdict(claim.direction, delta, delta) == CONFIRMED, (claim.name, comparison, ours, theirs)


@pytest.mark.parametrize("direction, lo, hi, expected", [
    (BETTER, 0.001, 0.02, CONFIRMED), (BETTER, -0.02, -0.001, CONTRADICTED), (BETTER, -0.01, 0.02, NOT_RESOLVABLE),
    (BETTER, 0.0, 0.02, NOT_RESOLVABLE), (WORSE, -0.02, -0.001, CONFIRMED), (WORSE, 0.001, 0.02, CONTRADICTED),
    (WORSE, -0.01, 0.01, NOT_RESOLVABLE), (NO_EFFECT, -0.005, 0.008, CONFIRMED),
    (NO_EFFECT, 0.002, 0.006, CONFIRMED),          # a real but negligible effect is "no real influence"
    (NO_EFFECT, -MARGIN, MARGIN, CONFIRMED), (NO_EFFECT, 0.011, 0.03, CONTRADICTED),
    (NO_EFFECT, -0.05, -0.02, CONTRADICTED), (NO_EFFECT, 0.005, 0.03, NOT_RESOLVABLE),
    (NO_EFFECT, -0.02, 0.02, NOT_RESOLVABLE), (BETTER, math.nan, math.nan, NOT_RESOLVABLE)])
def test_verdict_rules(direction, lo, hi, expected):
    assert verdict(direction, lo, hi) == expected


def test_a_claim_needs_every_comparison():
    assert combine([CONFIRMED, CONFIRMED]) == CONFIRMED
    assert combine([CONFIRMED, NOT_RESOLVABLE]) == NOT_RESOLVABLE
    assert combine([CONFIRMED, CONTRADICTED]) == CONTRADICTED
    assert combine([CONFIRMED, CONTRADICTED, NOT_RUN]) == f"{CONTRADICTED} (on the 2 of 3 comparisons run)"
    assert combine([CONFIRMED, NOT_RUN]) == f"{CONFIRMED} (on the 1 of 2 comparisons run)"
    assert combine([NOT_RESOLVABLE, NOT_RUN, NOT_RUN]) == f"{NOT_RESOLVABLE} (on the 1 of 3 comparisons run)"
    assert combine([NOT_RUN, NOT_RUN]) == NOT_RUN and combine([]) == NOT_RUN
    with pytest.raises(KeyError, match="unknown direction 'up'"):
        verdict("up", 0.1, 0.2)


# ---------------------------------------------------------------------------------------
# Verdicts on a constructed study

def predictions(rng, data, right):
    out = {}
    for task in ("sst", "para", "sts"):
        _, labels = dev_labels(data, task)
        if task == "sts":
            out[task] = np.clip(labels + rng.normal(0, 3 * (1 - right), len(labels)), 0, 5)
        else:
            top = 4 if task == "sst" else 1
            out[task] = np.where(rng.random(len(labels)) < right, labels, rng.integers(0, top + 1, len(labels)))
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Four seeds of base_model, of a much better and a much worse experiment, and of one
    with base_model's very predictions."""
    root = tmp_path_factory.mktemp("study")
    data = write_task_files(root / "data", n_train=4, n_dev=150, n_test=2)
    rng = np.random.default_rng(1)
    for seed in range(1, 5):
        base = predictions(rng, data, 0.5)
        write_predicted_run(root / "runs", "base_model", seed, data, base)
        write_predicted_run(root / "runs", "same", seed, data, base)
        write_predicted_run(root / "runs", "better", seed, data, predictions(rng, data, 0.95))
        write_predicted_run(root / "runs", "worse", seed, data, predictions(rng, data, 0.05))
    runs = collect_runs(root / "runs")
    return runs, bootstrap_runs(runs, replicates=300)


def claim(name, direction, *experiments, metric="mean"):
    return Claim(name, f"{name} words", direction, tuple(Comparison(e, "base_model", metric) for e in experiments))


def test_constructed_claims_get_the_verdicts_their_data_imply(study):
    runs, replicates = study
    claims = [claim("up", BETTER, "better"), claim("down", BETTER, "worse"), claim("flat", BETTER, "same"),
              claim("nothing", NO_EFFECT, "same", metric="sst"), claim("big", NO_EFFECT, "better"),
              claim("cut", BETTER, "pal_start"), claim("both", BETTER, "better", "same"),
              claim("worse", WORSE, "worse", metric="sts")]
    card = judge(runs, replicates, claims=claims).groupby("claim", sort=False)["claim_verdict"].first()
    assert card.to_dict() == {"up": CONFIRMED, "down": CONTRADICTED, "flat": NOT_RESOLVABLE, "nothing": CONFIRMED,
                              "big": CONTRADICTED, "cut": NOT_RUN, "both": NOT_RESOLVABLE, "worse": CONFIRMED}


def test_a_comparison_is_the_tables_paired_delta(study):
    runs, replicates = study
    rows = {"base_model": {"report": BASE}, "better": {"report": ANNEALED, "parent": "base_model"}}
    summary = summarise(runs, rows, replicates).set_index("experiment")
    line = judge(runs, replicates, rows=rows, claims=[claim("up", BETTER, "better")]).iloc[0]
    assert line["n"] == 4 and line["estimate"] == pytest.approx(summary.loc["better", "mean_diff"])
    assert (line["lo"], line["hi"]) == (summary.loc["better", "mean_diff_lo"], summary.loc["better", "mean_diff_hi"])
    assert line["report_diff"] == pytest.approx(0.741 - 0.648)


def test_the_report_claims_on_a_profile_that_ran_none_of_their_rows(study):
    runs, replicates = study
    card = judge(runs, replicates, rows=ROWS)
    assert set(card["claim_verdict"]) == {NOT_RUN} and card["claim"].nunique() == len(CLAIMS)
    assert scorecard_markdown(card).count("**not run at this profile**") == len(CLAIMS)


def test_the_markdown_scorecard_shows_the_interval_the_rows_and_the_verdict(study):
    runs, replicates = study
    rows = {"better": {"report": ANNEALED}, "base_model": {"report": BASE}}
    card = judge(runs, replicates, rows=rows, claims=[claim("up", BETTER, "better"), claim("cut", BETTER, "pal_start")])
    md = scorecard_markdown(card)
    up = card.iloc[0]
    theirs, reference = ANNEALED["mean"], BASE["mean"]
    assert (f"| up words | mean {theirs:.3f} vs {reference:.3f} ({theirs - reference:+.3f}) | "
            f"mean {up['estimate']:+.3f} [{up['lo']:+.3f}, {up['hi']:+.3f}] | better − base_model (4 seeds) "
            "| **confirmed** |") in md
    assert ("| cut words | mean: no number | mean: not run | pal_start − base_model (0 seeds) "
            "| **not run at this profile** |") in md
    assert f"±{MARGIN:g}" in md


# ---------------------------------------------------------------------------------------
# Learning speed

def history(experiment, seed, examples, scores):
    return pd.DataFrame({"experiment": experiment, "seed": seed, "examples": examples, "mean": scores})


def test_learning_speed_compares_early_validation_curves_at_matched_examples():
    # the compromise run evaluates every 300 examples, the annealed one every 100; both see 4,000
    rng = np.random.default_rng(0)
    frames, differences, lifts = [], [], []
    for seed in (1, 2, 3, 4):
        fast_x, slow_x = np.arange(300, 4001, 300), np.arange(100, 4001, 100)
        lift = 0.1 + rng.normal(0, 0.01)
        lifts.append(lift)
        fast = np.append(fast_x, 4000), np.append(0.3 + lift + fast_x / 1e4, 0.7)
        frames += [history("hidden_compromise", seed, *fast), history("hidden", seed, slow_x, 0.3 + slow_x / 1e4)]
        # window: from the latest first evaluation (300) to a quarter of 4,000; both curves are straight there
        differences.append(curve_mean(*fast, 300, 1000) - curve_mean(slow_x, 0.3 + slow_x / 1e4, 300, 1000))
    histories = pd.concat(frames, ignore_index=True)
    speed = next(c for c in CLAIMS if c.name == "compromise_speed")
    line = judge(None, None, histories, claims=[speed]).iloc[0]
    assert differences == pytest.approx(lifts)  # parallel straight lines in the window: Δ is the lift
    assert line["estimate"] == pytest.approx(np.mean(differences)) and line["n"] == 4
    assert line["claim_verdict"] == CONFIRMED and "examples 300–1,000" in line["note"]
    late = histories.assign(examples=histories["examples"] + 2000 * (histories["experiment"] == "hidden"))
    late_line = judge(None, None, late, claims=[speed]).iloc[0]
    assert late_line["verdict"] == NOT_RESOLVABLE and "first evaluated after 2,100 examples" in late_line["note"]
    assert judge(None, None, None, claims=[speed]).iloc[0]["verdict"] == NOT_RUN
