"""mtlib.study.scorecard: the claims as data, the verdict rules (p-values, Holm, the symmetric
combination, MDE-sized margins), and verdicts on made-up tables and constructed studies."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as scipy_stats

from mtlib.config import read_params
from mtlib.study.report import METRICS, bootstrap_runs, collect_runs, summarise
from mtlib.study.scorecard import (BETTER, BUDGET_HEADING, CLAIMS, CONFIRMED, CONTRADICTED, CURVE, DEV, DIRECTIONS,
                                   LEGEND, NO_EFFECT, NOT_RESOLVABLE, NOT_RUN, PRIMARY, RULE, SECONDARY, SPEED,
                                   SPEED_COLUMN, WORSE, Claim, Comparison, budget_markdown, combine, decide_all, holm,
                                   judge, power_table, primary_comparisons, report_difference, schedule_note,
                                   scorecard_markdown, verdict)
from mtlib.study.stats import curve_mean
from tests.helpers import ROOT, dev_labels, write_predicted_run, write_task_files

PARAMS = read_params(ROOT / "params.yaml")
ROWS = PARAMS["experiments"]  # the table's rows, with the report's numbers
BASE = {"label": "BaseModel: BERT + sentence concat", "sst": 0.465, "para": 0.731, "sts": 0.749, "mean": 0.648}
ANNEALED = {"label": "BaseModel + annealed schedule", "sst": 0.499, "para": 0.869, "sts": 0.856, "mean": 0.741}
Z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)  # the MDE's quantiles as seeds grow without bound
#: Rows the claims name that other branches of this change add to params.yaml (issue 16/20:
#: the compute-matched continuations, the augmentation's split rows, the equal-example
#: single-task rows); any other name a claim uses must already be an experiment.
ROWS_ADDED_ELSEWHERE = {"continued", "continued_heads", "hidden_length_filter", "hidden_eda", "single_sst_matched",
                        "single_para_matched", "single_sts_matched"}


def test_the_scorecard_covers_every_claim_of_the_issues():
    assert [c.name for c in CLAIMS] == [
        "annealed", "sentence_concat", "individual_pretraining", "hidden", "augmentation", "gradient_surgery",
        "compromise_speed", "recurrent_heads", "rnn_cls", "pal_start", "pal_after", "schedule_cost", "smart",
        "adjustment_matrix", "cosine_para", "title_sst", "title_para", "title_sts"]
    names = set()
    for claim in CLAIMS:
        assert claim.direction in DIRECTIONS and claim.primary, claim.name
        for comparison in claim.comparisons:
            names |= {comparison.experiment, comparison.reference}
            assert comparison.metric in METRICS
    assert names - set(ROWS) <= ROWS_ADDED_ELSEWHERE


def test_primary_comparisons_are_declared_data_with_sst_wherever_the_claim_allows():
    table = primary_comparisons()
    assert list(table.columns) == ["claim", "experiment", "reference", "metric", "direction", "statistic"]
    assert len(table) == sum(len(c.primary) for c in CLAIMS)
    first = table.groupby("claim", sort=False).first()
    assert first.loc["pal_after", ["experiment", "reference", "metric"]].tolist() == ["pal_after", "continued", "sst"]
    assert first.loc["hidden", "reference"] == "base_annealed" and first.loc["augmentation", "reference"] == "hidden"
    assert first.loc["rnn_cls", ["experiment", "reference"]].tolist() == ["hidden_rnn128_cls", "hidden_rnn128"]
    for task in ("sst", "para", "sts"):  # the title question rests on equal examples of the task, on its metric
        assert first.loc[f"title_{task}", ["reference", "metric"]].tolist() == [f"single_{task}_matched", task]
    # para and the mean (which holds para) only where the claim is about them: the backbone saw Quora
    assert set(table.loc[table["metric"] == "para", "claim"]) == {"cosine_para", "title_para"}
    assert set(table.loc[(table["metric"] == "mean") & (table["statistic"] == DEV), "claim"]) == {"gradient_surgery"}


def test_the_report_own_numbers_agree_with_each_claim_as_written():
    # a claim whose primary comparisons the report's Table 2 does not support would be mis-transcribed
    # ('no effect' read at the report's own scale, one point; rows the report lacks have no number)
    for claim in (c for c in CLAIMS if c.statistic == DEV):
        for comparison in claim.primary:
            delta, ours, theirs = report_difference(comparison, ROWS)
            if not math.isnan(delta):
                assert verdict(claim.direction, delta, delta, 0.01) == CONFIRMED, (claim.name, comparison, ours, theirs)


@pytest.mark.parametrize("direction, lo, hi, expected", [
    (BETTER, 0.001, 0.02, CONFIRMED), (BETTER, -0.02, -0.001, CONTRADICTED), (BETTER, -0.01, 0.02, NOT_RESOLVABLE),
    (BETTER, 0.0, 0.02, NOT_RESOLVABLE), (WORSE, -0.02, -0.001, CONFIRMED), (WORSE, 0.001, 0.02, CONTRADICTED),
    (WORSE, -0.01, 0.01, NOT_RESOLVABLE), (NO_EFFECT, -0.005, 0.008, CONFIRMED),
    (NO_EFFECT, 0.002, 0.006, CONFIRMED),          # a real but negligible effect is "no real influence"
    (NO_EFFECT, 0.011, 0.03, CONTRADICTED), (NO_EFFECT, -0.05, -0.02, CONTRADICTED),
    (NO_EFFECT, 0.005, 0.03, NOT_RESOLVABLE), (NO_EFFECT, -0.02, 0.02, NOT_RESOLVABLE),
    (BETTER, math.nan, math.nan, NOT_RESOLVABLE)])
def test_interval_verdict_rules(direction, lo, hi, expected):
    assert verdict(direction, lo, hi, 0.01) == expected


def test_the_combination_rule_is_symmetric():
    assert combine([CONFIRMED, CONFIRMED]) == CONFIRMED
    assert combine([CONTRADICTED, CONTRADICTED]) == CONTRADICTED
    assert combine([CONFIRMED, CONTRADICTED]) == NOT_RESOLVABLE    # one contradiction no longer decides alone
    assert combine([CONFIRMED, NOT_RESOLVABLE]) == NOT_RESOLVABLE
    assert combine([CONTRADICTED, NOT_RESOLVABLE]) == NOT_RESOLVABLE
    swap = {CONFIRMED: CONTRADICTED, CONTRADICTED: CONFIRMED, NOT_RESOLVABLE: NOT_RESOLVABLE, NOT_RUN: NOT_RUN}

    def mirror(text):  # swap confirmed and contradicted in a claim verdict
        word = next(w for w in swap if text.startswith(w))
        return swap[word] + text[len(word):]
    for n in (1, 2, 3):  # contradicting every comparison mirrors confirming every one, and so on
        for verdicts in itertools.product(swap, repeat=n):
            assert combine([swap[v] for v in verdicts]) == mirror(combine(list(verdicts))), verdicts
    assert combine([CONFIRMED, CONTRADICTED, NOT_RUN]) == f"{NOT_RESOLVABLE} (on the 2 of 3 comparisons run)"
    assert combine([CONFIRMED, NOT_RUN]) == f"{CONFIRMED} (on the 1 of 2 comparisons run)"
    assert combine([NOT_RUN, NOT_RUN]) == NOT_RUN and combine([]) == NOT_RUN
    assert RULE in LEGEND  # stated once, shown in the legend


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(that, 2 x 0.03), max(that, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


# ---------------------------------------------------------------------------------------
# Verdicts on a small made-up table with known answers

def made_up(claim, estimate, direction=BETTER, role=PRIMARY, dev_se=0.01, ran=True):
    # sd 0 and a dev-sample SE: a z-test with SE = dev_se (infinite degrees of freedom)
    return {"claim": claim, "direction": direction, "role": role, "ran": ran, "estimate": estimate,
            "lo": estimate - 1.96 * dev_se, "hi": estimate + 1.96 * dev_se, "n": 5, "sd": 0.0, "dev_se": dev_se,
            "df": math.inf}


def test_verdicts_follow_from_the_columns_of_a_made_up_table():
    table = decide_all(pd.DataFrame([
        made_up("A", 0.030),                        # z 3.0: p 0.0027, Holm 4 x 0.0027 = 0.0108: confirmed
        made_up("B", 0.022),                        # z 2.2: p 0.0278, Holm 2 x 0.0278 = 0.0556: resolution lost
        made_up("C", -0.025),                       # z -2.5: p 0.0124, Holm 3 x 0.0124 = 0.0373: contradicted
        made_up("D", 0.010, direction=NO_EFFECT),   # margin 2.80 x 0.01 = 0.028; TOST p 2 P(Z > 1.8) = 0.072
        made_up("C", 0.050, role=SECONDARY),        # shown, never Holm-corrected, never deciding
        made_up("E", 0.1, ran=False)]))
    z = scipy_stats.norm.sf
    p = {"A": 2 * z(3.0), "B": 2 * z(2.2), "C": 2 * z(2.5), "D": 2 * z((Z * 0.01 - 0.010) / 0.01)}
    assert table["p"].tolist()[:4] == pytest.approx(list(p.values()))
    ordered = sorted(p.values())
    holm_by_hand = {k: max(min(1, (4 - i) * q) for i, q in enumerate(ordered[:ordered.index(v) + 1]))
                    for k, v in p.items()}
    assert table["p_holm"].tolist()[:4] == pytest.approx(list(holm_by_hand.values()))
    assert holm_by_hand["B"] > 0.05 > p["B"]
    assert table["margin"][3] == pytest.approx(Z * 0.01) and math.isnan(table["margin"][0])
    assert table["verdict_uncorrected"].tolist() == [CONFIRMED, CONFIRMED, CONTRADICTED, NOT_RESOLVABLE, CONFIRMED,
                                                     NOT_RUN]
    assert table["verdict"].tolist() == [CONFIRMED, NOT_RESOLVABLE, CONTRADICTED, NOT_RESOLVABLE, CONFIRMED, NOT_RUN]
    assert math.isnan(table["p_holm"][4]) and math.isnan(table["p"][5])  # a row not run is outside the family
    assert table.groupby("claim", sort=False)["claim_verdict"].first().to_dict() == {
        "A": CONFIRMED, "B": NOT_RESOLVABLE, "C": CONTRADICTED, "D": NOT_RESOLVABLE, "E": NOT_RUN}
    # each row's MDE on its own: the floor is the dev-sample part, the seed part 0 here
    assert table["mde_floor"].tolist()[:4] == pytest.approx([Z * 0.01] * 4)


def test_no_effect_margins_follow_each_comparisons_detectable_effect():
    # the margin is the comparison's MDE, (z_.975 + z_.80) SE here: "no effect" means no effect this
    # comparison could detect. The same Δ of 0.004 is within the margin of a comparison with SE 0.01
    # (0.028; TOST p 2 P(Z > 2.4)), beyond that of one with SE 0.001 (0.0028) without being wholly
    # outside it (p 2 P(Z > 1.2)); 0.2 with SE 0.01 is wholly outside 0.028
    table = decide_all(pd.DataFrame([made_up("coarse", 0.004, NO_EFFECT, dev_se=0.01),
                                     made_up("fine", 0.004, NO_EFFECT, dev_se=0.001),
                                     made_up("large", 0.2, NO_EFFECT, dev_se=0.01)]))
    assert table["margin"].tolist() == pytest.approx([Z * 0.01, Z * 0.001, Z * 0.01])
    z = scipy_stats.norm.sf
    assert table["p"].tolist() == pytest.approx([2 * z((Z * 0.01 - 0.004) / 0.01), 2 * z((0.004 - Z * 0.001) / 0.001),
                                                 2 * z((0.2 - Z * 0.01) / 0.01)])
    assert table["verdict_uncorrected"].tolist() == [CONFIRMED, NOT_RESOLVABLE, CONTRADICTED]


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


def claim(name, direction, *experiments, metric="mean", secondary=()):
    return Claim(name, f"{name} words", direction, tuple(Comparison(e, "base_model", metric) for e in experiments),
                 tuple(Comparison(e, "base_model", metric) for e in secondary))


def test_constructed_claims_get_the_verdicts_their_data_imply(study):
    runs, replicates = study
    claims = [claim("up", BETTER, "better"), claim("down", BETTER, "worse"), claim("flat", BETTER, "same"),
              claim("big", NO_EFFECT, "better"), claim("cut", BETTER, "pal_start"),
              claim("both", BETTER, "better", "same"), claim("worse", WORSE, "worse", metric="sts"),
              claim("mixed", BETTER, "better", "worse"), claim("aside", BETTER, "better", secondary=["worse"])]
    card = judge(runs, replicates, claims=claims)
    verdicts = card.groupby("claim", sort=False)["claim_verdict"].first()
    assert verdicts.to_dict() == {"up": CONFIRMED, "down": CONTRADICTED, "flat": NOT_RESOLVABLE, "big": CONTRADICTED,
                                  "cut": NOT_RUN, "both": NOT_RESOLVABLE, "worse": CONFIRMED,
                                  "mixed": NOT_RESOLVABLE, "aside": CONFIRMED}
    aside = card[card["claim"] == "aside"]
    assert aside["role"].tolist() == [PRIMARY, SECONDARY] and aside["verdict"].tolist() == [CONFIRMED, CONTRADICTED]
    primary = card[(card["role"] == PRIMARY) & card["p"].notna()]
    assert (primary["p_holm"] >= primary["p"]).all() and primary["p_holm"].max() <= 1


def test_a_comparison_is_the_tables_paired_delta_and_its_p_the_intervals(study):
    runs, replicates = study
    rows = {"base_model": {"report": BASE}, "better": {"report": ANNEALED, "parent": "base_model"}}
    summary = summarise(runs, rows, replicates).set_index("experiment")
    line = judge(runs, replicates, rows=rows, claims=[claim("up", BETTER, "better")]).iloc[0]
    assert line["n"] == 4 and line["estimate"] == pytest.approx(summary.loc["better", "mean_diff"])
    assert (line["lo"], line["hi"]) == (summary.loc["better", "mean_diff_lo"], summary.loc["better", "mean_diff_hi"])
    assert line["report_diff"] == pytest.approx(0.741 - 0.648)
    # the p-value comes from the interval's own SE and df: at the interval's bound it is exactly 0.05
    half = line["hi"] - line["estimate"]
    assert half == pytest.approx(scipy_stats.t.ppf(0.975, line["df"]) * line["se"])
    assert line["mde_floor"] == pytest.approx(Z * line["dev_se"]) and line["mde_floor"] < line["mde"]
    q = scipy_stats.t.ppf(0.975, line["df"]) + scipy_stats.t.ppf(0.8, line["df"])
    assert line["mde_seed"] == pytest.approx(q * line["sd"] / 2)  # sqrt(4 seeds)
    assert line["mde"] ** 2 == pytest.approx(line["mde_seed"] ** 2 + (q * line["dev_se"]) ** 2)


def test_the_report_claims_on_a_profile_that_ran_none_of_their_rows(study):
    runs, replicates = study
    card = judge(runs, replicates, rows=ROWS)
    assert set(card["claim_verdict"]) == {NOT_RUN} and card["claim"].nunique() == len(CLAIMS)
    assert scorecard_markdown(card).count("**not run at this profile**") == len(CLAIMS)


def test_the_markdown_scorecard_shows_every_column_the_verdict_follows_from(study):
    runs, replicates = study
    rows = {"better": {"report": ANNEALED}, "base_model": {"report": BASE}}
    claims = [claim("up", BETTER, "better"), claim("cut", BETTER, "pal_start"),
              claim("big", NO_EFFECT, "better", secondary=["worse"])]
    card = judge(runs, replicates, rows=rows, claims=claims)
    md = scorecard_markdown(card)
    assert ("| claim | primary comparison | the report | Δ [95% interval] | p | Holm p | MDE (seed part, floor) | "
            "margin | rule | verdict |") in md
    up = card.iloc[0]
    theirs, reference = ANNEALED["mean"], BASE["mean"]
    assert (f"| up words | better − base_model (mean; 4 seeds) | {theirs:.3f} vs {reference:.3f} "
            f"({theirs - reference:+.3f}) | {up['estimate']:+.3f} [{up['lo']:+.3f}, {up['hi']:+.3f}] | <0.001 | "
            f"<0.001 | {up['mde']:.3f} ({up['mde_seed']:.3f}, {up['mde_floor']:.3f}) | – | one comparison | "
            "**confirmed** |") in md
    assert "| cut words | pal_start − base_model (mean; 0 seeds) | – | not run |" in md
    big = card[card["claim"] == "big"].iloc[0]
    assert f"| {big['margin']:.3f} | one comparison | **contradicted** |" in md
    assert BUDGET_HEADING not in md
    assert scorecard_markdown(card, "SECTION") == md + f"\n{BUDGET_HEADING}\n\nSECTION\n"
    assert big["test"] == "H0: |Δ| ≤ margin" and "<0.001 (H0: \\|Δ\\| ≤ margin)" in md  # which test a 'no effect' p is
    assert "## Secondary comparisons" in md and "| big | worse − base_model (mean; 4 seeds) |" in md


# ---------------------------------------------------------------------------------------
# Learning speed, cost and the schedules' room

def history(experiment, seed, examples, scores):
    return pd.DataFrame({"experiment": experiment, "seed": seed, "examples": examples, "mean": scores})


def test_learning_speed_is_the_area_under_the_validation_curve_over_the_common_run():
    # the compromise run evaluates every 300 examples to 3,900, the annealed one every 100 to 4,000:
    # the common window is 300-3,900, and on parallel straight lines Δ is the lift
    rng = np.random.default_rng(0)
    frames, lifts = [], []
    for seed in (1, 2, 3, 4):
        fast_x, slow_x = np.arange(300, 4000, 300), np.arange(100, 4001, 100)
        lift = 0.02 + rng.normal(0, 0.002)
        lifts.append(lift)
        frames += [history("hidden_compromise", seed, fast_x, 0.3 + lift + fast_x / 1e4),
                   history("hidden", seed, slow_x, 0.3 + slow_x / 1e4)]
    histories = pd.concat(frames, ignore_index=True)
    speed = next(c for c in CLAIMS if c.name == "compromise_speed")
    speed = Claim(speed.name, speed.words, speed.direction, tuple(Comparison(c.experiment, c.reference, "mean")
                                                                  for c in speed.primary), statistic=CURVE)
    line = judge(None, None, histories, claims=[speed]).iloc[0]
    assert line["estimate"] == pytest.approx(np.mean(lifts)) and line["n"] == 4
    assert line["claim_verdict"] == CONFIRMED and "examples 300–3,900" in line["note"]
    # a learner that is ahead early and ends level: a known area (a triangle of height 0.06 over 300-1,500)
    ahead = histories.copy()
    fast = ahead["experiment"] == "hidden_compromise"
    x = ahead.loc[fast, "examples"]
    ahead.loc[fast, "mean"] = 0.3 + x / 1e4 + np.clip(0.06 * (1500 - x) / 1200, 0, None)
    line = judge(None, None, ahead, claims=[speed]).iloc[0]
    assert line["estimate"] == pytest.approx(0.5 * 0.06 * 1200 / 3600)
    assert curve_mean([300, 1500, 3900], [0.06, 0.0, 0.0], 300, 3900) == pytest.approx(line["estimate"])
    late = histories.assign(examples=histories["examples"] + 5000 * (histories["experiment"] == "hidden"))
    late_line = judge(None, None, late, claims=[speed]).iloc[0]
    assert late_line["verdict"] == NOT_RESOLVABLE and "first evaluated after 5,100 examples" in late_line["note"]
    assert judge(None, None, None, claims=[speed]).iloc[0]["verdict"] == NOT_RUN


def test_the_cost_claim_is_the_paired_ratio_of_training_speed(tmp_path):
    rng = np.random.default_rng(3)
    ratios, rows = [], []
    for seed in range(1, 6):
        pcgrad = 1000 * (1 + rng.normal(0, 0.05))
        ratio = 1.25 + rng.normal(0, 0.02)
        ratios.append(ratio)
        rows += [{"experiment": "hidden", "seed": seed, SPEED_COLUMN: pcgrad * ratio},
                 {"experiment": "hidden_pcgrad", "seed": seed, SPEED_COLUMN: pcgrad}]
    cost = next(c for c in CLAIMS if c.name == "schedule_cost")
    bench = tmp_path / "bench_combiners_x.json"
    bench.write_text(json.dumps({"ratios_vs_sum": {"sum": {"median_step": 1.0}, "pcgrad": {"median_step": 1.107}}}))
    card = judge(pd.DataFrame(rows), None, claims=[cost], benchmarks=[bench])
    assert "a pcgrad update costs ×1.11 (bench_combiners_x.json) a plainly summed one" in card["note"][0]
    line = card.iloc[0]
    assert line["estimate"] == pytest.approx(np.mean(np.log(ratios))) and line["statistic"] == SPEED
    assert line["claim_verdict"] == CONFIRMED and math.isnan(line["report_diff"])  # dev numbers do not belong here
    assert f"×{math.exp(line['estimate']):.2f} [×{math.exp(line['lo']):.2f}, ×{math.exp(line['hi']):.2f}]" in \
        scorecard_markdown(card)


def test_schedule_notes_are_computed_from_the_configs_epochs(tmp_path):
    assert schedule_note("annealed", 10, 10) == ""
    note = schedule_note("annealed", 2, 10)
    assert "1.00, 0.20 over this profile's 2 epoch(s)" in note and "1.00, 0.91," in note
    assert "0.20, 1.00 over this profile's 2" in schedule_note("compromise", 2, 10)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["profiles"]["cpu"]["train"]["epochs"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    card = judge(None, None, None, rows={}, claims=[c for c in CLAIMS if c.name in ("annealed", "hidden")],
                 params=tmp_path / "params.yaml", profile="cpu")
    notes = card.groupby("claim", sort=False)["note"].first()
    assert "α per epoch is 1.00, 0.60, 0.20 over this profile's 3 epoch(s)" in notes["annealed"]
    assert "epoch" not in notes["hidden"]


def test_the_power_table_gives_each_comparison_its_own_detectable_effect():
    table = decide_all(pd.DataFrame([
        {**made_up("coupled", 0.01, dev_se=0.0005), "sd": 0.0009, "df": 40.0},
        {**made_up("independent", 0.01, dev_se=0.0064), "sd": 0.02, "df": 6.0}]))
    table = table.assign(experiment=["a", "b"], reference=["c", "d"], metric="sst", statistic=DEV)
    power = power_table(table).set_index("claim")
    assert power.loc["coupled", "mde"] < power.loc["independent", "mde"]
    assert power.loc["independent", "mde_floor"] == pytest.approx(Z * 0.0064)
    se = math.sqrt(0.02 ** 2 / 5 + 0.0064 ** 2)
    independent = power.loc["independent"]
    assert independent["mde_seed"] == pytest.approx(independent["mde"] * 0.02 / math.sqrt(5) / se)
    assert power.loc["independent", "comparison"] == "b − d"


def test_the_budget_section_follows_claims_with_a_curve_and_names_the_others():
    card = pd.DataFrame({"claim": ["up", "up", "fast", "matrix"],
                         "claim_verdict": [CONFIRMED, CONFIRMED, NOT_RESOLVABLE, CONTRADICTED],
                         "statistic": [DEV, DEV, SPEED, DEV]})
    columns = pd.DataFrame([
        {"claim": "up", "experiment": "better", "reference": "base_model", "metric": "sst", "direction": BETTER,
         "first_delta": 0.01, "first_lo": -0.02, "first_hi": 0.04, "first_n": 6, "last_delta": 0.03,
         "last_lo": 0.01, "last_hi": 0.05, "last_n": 6, "budget_delta": 0.05, "budget_lo": 0.02, "budget_hi": 0.08,
         "budget_n": 3, "stability": "holds", "stability_from": "last -> budget"},
        {"claim": "matrix", "experiment": "adjusted", "reference": "plain", "metric": "sst", "direction": NO_EFFECT,
         **{f"{p}_{c}": math.nan for p in ("first", "last", "budget") for c in ("delta", "lo", "hi")},
         "first_n": 0, "last_n": 0, "budget_n": 0, "stability": None, "stability_from": "first -> last"},
    ]).set_index("claim")
    section = budget_markdown(card, columns)
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    # one row per claim with a curve, integer seed counts, its verdict beside it; no 'nan' anywhere
    assert rows == [f"| up | {CONFIRMED} | better − base_model (sst) | +0.010 [-0.020, +0.040] (n=6) | "
                    "+0.030 [+0.010, +0.050] (n=6) | +0.050 [+0.020, +0.080] (n=3) | holds (last -> budget) |"]
    assert "nan" not in section.lower()
    assert section.endswith("No validation curve to follow: fast (measured by training speed); "
                            "matrix (its runs keep no validation history).")
