"""Every figure of the study: data in (frames, dicts, arrays), a PNG out, the Figure returned.

Figures are built on matplotlib's Agg canvas without pyplot, so nothing is registered in
pyplot's global list of open figures (no ``plt.close`` needed, no memory kept once the
caller drops the Figure) and a notebook's own backend is left alone; a returned Figure
still shows inline in Jupyter. Each PNG is written atomically (temporary file, then
os.replace).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mtlib.io import atomic_path
from mtlib.tasks import TASK_NAMES, TASKS, metric_key
from mtlib.study.report import METRICS, is_minilm

DPI = 120
SST_CLASSES = ("negative", "somewhat\nnegative", "neutral", "somewhat\npositive", "positive")
PARA_CLASSES = ("not duplicate", "duplicate")
CLASS_NAMES = {"sst": SST_CLASSES, "para": PARA_CLASSES}
TASK_TITLES = {"sst": "SST sentiment", "para": "Quora paraphrase", "sts": "STS similarity"}
METRIC_TITLES = {"sst/acc": "SST accuracy", "para/acc": "Quora accuracy", "sts/pearson": "STS Pearson r",
                 "mean": "mean of the three", "sst": "SST accuracy", "para": "Quora accuracy",
                 "sts": "STS Pearson r"}
X_TITLES = {"examples": "training examples seen", "epoch": "epoch", "update": "optimiser update",
            "train_seconds": "training seconds"}


def _figure(n_panels: int = 1, width: float = 4.6, height: float = 3.4, **subplots) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure on an Agg canvas with ``n_panels`` axes in one row."""
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False, **subplots).ravel()
    return fig, axes


