"""The figures of the results (05) and error analysis (06) notebooks: Gradient Compromise
against the annealed sampler, the SST confusion matrix, this study beside the report, and
score against task-specific parameters. Each takes data in (frames, dicts, arrays), writes
a PNG and returns the Figure (see :mod:`mtlib.study.plotting`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from mtlib.study.analysis import confusion_matrix
from mtlib.study.plotting import (METRIC_TITLES, SST_CLASSES, draw_curves, fit_texts, name_run, new_figure,
                                  place_labels, run_caption, save)
from mtlib.study.report import METRICS
from mtlib.tasks import TASK_NAMES, metric_key
from mtlib.study.provenance import is_minilm


# ---------------------------------------------------------------------------------------
# Learning curves

def plot_compromise_vs_annealed(histories: pd.DataFrame, path: str | Path, compromise: str = "gradient_compromise",
                                annealed: str = "annealed", run: str | None = None) -> Figure:
    """The report's Figure 5: Gradient Compromise against the annealed sampler, one panel per task
    metric (mtlib.study.report.collect_histories' frame), against examples seen rather than the
    report's epochs: Gradient Compromise consumes a group of batches per optimiser update.
    ``run`` (default: the two experiments' seeds, :func:`mtlib.study.plotting.run_caption`)
    is the footer."""
    missing = [e for e in (compromise, annealed) if e not in set(histories["experiment"])]
    if missing:
        raise KeyError(f"no histories for {missing}; have {sorted(set(histories['experiment']))}")
    pair = pd.concat([histories[histories["experiment"] == e] for e in (compromise, annealed)], ignore_index=True)
    names = {compromise: "Gradient Compromise", annealed: "annealed sampler"}
    fig, axes = new_figure(len(TASK_NAMES))
    for ax, metric in zip(axes, map(metric_key, TASK_NAMES)):
        draw_curves(ax, pair, metric, "examples", names)
        ax.set_title(METRIC_TITLES.get(metric, metric))
    axes[0].legend(fontsize=8)
    name_run(fig, run if run is not None else run_caption(pair))
    return save(fig, path)


# ---------------------------------------------------------------------------------------
# Error analysis

def plot_confusion_matrix(labels: Sequence[int], predictions: Sequence[int], path: str | Path,
                          run: str | None = None) -> Figure:
    """SST dev confusion matrix, rows (true classes) normalised to 1, each cell annotated;
    ``run`` (the run it shows: :func:`mtlib.study.plotting.run_caption`) as the footer."""
    matrix = confusion_matrix(labels, predictions, len(SST_CLASSES))
    accuracy = float(np.mean(np.asarray(labels) == np.asarray(predictions)))
    fig, (ax,) = new_figure(1, width=6.4, height=4.8)
    sns.heatmap(matrix, ax=ax, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", square=True,
                xticklabels=SST_CLASSES, yticklabels=SST_CLASSES, cbar_kws={"label": "share of the true class"})
    ax.tick_params(axis="y", rotation=0)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"SST dev confusion matrix (accuracy {accuracy:.3f}, n={len(labels):,})")
    name_run(fig, run)
    return save(fig, path)


# ---------------------------------------------------------------------------------------
# Results

def _minilm_note(fig: Figure, summary: pd.DataFrame) -> None:
    if any(is_minilm(b) for value in summary["backbone"].dropna() for b in str(value).split(", ")):
        fig.suptitle("all-MiniLM-L6-v2 saw Quora duplicates and NLI pairs in pre-training:\n"
                     "its para (and sts) scores are contaminated, not comparable with the report's bert-base",
                     fontsize=9)


def plot_report_comparison(summary: pd.DataFrame, path: str | Path, run: str | None = None) -> Figure:
    """Per metric: each experiment's mean ± 95% t-interval over seeds (one seed: a dot without
    a bar), the report's number beside it; ``summary`` is mtlib.study.report.summarise's frame;
    ``run`` (:func:`mtlib.study.plotting.run_caption`) as the footer."""
    fig, axes = new_figure(len(METRICS), width=3.2, height=0.9 + 0.38 * len(summary), sharey=True)
    y = np.arange(len(summary))
    for ax, metric in zip(axes, METRICS):
        half = summary[f"{metric}_ci95"].fillna(0).to_numpy(dtype=float)
        ax.errorbar(summary[f"{metric}_mean"], y, xerr=half, fmt="o", color="C0", capsize=3,
                    label="this study (95% CI)")
        report = summary[f"{metric}_report"].to_numpy(dtype=float)
        shown = ~np.isnan(report)
        ax.scatter(report[shown], y[shown], marker="x", color="C3", zorder=3, label="report (one run)")
        ax.set_title(METRIC_TITLES.get(metric, metric))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, list(summary["experiment"]))
    axes[0].invert_yaxis()
    axes[-1].legend(fontsize=8, loc="best")
    _minilm_note(fig, summary)
    name_run(fig, run)
    return save(fig, path)


def plot_score_vs_parameters(summary: pd.DataFrame, path: str | Path, run: str | None = None) -> Figure:
    """The dev mean (mean ± 95% CI over seeds) against task-specific parameters, log x, one
    dot per experiment, each named where its name overlaps no other (:func:`place_labels`);
    ``run`` (:func:`mtlib.study.plotting.run_caption`) as the footer."""
    rows = summary[pd.to_numeric(summary["params_task_specific"], errors="coerce").fillna(0) > 0]
    x = rows["params_task_specific"].to_numpy(dtype=float)
    y = rows["mean_mean"].to_numpy(dtype=float)
    fig, (ax,) = new_figure(1, width=6.0, height=4.2)
    ax.scatter(x, y, color="C0", zorder=3)
    ax.errorbar(x, y, yerr=rows["mean_ci95"].fillna(0).to_numpy(dtype=float), fmt="none",
                ecolor="C0", alpha=0.5, capsize=3)
    ax.set(xscale="log", xlabel="task-specific parameters (log scale)", ylabel=f"dev {METRIC_TITLES['mean']}")
    ax.margins(x=0.2, y=0.12)  # room for the names
    ax.grid(alpha=0.3, which="both")
    _minilm_note(fig, rows)
    name_run(fig, run)
    fit_texts(fig)  # the layout is final before the names are placed (their offsets are in points)
    place_labels(ax, x, y, list(rows["experiment"]))
    return save(fig, path)
