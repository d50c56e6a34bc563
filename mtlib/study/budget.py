"""Verdicts against the training budget: each claim's Δ along its runs' validation points
and at a longer budget, with a word for how it moves.

Every claim of the scorecard is judged at the profile's budget, while its runs are still
learning. This module says whether a Δ is "learns faster in the first examples" or "ends
better", from two sources:

- the profile's runs (results/runs): each run's validation history (history.csv, one row
  per validation point). For a claim's primary comparison (experiment against reference on
  a metric) the paired Δ is taken at the runs' FIRST validation point and at their LAST one
  (by position in the history, not by examples: a Gradient Compromise update consumes a
  group of batches, and both runs of a seed are evaluated on the same schedule of
  micro-batches), over the seeds both ran, Δ = experiment − reference of the same seed;
- the budget study's runs (results/budget, notebook 07): the same experiments trained for a
  multiple of the profile's budget. Their Δ is taken at their LAST validation point too,
  not on dev: the three columns are then one measurement (validation, the same rows, the
  last weights of each run) at three budgets, and only the budget changes between them.
  (Dev is scored once per run with the weights its validation selected, which would mix a
  change of split and of selection into the change of budget.)

Each Δ's interval is the paired t-interval over seeds (:func:`mtlib.study.stats.interval`
without a dev part: the validation predictions are not stored). A Δ is RESOLVED when its
interval excludes 0; its sign is then the sign of the estimate.

The stability word compares two of the columns: the Δ at the longest budget measured (the
budget study's, where the claim's experiments were in it; else the last validation point)
against the Δ at the shorter one (the profile's last validation point where the budget
study measured the claim; else the first validation point). ``stability_from`` names them.

- **holds**: the shorter and the longer budget agree: both resolved with the same sign,
  or both unresolved;
- **appears**: unresolved at the shorter budget, resolved at the longer one;
- **vanishes**: resolved at the shorter budget, unresolved at the longer one;
- **reverses**: resolved at both, with opposite signs.

A missing side (no history, fewer than two common seeds) gives no word (None).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from mtlib.record import score_that_counts
from mtlib.study.stats import Interval, interval
from mtlib.tasks import metric_key

HOLDS, APPEARS, VANISHES, REVERSES = "holds", "appears", "vanishes", "reverses"
FIRST, LAST, LONGER = "first", "last", "budget"   # the columns' prefixes
CLAIM_COLUMNS = ("claim", "experiment", "reference", "metric", "direction")


def point_scores(histories: pd.DataFrame, metric: str, position: int) -> pd.DataFrame:
    """One score per run (experiment, seed) at the validation point ``position`` of its
    history (0: the first, -1: the last), in columns experiment, seed, examples, score.
    ``metric``: a task ('sst', 'para', 'sts') or 'mean'; 'mean' of a history without a mean
    column (a run that trains fewer tasks) is mtlib.record.score_that_counts of its row."""
    if histories.empty:
        return pd.DataFrame(columns=["experiment", "seed", "examples", "score"])
    ordered = histories.sort_values(["experiment", "seed", "update"], kind="stable")
    rows = ordered.groupby(["experiment", "seed"], sort=False).nth(position)
    if metric == "mean":
        scored = [score_that_counts({k: v for k, v in row.items() if ("/" in k or k == "mean") and pd.notna(v)})
                  for _, row in rows.iterrows()]
    else:
        column = metric_key(metric)
        scored = rows[column].astype(float).tolist() if column in rows else [math.nan] * len(rows)
    return pd.DataFrame({"experiment": rows["experiment"].to_numpy(), "seed": rows["seed"].to_numpy(),
                         "examples": rows["examples"].to_numpy() if "examples" in rows else np.nan,
                         "score": scored})


def paired_delta(scores: pd.DataFrame, experiment: str, reference: str) -> Interval | None:
    """The paired Δ (experiment − reference, same seed) of :func:`point_scores` over the seeds
    both have a score for; None when they share no seed."""
    table = scores.pivot_table(index="seed", columns="experiment", values="score", aggfunc="first")
    if experiment not in table or reference not in table:
        return None
    both = table[[experiment, reference]].dropna()
    if both.empty:
        return None
    return interval((both[experiment] - both[reference]).to_numpy())


def stability(shorter: Interval | None, longer: Interval | None) -> str | None:
    """holds / appears / vanishes / reverses (module docstring); None if either side is
    missing or has no interval (fewer than two seeds)."""
    if shorter is None or longer is None or shorter.resolved is None or longer.resolved is None:
        return None
    if shorter.resolved and longer.resolved:
        return HOLDS if math.copysign(1, shorter.estimate) == math.copysign(1, longer.estimate) else REVERSES
    if shorter.resolved:
        return VANISHES
    return APPEARS if longer.resolved else HOLDS


def _columns(prefix: str, delta: Interval | None) -> dict:
    if delta is None:
        return {f"{prefix}_delta": math.nan, f"{prefix}_lo": math.nan, f"{prefix}_hi": math.nan, f"{prefix}_n": 0}
    return {f"{prefix}_delta": delta.estimate, f"{prefix}_lo": delta.lo, f"{prefix}_hi": delta.hi,
            f"{prefix}_n": delta.n}


def _examples(scores: pd.DataFrame, names: tuple[str, str]) -> float:
    """The median examples seen at the point, over the runs of both sides (a label for the column)."""
    seen = scores.loc[scores["experiment"].isin(names), "examples"]
    return float(seen.median()) if len(seen) else math.nan


def primary_comparisons(scorecard: pd.DataFrame) -> pd.DataFrame:
    """One row per claim from a scorecard with one line per comparison (columns claim,
    experiment, reference, metric, direction; mtlib.study.scorecard.judge): each claim's
    first primary comparison (column ``role`` where there is one), in the scorecard's order;
    claims measured by training speed (column ``statistic``) are left out."""
    missing = [c for c in CLAIM_COLUMNS if c not in scorecard]
    if missing:
        raise ValueError(f"scorecard: missing column(s) {', '.join(missing)}")
    lines = scorecard
    if "role" in lines:  # a judged scorecard: its primary lines, the secondary ones decide nothing
        lines = lines[lines["role"] == "primary"]
    if "statistic" in lines:  # a claim measured by training speed has no validation curve to follow
        lines = lines[lines["statistic"] != "training speed"]
    return lines.drop_duplicates("claim", keep="first")[list(CLAIM_COLUMNS)].reset_index(drop=True)


def budget_columns(claims: pd.DataFrame, histories: pd.DataFrame,
                   budget_histories: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per claim (``claims``: one row per claim, its primary comparison in columns claim,
    experiment, reference, metric, direction), the paired Δ at the first and the last
    validation point of the profile's runs (``histories``: mtlib.study.report.collect_histories
    of results/runs) and at the last validation point of the budget study's runs
    (``budget_histories``: the same of results/budget; None or empty: not measured), each
    with its interval, seeds and the median examples seen there; then ``stability`` and
    ``stability_from`` (module docstring). Indexed by claim name, in ``claims``' order."""
    missing = [c for c in CLAIM_COLUMNS if c not in claims]
    if missing:
        raise ValueError(f"claims: missing column(s) {', '.join(missing)} (need {', '.join(CLAIM_COLUMNS)})")
    if claims["claim"].duplicated().any():
        raise ValueError(f"claims: one row per claim, got {sorted(set(claims.loc[claims['claim'].duplicated(), 'claim']))} twice")
    budget_histories = budget_histories if budget_histories is not None else pd.DataFrame()
    rows = []
    for claim in claims.itertuples(index=False):
        names = (claim.experiment, claim.reference)
        points = {FIRST: point_scores(histories, claim.metric, 0), LAST: point_scores(histories, claim.metric, -1),
                  LONGER: point_scores(budget_histories, claim.metric, -1)}
        deltas = {prefix: paired_delta(scores, *names) for prefix, scores in points.items()}
        row = {c: getattr(claim, c) for c in CLAIM_COLUMNS}
        for prefix, delta in deltas.items():
            row.update(_columns(prefix, delta))
            row[f"{prefix}_examples"] = _examples(points[prefix], names)
        measured = deltas[LONGER] is not None
        shorter, longer = (LAST, LONGER) if measured else (FIRST, LAST)
        row["stability"] = stability(deltas[shorter], deltas[longer])
        row["stability_from"] = f"{shorter} -> {longer}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("claim")