def save(fig: Figure, path: str | Path) -> Figure:
    """Write ``fig`` to ``path`` as PNG atomically and return it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return fig


def _class_counts(values, classes: int | None = None) -> pd.Series:
    """Counts per class from a mapping {class: count} or from an array of labels."""
    counts = pd.Series(values, dtype=float) if isinstance(values, Mapping) else \
        pd.Series(np.asarray(values)).value_counts()
    counts.index = counts.index.astype(int)
    index = range(classes) if classes else sorted(counts.index)
    return counts.reindex(index, fill_value=0).astype(int)


def _class_ticks(ax, task: str, n: int) -> None:
    names = CLASS_NAMES.get(task)
    ax.set_xticks(range(n), names if names and len(names) == n else [str(i) for i in range(n)])


# ---------------------------------------------------------------------------------------
# Data analysis

def plot_class_distributions(labels: Mapping[str, Sequence], path: str | Path) -> Figure:
    """Bar charts of SST's five classes and Quora's two, a histogram of STS scores (0..5).

    ``labels``: task -> its label column (any of sst, para, sts, in that order).
    """
    tasks = [t for t in TASK_NAMES if t in labels]
    unknown = set(labels) - set(tasks)
    if unknown or not tasks:
        raise KeyError(f"tasks {sorted(unknown) or '[]'}: expected some of sst, para, sts")
    fig, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        values = np.asarray(labels[task], dtype=float)
        if not TASKS[task].integer_labels:
            ax.hist(values, bins=np.linspace(0, 5, 21), color="C2", edgecolor="white")
            ax.set_xlabel("similarity score")
        else:
            counts = _class_counts(values, len(CLASS_NAMES[task]))
            bars = ax.bar(range(len(counts)), counts.to_numpy(), color=f"C{TASK_NAMES.index(task)}")
            ax.bar_label(bars, [f"{c:,}\n{c / counts.sum():.0%}" for c in counts], fontsize=8)
            ax.margins(y=0.2)
            _class_ticks(ax, task, len(counts))
        ax.set_title(f"{TASK_TITLES[task]} (n={len(values):,})")
        ax.set_ylabel("examples")
    return save(fig, path)


def plot_token_lengths(lengths: Mapping[str, Sequence[int]], path: str | Path, percentile: float = 98.0) -> Figure:
    """One histogram of token lengths per task (pairs: the whole pair), the percentile marked."""
    fig, axes = _figure(len(lengths))
    for ax, (task, values) in zip(axes, lengths.items()):
        values = np.asarray(values, dtype=float)
        cut = float(np.percentile(values, percentile))
        ax.hist(values, bins=40, color="C0", edgecolor="white")
        ax.axvline(cut, color="C3", linestyle="--", label=f"{percentile:g}th percentile: {cut:.0f}")
        ax.set_title(f"{TASK_TITLES.get(task, task)} (mean {values.mean():.0f} tokens)")
        ax.set_xlabel("tokens")
        ax.set_ylabel("examples")
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_augmentation_counts(before: Mapping[str, object], after: Mapping[str, object], path: str | Path) -> Figure:
    """Class counts before and after augmentation, side by side, one panel per task.

    Each value is a mapping {class: count} or an array of labels.
    """
    missing = set(before) ^ set(after)
    if missing:
        raise KeyError(f"tasks {sorted(missing)} are not in both before and after")
    fig, axes = _figure(len(before))
    for ax, task in zip(axes, before):
        n = len(CLASS_NAMES[task]) if task in CLASS_NAMES else None
        old, new = _class_counts(before[task], n), _class_counts(after[task], n)
        old, new = old.align(new, fill_value=0)
        x = np.arange(len(old))
        ax.bar(x - 0.2, old.to_numpy(), width=0.4, label=f"before ({old.sum():,})", color="C7")
        ax.bar(x + 0.2, new.to_numpy(), width=0.4, label=f"after ({new.sum():,})", color="C0")
        _class_ticks(ax, task, len(old))
        ax.set_title(TASK_TITLES.get(task, task))
        ax.set_ylabel("training examples")
        ax.margins(y=0.2)
        ax.legend(fontsize=8, loc="upper center", ncols=2)
    return save(fig, path)


def plot_sampler_probabilities(probabilities: Mapping[str, Mapping[int, Mapping[str, float]]],
                               path: str | Path) -> Figure:
    """P(task) per epoch for each sampler: {sampler: {epoch: {task: probability}}}."""
    fig, axes = _figure(len(probabilities), width=3.8, sharey=True)
    for ax, (sampler, per_epoch) in zip(axes, probabilities.items()):
        frame = pd.DataFrame(per_epoch).T.sort_index()  # (epochs, tasks)
        for task in frame.columns:
            ax.plot(frame.index, frame[task], marker="o", label=task)
        ax.set_title(sampler)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.set_xticks(frame.index)
    axes[0].set_ylabel("P(task)")
    axes[0].legend(fontsize=8)
    return save(fig, path)


# ---------------------------------------------------------------------------------------
# Learning curves

def _long_histories(histories) -> pd.DataFrame:
    """A long frame (experiment, seed, ...) from itself or from {experiment: [frame per seed]}."""
    if isinstance(histories, pd.DataFrame):
        missing = {"experiment", "seed"} - set(histories.columns)
        if missing:
            raise KeyError(f"a history frame needs the columns experiment and seed; missing {sorted(missing)}")
        return histories
    frames = [frame.assign(experiment=experiment, seed=seed)
              for experiment, per_seed in histories.items() for seed, frame in enumerate(per_seed)]
    return pd.concat(frames, ignore_index=True)


def learning_curve(histories, metric: str = "mean", x: str = "examples") -> pd.DataFrame:
    """Mean, std (ddof=1) and number of seeds of ``metric`` against ``x``, per experiment.

    Seeds rarely evaluate at exactly the same x (sampled batches differ in size), so each
    seed's curve is linearly interpolated onto the union of its experiment's x values,
    inside its own range only (a seed that stopped early drops out, it is not extended).
    Several evaluations at one x (e.g. x="epoch" with more than one per epoch) keep the last.
    """
    long = _long_histories(histories)
    rows = []
    for experiment, runs in long.groupby("experiment", sort=False):
        grid = np.unique(runs[x].to_numpy(dtype=float))
        curves = []
        for _, run in runs.groupby("seed"):
            points = run.dropna(subset=[metric]).groupby(x)[metric].last()
            if len(points):
                xs = points.index.to_numpy(dtype=float)
                curves.append(np.interp(grid, xs, points.to_numpy(dtype=float), left=np.nan, right=np.nan))
        values = np.vstack(curves) if curves else np.full((1, len(grid)), np.nan)  # (seeds, grid)
        n = (~np.isnan(values)).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(values, axis=0) / np.where(n > 0, n, np.nan)
            std = np.sqrt(np.nansum((values - mean) ** 2, axis=0) / np.where(n > 1, n - 1, np.nan))
        rows.append(pd.DataFrame({"experiment": experiment, x: grid, "mean": mean, "std": std, "n": n}))
    return pd.concat(rows, ignore_index=True)


def _draw_curves(ax, histories, metric: str, x: str, labels: Mapping[str, str] | None) -> None:
    curve = learning_curve(histories, metric, x)
    for i, (experiment, part) in enumerate(curve.groupby("experiment", sort=False)):
        part = part[part["n"] > 0]
        color = f"C{i % 10}"
        seeds = int(part["n"].max()) if len(part) else 0
        ax.plot(part[x], part["mean"], color=color,
                label=f"{(labels or {}).get(experiment, experiment)} (seeds: {seeds})")
        ax.fill_between(part[x], part["mean"] - part["std"], part["mean"] + part["std"], color=color, alpha=0.2,
                        linewidth=0)
    ax.set_xlabel(X_TITLES.get(x, x))
    ax.set_ylabel(f"dev {METRIC_TITLES.get(metric, metric)}")
    ax.grid(alpha=0.3)


def plot_learning_curves(histories, path: str | Path, metric: str = "mean", x: str = "examples",
                         labels: Mapping[str, str] | None = None, title: str | None = None) -> Figure:
    """Dev ``metric`` against ``x``: one line per experiment (mean over seeds), a ±1 std band.

    ``histories``: collect_histories' long frame, or {experiment: [history frame per seed]}.
    """
    fig, (ax,) = _figure(1, width=6.4, height=4.2)
    _draw_curves(ax, histories, metric, x, labels)
    ax.set_title(title or f"Dev {METRIC_TITLES.get(metric, metric)} during training (mean ± std over seeds)")
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_compromise_vs_annealed(histories, path: str | Path, compromise: str = "gradient_compromise",
                                annealed: str = "annealed",
                                metrics: Sequence[str] = tuple(metric_key(t) for t in TASK_NAMES),
                                x: str = "examples", labels: Mapping[str, str] | None = None) -> Figure:
    """The report's Figure 5: Gradient Compromise against the annealed sampler, one panel per metric.

    The report plots against epochs; examples seen (the default ``x``) is the fairer axis
    because Gradient Compromise consumes a group of batches per optimiser update.
    """
    long = _long_histories(histories)
    missing = [e for e in (compromise, annealed) if e not in set(long["experiment"])]
    if missing:
        raise KeyError(f"no histories for {missing}; have {sorted(set(long['experiment']))}")
    pair = pd.concat([long[long["experiment"] == e] for e in (compromise, annealed)], ignore_index=True)
    names = {compromise: "Gradient Compromise", annealed: "annealed sampler", **(labels or {})}
    fig, axes = _figure(len(metrics))
    for ax, metric in zip(axes, metrics):
        _draw_curves(ax, pair, metric, x, names)
        ax.set_title(METRIC_TITLES.get(metric, metric))
    axes[0].legend(fontsize=8)
    return save(fig, path)


# ---------------------------------------------------------------------------------------
# Error analysis

def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], n_classes: int = 5) -> np.ndarray:
    """Row-normalised confusion matrix: entry (i, j) = P(predicted j | true i); an empty row stays 0."""
    labels, predictions = np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)
    if labels.shape != predictions.shape:
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (labels, predictions), 1)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def plot_confusion_matrix(labels: Sequence[int], predictions: Sequence[int], path: str | Path,
                          classes: Sequence[str] = SST_CLASSES, title: str | None = None) -> Figure:
    """SST dev confusion matrix, rows (true classes) normalised to 1, each cell annotated."""
    matrix = confusion_matrix(labels, predictions, len(classes))
    accuracy = float(np.mean(np.asarray(labels) == np.asarray(predictions)))
    fig, (ax,) = _figure(1, width=5.6, height=4.6)
    sns.heatmap(matrix, ax=ax, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="Blues", square=True,
                xticklabels=classes, yticklabels=classes, cbar_kws={"label": "share of the true class"})
    ax.tick_params(axis="y", rotation=0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"SST dev confusion matrix (accuracy {accuracy:.3f}, n={len(labels):,})")
    return save(fig, path)


# ---------------------------------------------------------------------------------------
# Results

def _minilm_note(fig: Figure, summary: pd.DataFrame) -> None:
    if any(is_minilm(b) for value in summary["backbone"].dropna() for b in str(value).split(", ")):
        fig.suptitle("all-MiniLM-L6-v2 saw Quora and NLI pairs in pre-training:\n"
                     "its para (and sts) scores are optimistic, not comparable with the report's bert-base",
                     fontsize=9)


def plot_report_comparison(summary: pd.DataFrame, path: str | Path,
                           metrics: Sequence[str] = tuple(METRICS)) -> Figure:
    """Per metric: each experiment's mean ± 95% t-interval over seeds, the report's number beside it.

    ``summary`` is mtlib.study.report.summarise's frame. One seed: a dot without a bar.
    """
    fig, axes = _figure(len(metrics), width=3.2, height=0.9 + 0.38 * len(summary), sharey=True)
    y = np.arange(len(summary))
    for ax, metric in zip(axes, metrics):
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
    return save(fig, path)


def plot_score_vs_parameters(summary: pd.DataFrame, path: str | Path, metric: str = "mean",
                             parameters: str = "params_task_specific") -> Figure:
    """``metric`` (mean ± 95% CI over seeds) against task-specific parameters, log x, one dot per experiment."""
    rows = summary[pd.to_numeric(summary[parameters], errors="coerce").fillna(0) > 0]
    x = rows[parameters].to_numpy(dtype=float)
    y = rows[f"{metric}_mean"].to_numpy(dtype=float)
    fig, (ax,) = _figure(1, width=6.0, height=4.2)
    ax.scatter(x, y, color="C0", zorder=3)
    ax.errorbar(x, y, yerr=rows[f"{metric}_ci95"].fillna(0).to_numpy(dtype=float), fmt="none",
                ecolor="C0", alpha=0.5, capsize=3)
    for name, xi, yi in zip(rows["experiment"], x, y):
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15)  # room for the names
    ax.set_xlabel(parameters.removeprefix("params_").replace("_", "-") + " parameters (log scale)")
    ax.set_ylabel(f"dev {METRIC_TITLES.get(metric, metric)}")
    ax.grid(alpha=0.3, which="both")
    _minilm_note(fig, rows)
    return save(fig, path)
