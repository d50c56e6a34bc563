"""The report's claims, judged by this study's runs.

Each claim of the report (its section 5 and Table 2, as listed in the study's issue) is
data: the report's words, the claimed direction, and the comparisons it rests on (an
experiment against a reference, on one metric). :func:`judge` measures each comparison
as a paired difference over the seeds both ran, with the 95% interval of the results
table (mtlib.study.stats.interval: seeds and dev sample), and gives a verdict:

- a directional claim ('better' / 'worse'): **confirmed** when the interval excludes 0 on
  the claimed side, **contradicted** when it excludes 0 on the other side, otherwise
  **not resolvable at this profile**;
- a 'no effect' claim, with an equivalence margin m (:data:`MARGIN`, one point on the
  0-1 scale of every metric: the report calls differences of 0.1-0.3 points "no real
  influence" and differences of 0.5-0.6 points "small gains"): **confirmed** when the
  whole interval lies within [-m, +m], **contradicted** when it lies wholly outside
  (the effect is larger than m, in either direction), otherwise not resolvable. An
  interval that excludes 0 but stays within the margin confirms: a real but negligible
  effect is what "did not really influence" means;
- a comparison whose experiment or reference has no run (cut from the profile) is
  **not run at this profile**.

A claim resting on several comparisons holds only if each does: it is contradicted if any
comparison is contradicted, confirmed if every comparison is confirmed, and not resolvable
otherwise; it is judged on the comparisons the profile ran, and says how many of them that
is when some were not run (a profile cuts rows to fit its budget), or "not run at this
profile" when none was.

Gradient Compromise's "much faster at learning" is judged on validation curves
(history.csv), at matched numbers of training examples seen (one Gradient Compromise
update consumes a whole group of batches, so updates are not comparable): the statistic
is each run's mean validation score over the first part of training,
mtlib.study.stats.curve_mean from the latest first evaluation of the runs compared to
:data:`EARLY_FRACTION` of the fewest examples any of them saw in total, paired by seed. Its
interval is the t-interval over seeds (the validation examples are not stored, so there
is no dev-sample part; every run uses the same validation rows).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from mtlib.study.report import METRICS, markdown_rows, report_row, seed_interval
from mtlib.study.stats import Interval, Replicates, curve_mean, interval
from mtlib.tasks import metric_key

BETTER, WORSE, NO_EFFECT = "better", "worse", "no effect"
CONFIRMED, CONTRADICTED = "confirmed", "contradicted"
NOT_RESOLVABLE, NOT_RUN = "not resolvable at this profile", "not run at this profile"
MARGIN = 0.01           # the equivalence margin of 'no effect' claims (module docstring)
EARLY_FRACTION = 0.25   # "the first part of training" for the learning-speed claim
DEV, EARLY = "dev", "early learning"  # what a claim's comparisons measure


@dataclass(frozen=True)
class Comparison:
    """``experiment`` against ``reference`` on ``metric`` (a task or 'mean'): Δ = experiment − reference."""
    experiment: str
    reference: str
    metric: str = "mean"


@dataclass(frozen=True)
class Claim:
    name: str
    words: str                           # the report's claim, in its words where quoted
    direction: str                       # BETTER, WORSE or NO_EFFECT
    comparisons: tuple[Comparison, ...]
    statistic: str = DEV                 # DEV: paired Δ of dev scores; EARLY: of early validation curves
    note: str = ""                       # what the comparisons leave out, and why


def _each(experiments: Sequence[str], reference: str, metrics: Sequence[str] = ("mean",)) -> tuple[Comparison, ...]:
    return tuple(Comparison(e, reference, m) for e in experiments for m in metrics)


CLAIMS: tuple[Claim, ...] = (
    Claim("annealed", 'the annealed schedule "massively improved" SST and STS', BETTER,
          (*_each(["base_annealed"], "base_model", ["sst", "sts"]),
           *_each(["base_annealed"], "base_round_robin", ["sst", "sts"]),
           *_each(["embedding_concat_annealed"], "embedding_concat", ["sst", "sts"])),
          note="against the random sampler and against round robin, the report's schedule before annealing"),
    Claim("sentence_concat", "sentence concatenation was the largest gain (STS .337 → .749)", BETTER,
          (Comparison("base_model", "embedding_concat", "sts"),
           Comparison("base_annealed", "embedding_concat_annealed", "sts")),
          note="with the sampler held fixed (the report's .337 → .749 also changes the sampler); "
               "'largest' is not tested"),
    Claim("individual_pretraining", 'individual head pretraining made "a massive difference"', BETTER,
          _each(["advanced_model"], "augmented")),
    Claim("hidden_and_augmentation", "one hidden layer and data augmentation gave small gains", BETTER,
          (Comparison("hidden", "base_annealed"), Comparison("augmented", "hidden"))),
    Claim("gradient_surgery", "gradient surgery scored below the annealed schedule", WORSE,
          _each(["hidden_pcgrad", "hidden_gradvac", "hidden_compromise"], "hidden")),
    Claim("compromise_speed", 'Gradient Compromise "was much faster at learning"', BETTER,
          _each(["hidden_compromise"], "hidden"), statistic=EARLY,
          note="validation mean over the first part of training, at matched examples seen"),
    Claim("recurrent_heads", "every RNN / LSTM head scored below the MLP head", WORSE,
          _each(["hidden_rnn128", "hidden_rnn128_cls", "hidden_lstm128_cls", "hidden_lstm256_cls"], "hidden"),
          note="the STS-only LSTM row is left out: the report's own numbers put it above the MLP head"),
    Claim("pal_start", "PALs trained from the start hurt", WORSE, _each(["pal_start"], "advanced_model")),
    Claim("pal_after", "PALs added after fine-tuning added about 0.3%", BETTER, _each(["pal_after"], "advanced_model")),
    Claim("smart", 'SMART "did not really influence" the results', NO_EFFECT,
          _each(["hidden_gradvac_smart"], "hidden_gradvac")),
    Claim("adjustment_matrix", 'the SST adjustment matrix "did not really influence" the results', NO_EFFECT,
          _each(["pal_after_adjusted"], "pal_after", ["sst"]), note="SST only: the matrix changes nothing else"),
)


# ---------------------------------------------------------------------------------------
# Verdicts

DIRECTIONS = (BETTER, WORSE, NO_EFFECT)


def verdict(direction: str, lo: float, hi: float) -> str:
    """The verdict on one comparison from its 95% interval [lo, hi] (module docstring);
    NaN bounds (no interval: fewer than two seeds, or too few evaluations) are not resolvable."""
    if direction not in DIRECTIONS:
        raise KeyError(f"unknown direction {direction!r}; known: {list(DIRECTIONS)}")
    if math.isnan(lo) or math.isnan(hi):
        return NOT_RESOLVABLE
    if direction == NO_EFFECT:
        if -MARGIN <= lo and hi <= MARGIN:
            return CONFIRMED
        return CONTRADICTED if lo > MARGIN or hi < -MARGIN else NOT_RESOLVABLE
    if direction == WORSE:
        lo, hi = -hi, -lo  # a claimed decrease is a claimed increase of -Δ
    return CONFIRMED if lo > 0 else CONTRADICTED if hi < 0 else NOT_RESOLVABLE


def combine(verdicts: Sequence[str]) -> str:
    """A claim's verdict from its comparisons' (module docstring): every one that ran must hold."""
    ran = [v for v in verdicts if v != NOT_RUN]
    if not ran:
        return NOT_RUN
    overall = (CONTRADICTED if CONTRADICTED in ran else CONFIRMED if all(v == CONFIRMED for v in ran)
               else NOT_RESOLVABLE)
    return overall if len(ran) == len(verdicts) else f"{overall} (on the {len(ran)} of {len(verdicts)} comparisons run)"


# ---------------------------------------------------------------------------------------
# Measuring the comparisons

def dev_difference(comparison: Comparison, runs: pd.DataFrame, replicates: Replicates) -> Interval | None:
    """The paired Δ of dev scores over the seeds at which both experiments have the metric,
    with its 95% interval (seeds and dev sample), as the results table computes a row's Δ
    to its parent; None if either side did not run."""
    names = (comparison.experiment, comparison.reference)
    scored = runs[runs["experiment"].isin(names) & runs[comparison.metric].notna()]
    seeds = sorted(set.intersection(*(set(scored.loc[scored["experiment"] == n, "seed"].astype(int)) for n in names)))
    if not seeds:
        return None
    return seed_interval(replicates, comparison.metric, comparison.experiment, seeds, comparison.reference)


def early_budget(histories: pd.DataFrame, names: Sequence[str], seeds: Sequence[int]) -> tuple[float, float]:
    """(start, stop) examples seen of the early window: from the latest first evaluation of the
    runs to :data:`EARLY_FRACTION` of the fewest examples any of them saw by its last evaluation."""
    runs = histories[histories["experiment"].isin(names) & histories["seed"].isin(seeds)]
    per_run = runs.groupby(["experiment", "seed"])["examples"]
    return float(per_run.min().max()), EARLY_FRACTION * float(per_run.max().min())


def early_difference(comparison: Comparison, histories: pd.DataFrame) -> tuple[Interval | None, str]:
    """The paired Δ of the early-window mean validation score (module docstring) and a note
    naming the window; (None, note) if a side has no history."""
    column = "mean" if comparison.metric == "mean" else metric_key(comparison.metric)
    names = (comparison.experiment, comparison.reference)
    if column not in histories:
        return None, f"no {column} in the validation history"
    present = histories[histories["experiment"].isin(names) & histories[column].notna()]
    seeds = sorted(set.intersection(*(set(present.loc[present["experiment"] == n, "seed"]) for n in names)))
    if not seeds:
        return None, "no validation history"
    start, stop = early_budget(present, names, seeds)
    areas = {n: [curve_mean(*_curve(present, n, s, column), start, stop) for s in seeds] for n in names}
    differences = [a - b for a, b in zip(areas[names[0]], areas[names[1]])]
    if start >= stop:
        return Interval(math.nan, math.nan, math.nan, len(seeds)), (
            f"no common early window: a run is first evaluated after {start:,.0f} examples, "
            f"beyond {EARLY_FRACTION:.0%} of training ({stop:,.0f}); evaluate more often")
    return interval(differences), f"validation {column} averaged over examples {start:,.0f}–{stop:,.0f}"


def _curve(histories: pd.DataFrame, experiment: str, seed: int, column: str):
    run = histories[(histories["experiment"] == experiment) & (histories["seed"] == seed)]
    return run["examples"].to_numpy(float), run[column].to_numpy(float)


def report_difference(comparison: Comparison, rows: Mapping) -> tuple[float, float, float]:
    """(report's Δ, its experiment's number, its reference's number) from the rows' report
    rows (:func:`mtlib.study.report.report_row`); NaN where either has no report row."""
    index = list(METRICS).index(comparison.metric)
    numbers = [report_row(rows.get(name))[1][index] for name in (comparison.experiment, comparison.reference)]
    return numbers[0] - numbers[1], numbers[0], numbers[1]


# ---------------------------------------------------------------------------------------
# The scorecard

SCORECARD_COLUMNS = ["claim", "words", "direction", "experiment", "reference", "metric", "n", "estimate", "lo", "hi",
                     "report_diff", "report_experiment", "report_reference", "verdict", "claim_verdict", "note"]


def _measure(claim: Claim, comparison: Comparison, runs, replicates, histories) -> tuple[Interval | None, str]:
    if claim.statistic == EARLY:
        if histories is None:
            return None, "no validation history given"
        return early_difference(comparison, histories)
    return dev_difference(comparison, runs, replicates), ""


def judge(runs: pd.DataFrame, replicates: Replicates, histories: pd.DataFrame | None = None,
          rows: Mapping | None = None, claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per (claim, comparison) of :data:`SCORECARD_COLUMNS`: our Δ (``estimate``) over ``n``
    paired seeds with its 95% interval, the report's Δ and numbers, the comparison's verdict and the claim's.
    ``runs``: mtlib.study.report.collect_runs; ``replicates``: mtlib.study.report.bootstrap_runs;
    ``histories``: mtlib.study.report.collect_histories (for the learning-speed claim);
    ``rows``: params.yaml's experiments (for the report's numbers)."""
    out = []
    for claim in claims:
        lines = []
        for comparison in claim.comparisons:
            result, note = _measure(claim, comparison, runs, replicates, histories)
            judged = NOT_RUN if result is None else verdict(claim.direction, result.lo, result.hi)
            result = result or Interval(math.nan, math.nan, math.nan, 0)
            report = report_difference(comparison, rows or {})
            lines.append({"claim": claim.name, "words": claim.words, "direction": claim.direction,
                          "experiment": comparison.experiment, "reference": comparison.reference,
                          "metric": comparison.metric, "n": result.n, "estimate": result.estimate,
                          "lo": result.lo, "hi": result.hi, "report_diff": report[0], "report_experiment": report[1],
                          "report_reference": report[2], "verdict": judged,
                          "note": "; ".join(x for x in (claim.note, note) if x)})
        overall = combine([line["verdict"] for line in lines])
        out += [{**line, "claim_verdict": overall} for line in lines]
    return pd.DataFrame(out, columns=SCORECARD_COLUMNS)


def _ours(line: Mapping) -> str:
    if line["verdict"] == NOT_RUN:
        return f"{line['metric']}: not run"
    estimate = "–" if math.isnan(line["estimate"]) else f"{line['estimate']:+.3f}"
    bounds = "" if math.isnan(line["lo"]) else f" [{line['lo']:+.3f}, {line['hi']:+.3f}]"
    return f"{line['metric']} {estimate}{bounds}"


def _theirs(line: Mapping) -> str:
    if math.isnan(line["report_diff"]):
        return f"{line['metric']}: no number"
    numbers = f"{line['report_experiment']:.3f} vs {line['report_reference']:.3f}"
    return f"{line['metric']} {numbers} ({line['report_diff']:+.3f})"


def scorecard_markdown(scorecard: pd.DataFrame) -> str:
    """:func:`judge`'s frame as a Markdown table, one line per claim: the claim, the
    report's numbers, our Δ with its 95% interval, the comparisons it rests on (with their
    paired seeds) and the verdict; several comparisons share a cell, one per line."""
    body = []
    for _, group in scorecard.groupby("claim", sort=False):
        first = group.iloc[0]
        records = group.to_dict("records")
        rests = [f"{r['experiment']} − {r['reference']} ({r['n']} seeds)" for r in records]
        words = first["words"] + (f" ({first['note']})" if first["note"] else "")
        body.append([words, "<br>".join(map(_theirs, records)), "<br>".join(map(_ours, records)), "<br>".join(rests),
                     f"**{first['claim_verdict']}**"])
    lines = markdown_rows(["claim", "the report", "our Δ [95% interval]", "rests on", "verdict"], body)
    legend = (f"Verdicts: a directional claim is confirmed when the 95% interval of Δ excludes 0 on the "
              f"claimed side and contradicted when it excludes 0 on the other; a 'no effect' claim is "
              f"confirmed when the interval lies within ±{MARGIN:g} and contradicted when it lies wholly "
              f"outside; a claim resting on several comparisons needs every one that ran.")
    return legend + "\n\n" + "\n".join(lines) + "\n"
