"""What the evaluation cuts of a profile cost the intervals: computed from the runs themselves.

A profile scores a sample of the Quora dev file and validates on a split carved from train,
to fit its time budget. Two questions, answered here from the canonical runs' outputs:

- **The Quora dev sample.** Every run scores the same n dev pairs, so the dev-sample part
  of a paired Quora Δ has standard error sd(z) / sqrt(n), with z_i the per-pair difference
  in correctness of the two experiments (1, 0 or -1), averaged over the seeds both ran.
  (Its square estimates the shared part sigma_e^2 of mtlib.study.stats plus a k-th of the
  seed-specific part: a little more than the intervals' dev part, never less.) The same
  pairs give it at another sample size m: sd(z) / sqrt(m) (m pairs drawn from the same file). :func:`quora_dev_se` reports both for each comparison, and
  on the headline mean (the mean of three task metrics: divided by 3).
- **The validation split.** Checkpoint selection picks the validation point with the best
  score. Where the runs are still learning, the climb between points is far larger than the
  validation noise, and the last point is selected whatever the split's size.
  :func:`selection_summary` counts the runs that selected their last point and compares the
  median climb between consecutive points with the standard error of one point's validation
  mean at the split's size (and at another), from the binomial variance p(1-p)/n of each
  accuracy and (1-r^2)^2/n of a Pearson r (large-sample approximations; the validation
  predictions are not stored). Two checkpoints of a run are scored on the same rows, so
  the noise in their difference is at most sqrt(2) times that when their errors are
  positively correlated, as they are.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mtlib.record import score_that_counts
from mtlib.tasks import TASK_NAMES, TASKS, metric_key


def correctness_difference(labels: np.ndarray, predictions: Mapping[tuple[str, int], np.ndarray],
                           experiment: str, reference: str) -> np.ndarray:
    """z_i: (correct by experiment) − (correct by reference) on each dev pair, averaged over
    the seeds both ran; empty when they share no seed."""
    seeds = sorted({s for e, s in predictions if e == experiment} & {s for e, s in predictions if e == reference})
    if not seeds:
        return np.empty(0)
    per_seed = [(predictions[(experiment, s)] == labels).astype(float) - (predictions[(reference, s)] == labels)
                for s in seeds]
    return np.mean(per_seed, axis=0)


def quora_dev_se(labels: np.ndarray, predictions: Mapping[tuple[str, int], np.ndarray],
                 pairs: Sequence[tuple[str, str]], other_n: int) -> pd.DataFrame:
    """Per (experiment, reference) pair: n (the dev pairs scored), the dev-sample standard
    error of the seed-averaged Quora accuracy Δ at n and at ``other_n`` pairs, and both on
    the mean of three tasks (module docstring)."""
    rows = []
    for experiment, reference in pairs:
        z = correctness_difference(labels, predictions, experiment, reference)
        if len(z) < 2:
            continue
        sd = float(np.std(z, ddof=1))
        rows.append({"experiment": experiment, "reference": reference, "n": len(z),
                     "se": sd / math.sqrt(len(z)), "se_other": sd / math.sqrt(other_n),
                     "mean_se": sd / math.sqrt(len(z)) / 3, "mean_se_other": sd / math.sqrt(other_n) / 3})
    return pd.DataFrame(rows, columns=["experiment", "reference", "n", "se", "se_other", "mean_se", "mean_se_other"])


def point_se(scores: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """Standard error of a validation mean (the mean of the tasks' metrics in ``scores``,
    e.g. {'sst/acc': .5, 'para/acc': .7, 'sts/pearson': .6}) on ``sizes`` examples per task:
    binomial for an accuracy, (1 - r^2) / sqrt(n) for a Pearson r."""
    variances = []
    for task in TASK_NAMES:
        column = metric_key(task)
        if column not in scores or pd.isna(scores[column]):
            continue
        value, n = float(scores[column]), int(sizes[task])
        variances.append(value * (1 - value) / n if TASKS[task].integer_labels else (1 - value ** 2) ** 2 / n)
    return math.sqrt(sum(variances)) / len(variances) if variances else math.nan


def selection_summary(histories: pd.DataFrame, sizes: Mapping[str, int], other_sizes: Mapping[str, int]) -> dict:
    """From every run's validation history (mtlib.study.report.collect_histories): how many
    runs there are, how many selected their last point (best score that counts, first best on
    ties, as training keeps it), the median points per run, the median climb of the
    validation score between consecutive points, and the median SE of one point's score at
    ``sizes`` and at ``other_sizes`` (:func:`point_se` of each run's last point)."""
    metric_columns = [c for c in histories.columns if "/" in c or c == "mean"]
    runs, last, points, climbs, se, se_other = 0, 0, [], [], [], []
    for _, run in histories.sort_values("update", kind="stable").groupby(["experiment", "seed"]):
        counted = [score_that_counts(row.dropna().to_dict()) for _, row in run[metric_columns].iterrows()]
        if not counted:
            continue
        runs += 1
        last += int(int(np.argmax(counted)) == len(counted) - 1)
        points.append(len(counted))
        climbs += list(np.diff(counted))
        final = run[metric_columns].iloc[-1].to_dict()
        se.append(point_se(final, sizes))
        se_other.append(point_se(final, other_sizes))
    median = (lambda values: float(np.median(values)) if len(values) else math.nan)
    return {"runs": runs, "selected_last": last, "points": median(points), "climb": median(climbs),
            "se": median(se), "se_other": median(se_other)}


def parse_sizes(text: str) -> dict[str, int]:
    """'sst=300,para=400,sts=300' -> {'sst': 300, 'para': 400, 'sts': 300}."""
    sizes = {}
    for item in text.split(","):
        task, _, value = item.partition("=")
        if task.strip() not in TASK_NAMES or not value.strip().isdigit():
            raise ValueError(f"sizes {text!r}: expected task=count for {', '.join(TASK_NAMES)}, got {item!r}")
        sizes[task.strip()] = int(value)
    return sizes



def width_ratio(seed_differences, dev_se: float, dev_se_other: float) -> float:
    """How much wider a paired Δ's interval is with the dev-sample SE ``dev_se`` than with
    ``dev_se_other``: sqrt(s^2/k + dev_se^2) / sqrt(s^2/k + dev_se_other^2), s the standard
    deviation of the k per-seed differences (mtlib.study.stats: SE^2 = s^2/k + v_dev; the
    t quantile is left out, so this is the ratio of the standard errors). NaN with fewer
    than two seeds, or when the two sides do not differ at all (both SEs 0)."""
    values = np.asarray(seed_differences, float)
    if len(values) < 2:
        return math.nan
    seed_part = float(np.var(values, ddof=1)) / len(values)
    other = seed_part + dev_se_other ** 2
    return math.sqrt(seed_part + dev_se ** 2) / math.sqrt(other) if other > 0 else math.nan


def quora_cut_effect(runs: pd.DataFrame, labels: np.ndarray, predictions: Mapping[tuple[str, int], np.ndarray],
                     pairs: Sequence[tuple[str, str]], other_n: int) -> pd.DataFrame:
    """:func:`quora_dev_se` of each pair with, from ``runs`` (one row per run: experiment,
    seed, para, mean), the ratio of the SE of its Quora Δ and of its mean Δ at the sample's n
    to the same at ``other_n`` (:func:`width_ratio`; for the mean, the Quora part is the only
    dev part counted, so the ratio is an upper bound)."""
    table = quora_dev_se(labels, predictions, pairs, other_n)
    by_run = runs.set_index(["experiment", "seed"])
    para_ratio, mean_ratio = [], []
    for row in table.itertuples(index=False):
        seeds = sorted(set(by_run.loc[row.experiment].index) & set(by_run.loc[row.reference].index))
        differences = {column: [by_run.loc[(row.experiment, s), column] - by_run.loc[(row.reference, s), column]
                                for s in seeds] for column in ("para", "mean")}
        para_ratio.append(width_ratio(differences["para"], row.se, row.se_other))
        mean_ratio.append(width_ratio(differences["mean"], row.mean_se, row.mean_se_other))
    return table.assign(para_width_ratio=para_ratio, mean_width_ratio=mean_ratio)