def stability_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """The budget columns as a markdown table: Δ [interval] at each point, and the word
    (and the claim's verdict at the profile's budget first, where ``table`` has a
    ``claim_verdict`` column)."""
    def cell(row: Mapping, prefix: str) -> str:
        if not row[f"{prefix}_n"]:
            return "–"
        lo, hi = row[f"{prefix}_lo"], row[f"{prefix}_hi"]
        bracket = "" if math.isnan(lo) else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
        return f"{row[f'{prefix}_delta']:+.{digits}f}{bracket} (n={row[f'{prefix}_n']})"

    verdicts = "claim_verdict" in table
    lines = ["| claim |" + (" verdict |" if verdicts else "") + " comparison | first validation point | "
             "last validation point | longer budget | stability |",
             "| --- |" + (" --- |" if verdicts else "") + " --- | --- | --- | --- | --- |"]
    for name, row in table.iterrows():
        word = "–" if pd.isna(row["stability"]) else row["stability"]
        verdict = f" {row['claim_verdict']} |" if verdicts else ""
        lines.append(f"| {name} |{verdict} {row['experiment']} − {row['reference']} ({row['metric']}) | "
                     f"{cell(row, FIRST)} | {cell(row, LAST)} | {cell(row, LONGER)} | {word} ({row['stability_from']}) |")
    return "\n".join(lines)
