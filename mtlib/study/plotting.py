"""What the study's figures share: a figure on matplotlib's Agg canvas, atomic PNG writing,
the names of tasks, classes and metrics, and learning curves (the head pretraining of 02 and
the results of 05 both draw them).

Figures are built without pyplot, so nothing is registered in pyplot's global list of open
figures (no ``plt.close`` needed, no memory kept once the caller drops the Figure) and a
notebook's own backend is left alone; a returned Figure still shows inline in Jupyter. The
figures themselves live beside the notebooks that draw them: :mod:`mtlib.study.data_figures`
(01) and :mod:`mtlib.study.figures` (05, 06), so that editing one reruns only its own stages.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mtlib.io import atomic_path

DPI = 120
SST_CLASSES = ("negative", "somewhat\nnegative", "neutral", "somewhat\npositive", "positive")
CLASS_NAMES = {"sst": SST_CLASSES, "para": ("not duplicate", "duplicate")}
TASK_TITLES = {"sst": "SST sentiment", "para": "Quora paraphrase", "sts": "STS similarity"}
METRIC_TITLES = {"sst/acc": "SST accuracy", "para/acc": "Quora accuracy", "sts/pearson": "STS Pearson r",
                 "mean": "mean of the three", "sst": "SST accuracy", "para": "Quora accuracy",
                 "sts": "STS Pearson r"}
X_TITLES = {"examples": "training examples seen", "epoch": "epoch", "update": "optimiser update",
            "train_seconds": "training seconds"}


def new_figure(n_panels: int = 1, width: float = 4.6, height: float = 3.4, **subplots) -> tuple[Figure, np.ndarray]:
    """A constrained-layout Figure on an Agg canvas with ``n_panels`` axes in one row."""
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, n_panels, squeeze=False, **subplots).ravel()


def save(fig: Figure, path: str | Path) -> Figure:
    """Write ``fig`` to ``path`` as PNG atomically and return it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return fig


# ---------------------------------------------------------------------------------------
# Learning curves

def learning_curve(histories: pd.DataFrame, metric: str = "mean", x: str = "examples") -> pd.DataFrame:
    """Mean, std (ddof=1) and number of seeds of ``metric`` against ``x``, per experiment of
    ``histories`` (mtlib.study.report.collect_histories' long frame: experiment, seed, ...).

    Seeds rarely evaluate at exactly the same x (sampled batches differ in size), so each
    seed's curve is linearly interpolated onto the union of its experiment's x values,
    inside its own range only (a seed that stopped early drops out, it is not extended).
    Several evaluations at one x (e.g. x="epoch" with more than one per epoch) keep the last.
    """
    rows = []
    for experiment, runs in histories.groupby("experiment", sort=False):
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


def draw_curves(ax, histories, metric: str, x: str, labels: Mapping[str, str] | None) -> None:
    curve = learning_curve(histories, metric, x)
    for i, (experiment, part) in enumerate(curve.groupby("experiment", sort=False)):
        part = part[part["n"] > 0]
        color = f"C{i % 10}"
        seeds = int(part["n"].max()) if len(part) else 0
        ax.plot(part[x], part["mean"], color=color,
                label=f"{(labels or {}).get(experiment, experiment)} (seeds: {seeds})")
        ax.fill_between(part[x], part["mean"] - part["std"], part["mean"] + part["std"], color=color, alpha=0.2,
                        linewidth=0)
    ax.set(xlabel=X_TITLES.get(x, x), ylabel=f"validation {METRIC_TITLES.get(metric, metric)}")
    ax.grid(alpha=0.3)


def plot_learning_curves(histories, path: str | Path, metric: str = "mean", x: str = "examples",
                         labels: Mapping[str, str] | None = None, title: str | None = None) -> Figure:
    """Validation ``metric`` against ``x`` in ``histories`` (collect_histories' long frame):
    one line per experiment (mean over seeds), a ±1 std band."""
    fig, (ax,) = new_figure(1, width=6.4, height=4.2)
    draw_curves(ax, histories, metric, x, labels)
    ax.set_title(title or f"Validation {METRIC_TITLES.get(metric, metric)} during training (mean ± std over seeds)")
    ax.legend(fontsize=8)
    return save(fig, path)
