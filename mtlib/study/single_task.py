"""The report's title question, per task: does one shared encoder (the multitask BaseModel)
match one model per task?

For each task t, the multitask row (``base_model``) is compared with two single-task rows
that train t alone, on t's dev metric:

- at **equal examples of t** (``single_<t>_matched``): the single-task run sees as many
  examples of t as base_model's sampler gave t, seed by seed (``train.match_examples``,
  mtlib.training.plans.matched_micro_batches); what sharing the encoder with the other
  tasks does to t, its own data held fixed;
- at **equal total compute** (``single_<t>``): the single-task run spends the whole
  micro-batch budget on t; what a practitioner with one model's compute per task would get.

Each Δ = multitask − single-task is the results table's paired difference
(mtlib.study.report.seed_interval): per seed, on the same dev examples (the same example
resamples for both runs), so what a seed or a dev example does to both runs cancels. A
positive Δ means the shared encoder is ahead. The parameter counts come from the runs'
records: one shared encoder and three heads against three encoders, each with its head.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from mtlib.study.plotting import TASK_TITLES, new_figure, save
from mtlib.study.report import seed_interval
from mtlib.study.stats import Interval, Replicates
from mtlib.tasks import TASK_NAMES

MULTITASK = "base_model"
EQUAL_EXAMPLES, EQUAL_COMPUTE = "equal examples", "equal compute"
BUDGETS = {EQUAL_EXAMPLES: "single_{task}_matched", EQUAL_COMPUTE: "single_{task}"}  # budget -> the row's name
COLUMNS = ["task", "budget", "multitask", "single", "n", "multitask_score", "single_score", "estimate", "lo", "hi",
           "dev_lo", "dev_hi", "dev_se", "seed_half", "resolved"]


def single_rows(task: str) -> dict[str, str]:
    """``{budget: experiment}``: the single-task rows of ``task`` (:data:`BUDGETS`)."""
    return {budget: name.format(task=task) for budget, name in BUDGETS.items()}


def paired_seeds(runs: pd.DataFrame, metric: str, names: Sequence[str]) -> list[int]:
    """The seeds at which every experiment of ``names`` has a dev ``metric`` (collect_runs' frame)."""
    scored = runs[runs["experiment"].isin(names) & runs[metric].notna()]
    return sorted(set.intersection(*(set(scored.loc[scored["experiment"] == n, "seed"].astype(int)) for n in names)))


def difference(runs: pd.DataFrame, replicates: Replicates, task: str, single: str,
               multitask: str = MULTITASK) -> tuple[Interval | None, list[int]]:
    """The paired Δ = multitask − single on ``task``'s dev metric over the seeds both ran,
    with its 95% interval (seeds and dev sample, paired by seed and by dev example), and
    those seeds; (None, []) when they share no seed."""
    seeds = paired_seeds(runs, task, (multitask, single))
    if not seeds:
        return None, []
    return seed_interval(replicates, task, multitask, seeds, single), seeds


def compare(runs: pd.DataFrame, replicates: Replicates, multitask: str = MULTITASK,
            tasks: Sequence[str] = TASK_NAMES) -> pd.DataFrame:
    """One row per (task, budget) of :data:`COLUMNS`: the multitask and single-task means
    over the paired seeds (``n``), Δ = multitask − single (``estimate``) with its 95%
    interval [lo, hi], its dev-sample-alone interval, the shared dev-sample standard error,
    the seeds-alone half-width and whether the interval excludes 0 (None without one).
    A single-task row that did not run gives n = 0 and NaNs. ``runs``:
    mtlib.study.report.collect_runs; ``replicates``: mtlib.study.report.bootstrap_runs."""
    out = []
    for task in tasks:
        for budget, single in single_rows(task).items():
            result, seeds = difference(runs, replicates, task, single, multitask)
            result = result or Interval(math.nan, math.nan, math.nan, 0)
            means = [float(runs.loc[(runs["experiment"] == name) & runs["seed"].isin(seeds), task].mean())
                     if seeds else math.nan for name in (multitask, single)]
            out.append({"task": task, "budget": budget, "multitask": multitask, "single": single, "n": result.n,
                        "multitask_score": means[0], "single_score": means[1], "estimate": result.estimate,
                        "lo": result.lo, "hi": result.hi, "dev_lo": result.dev_lo, "dev_hi": result.dev_hi,
                        "dev_se": result.dev_se, "seed_half": result.seed_half, "resolved": result.resolved})
    return pd.DataFrame(out, columns=COLUMNS)


def parameter_counts(runs: pd.DataFrame, multitask: str = MULTITASK, tasks: Sequence[str] = TASK_NAMES,
                     budget: str = EQUAL_COMPUTE) -> dict[str, float]:
    """Parameters of the two designs, from the runs' records (collect_runs' ``params_*``):
    ``multitask``, one shared encoder and every task's head; ``single_task``, for each task its
    single-task row's encoder and that task's head (the heads of tasks a run does not train
    are left out: they never learn); ``tasks``, the number of tasks (the multitask model
    holds one encoder, the single-task design that many). NaN where a row did not run."""
    def first(name: str, column: str) -> float:
        values = runs.loc[runs["experiment"] == name, column].dropna()
        return float(values.iloc[0]) if len(values) else math.nan

    shared = first(multitask, "params_shared")
    heads = sum(first(multitask, f"params_{task}") for task in tasks)
    singles = [first(single_rows(task)[budget], "params_shared") + first(single_rows(task)[budget], f"params_{task}")
               for task in tasks]
    return {"multitask": shared + heads, "single_task": float(sum(singles)), "tasks": len(tasks)}


def comparison_markdown(comparison: pd.DataFrame, counts: Mapping[str, float]) -> str:
    """:func:`compare`'s frame and :func:`parameter_counts` as a Markdown table and a sentence."""
    lines = ["| task | budget | single-task row | seeds | multitask | single-task | Δ multitask − single [95%] |",
             "|---|---|---|---|---|---|---|"]
    for r in comparison.to_dict("records"):
        if not r["n"]:
            lines.append(f"| {r['task']} | {r['budget']} | {r['single']} | 0 | – | – | not run |")
            continue
        bounds = "" if math.isnan(r["lo"]) else f" [{r['lo']:+.3f}, {r['hi']:+.3f}]"
        flag = " resolved" if r["resolved"] else ""
        lines.append(f"| {r['task']} | {r['budget']} | {r['single']} | {r['n']} | {r['multitask_score']:.3f} | "
                     f"{r['single_score']:.3f} | {r['estimate']:+.3f}{bounds}{flag} |")
    ratio = counts["single_task"] / counts["multitask"] if counts["multitask"] else math.nan
    sentence = ("" if math.isnan(ratio) else
                f"\n\nParameters: one shared encoder with {counts['tasks']} heads holds "
                f"{counts['multitask']:,.0f}; {counts['tasks']} single-task models (an encoder "
                f"and a head each) hold {counts['single_task']:,.0f}, {ratio:.2f} times as many.")
    return "\n".join(lines) + sentence + "\n"


def plot_single_task(comparison: pd.DataFrame, path: str | Path) -> Figure:
    """Δ = multitask − single-task per task (x: the task's dev metric difference), one point
    with its 95% interval per budget, a line at 0: right of it the shared encoder is ahead."""
    fig, (ax,) = new_figure(1, width=6.4, height=3.6)
    tasks = list(dict.fromkeys(comparison["task"]))
    offsets = {budget: 0.15 * (i - (len(BUDGETS) - 1) / 2) for i, budget in enumerate(BUDGETS)}
    for budget, marker in zip(BUDGETS, ("o", "s")):
        rows = comparison[(comparison["budget"] == budget) & (comparison["n"] > 0)]
        y = [tasks.index(t) + offsets[budget] for t in rows["task"]]
        est = rows["estimate"].to_numpy(float)
        err = [est - rows["lo"].to_numpy(float), rows["hi"].to_numpy(float) - est]
        ax.errorbar(est, y, xerr=err, fmt=marker, capsize=3, label=f"at {budget}")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(tasks)), [TASK_TITLES.get(t, t) for t in tasks])
    ax.invert_yaxis()
    ax.set(xlabel="Δ dev metric, multitask − single-task (95% interval)",
           title="One shared encoder against one model per task")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=len(BUDGETS))
    return save(fig, path)
