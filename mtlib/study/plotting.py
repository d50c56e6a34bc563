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

import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

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
    """Write ``fig`` to ``path`` as PNG atomically and return it, its titles wrapped to fit
    (:func:`fit_texts`)."""
    fit_texts(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return fig


def _titles(fig: Figure) -> list:
    """The figure's titles, axis labels and footer: each axes' titles and labels, the
    suptitle and the supxlabel."""
    texts = [t for ax in fig.axes for t in (ax.title, getattr(ax, "_left_title", None),
                                            getattr(ax, "_right_title", None), ax.xaxis.label, ax.yaxis.label)]
    texts += [getattr(fig, "_suptitle", None), getattr(fig, "_supxlabel", None)]
    return [t for t in texts if t is not None and t.get_text()]


def _wrap(text: str, width: int) -> str:
    """Each line of ``text`` wrapped at ``width`` characters (its own line breaks are kept)."""
    return "\n".join(textwrap.fill(line, max(width, 8)) for line in text.split("\n"))


def fit_texts(fig: Figure, margin: float = 0.98) -> None:
    """Wrap every title, axis label and footer of ``fig`` that is wider than ``margin`` of the figure
    or reaches past its edges (a title centred over an axes that sits off-centre), at word
    boundaries, until it fits: such a title is otherwise clipped. Lays the figure out to
    measure it."""
    renderer = fig.canvas.get_renderer()
    texts = _titles(fig)
    for _ in range(8):  # one layout per round; most figures need none but the first
        fig.draw_without_rendering()
        changed = False
        for text in texts:
            upright = round(text.get_rotation()) % 180 == 90  # a y label: its length is its height
            box = text.get_window_extent(renderer)
            low, high, length, room = ((box.y0, box.y1, box.height, fig.bbox.height) if upright else
                                       (box.x0, box.x1, box.width, fig.bbox.width))
            overflow = max(0.0, -low) + max(0.0, high - room)  # a centred title overhangs both ways
            if length <= margin * room and not overflow:
                continue
            target = max(min(margin * room, length - 2 * overflow - 4), 0.2 * room)
            longest = max(len(line) for line in text.get_text().split("\n"))
            wrapped = _wrap(text.get_text(), int(longest * target / length) - 1)
            changed |= wrapped != text.get_text()
            text.set_text(wrapped)
        if not changed:
            return
    fig.draw_without_rendering()


def _ranges(values: Iterable[int]) -> str:
    """Sorted integers as runs: 1, 2, 3, 5 -> "1–3, 5"."""
    values, parts = sorted(set(int(v) for v in values)), []
    for v in values:
        if parts and v == parts[-1][1] + 1:
            parts[-1][1] = v
        else:
            parts.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}, {b}" if b == a + 1 else f"{a}–{b}" for a, b in parts)


def run_caption(frame: pd.DataFrame, profile: str | None = None, many: int = 6) -> str:
    """What a figure shows, as one footer line: the profile (``profile``, else the frame's
    ``profile`` column where it has one), the seeds and the experiments of ``frame`` (any
    frame with ``experiment`` and ``seed`` columns: runs, histories, a summary); more than
    ``many`` experiments are counted, not listed."""
    profiles = [profile] if profile else (sorted(frame["profile"].dropna().astype(str).unique())
                                          if "profile" in frame else [])
    experiments = list(dict.fromkeys(frame["experiment"].astype(str))) if "experiment" in frame else []
    parts = [f"profile {', '.join(profiles)}"] if profiles else []
    if "seed" in frame and frame["seed"].notna().any():
        seeds = frame["seed"].dropna()
        parts.append(f"seed{'s' if seeds.nunique() > 1 else ''} {_ranges(seeds)}")
    if experiments:
        parts.append(f"{len(experiments)} experiments" if len(experiments) > many else
                     f"experiment{'s' if len(experiments) > 1 else ''} {', '.join(experiments)}")
    return " · ".join(parts)


def name_run(fig: Figure, caption: str | None) -> None:
    """``caption`` (:func:`run_caption`) as the figure's footer, in small grey type."""
    if caption:
        fig.supxlabel(caption, fontsize=7, color="0.35")


#: Where a point's label may go, in points from the point, nearest first: eight directions
#: at growing distances (the farther ones get a leader line).
LABEL_OFFSETS = tuple((round(r * dx), round(r * dy)) for r in (5, 12, 22, 34, 48, 64)
                      for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)))


def _overlap(a, b) -> float:
    """The area two display boxes share (0 when they do not overlap)."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def place_labels(ax, xs, ys, names, fontsize: float = 8, offsets=LABEL_OFFSETS) -> list:
    """Label each point (xs[i], ys[i]) with names[i] where the label overlaps no other label
    and no point and stays inside the axes: greedily, point by point, the first free place
    of ``offsets``; where none is free, the place of least overlap. Labels set away from
    their point get a thin leader line. Lay the figure out (titles fitted) first: the
    offsets are in points, so a later change of the axes' size moves the points under them.
    Returns the annotations."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    frame = ax.get_window_extent(renderer)
    pixels = ax.transData.transform(np.column_stack([np.asarray(xs, float), np.asarray(ys, float)]))
    pad = 4.0  # pixels kept free around each point's marker
    taken = [Bbox.from_extents(px - pad, py - pad, px + pad, py + pad) for px, py in pixels]
    placed = []
    for (x, y), name in zip(zip(xs, ys), names):
        best = None
        for dx, dy in offsets:
            style = {"ha": "left" if dx > 0 else "right" if dx < 0 else "center",
                     "va": "bottom" if dy > 0 else "top" if dy < 0 else "center"}
            note = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, **style)
            box = note.get_window_extent(renderer)
            note.remove()
            outside = box.width * box.height - _overlap(box, frame)
            cost = outside * 10 + sum(_overlap(box, other) for other in taken)
            if best is None or cost < best[0]:
                best = (cost, box, (dx, dy), style)
            if cost == 0:
                break
        _, box, (dx, dy), style = best
        far = max(abs(dx), abs(dy)) > max(abs(v) for v in offsets[0])
        arrow = {"arrowstyle": "-", "color": "0.5", "linewidth": 0.6, "shrinkA": 1, "shrinkB": 3} if far else None
        placed.append(ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                                  arrowprops=arrow, **style))
        taken.append(box)
    return placed


# ---------------------------------------------------------------------------------------
# Learning curves

def learning_curve(histories: pd.DataFrame, metric: str = "mean", x: str = "examples") -> pd.DataFrame:
    """Mean, std (ddof=1) and number of seeds of ``metric`` against ``x``, per experiment of
    ``histories`` (mtlib.study.report.collect_histories' long frame: experiment, seed, ...).

    Seeds rarely evaluate at exactly the same x (sampled batches differ in size), so each
    seed's curve is linearly interpolated onto ONE grid shared by all seeds of the
    experiment: its x values that lie in the range EVERY seed covers (from the latest first
    evaluation to the earliest last one). Every point is then the mean of the same seeds:
    no point past the range of a seed that stopped sooner, where the mean of fewer seeds
    would jump (the union grid's spikes at the right end). Several evaluations at one x
    (e.g. x="epoch" with more than one per epoch) keep the last.
    """
    rows = []
    for experiment, runs in histories.groupby("experiment", sort=False):
        seeds = [run.dropna(subset=[metric]).groupby(x)[metric].last() for _, run in runs.groupby("seed")]
        seeds = [points for points in seeds if len(points)]
        grid = np.unique(runs[x].to_numpy(dtype=float))
        if seeds:
            start, stop = max(p.index.min() for p in seeds), min(p.index.max() for p in seeds)
            grid = grid[(grid >= start) & (grid <= stop)]
        curves = [np.interp(grid, p.index.to_numpy(dtype=float), p.to_numpy(dtype=float)) for p in seeds]
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
                         labels: Mapping[str, str] | None = None, title: str | None = None,
                         run: str | None = None) -> Figure:
    """Validation ``metric`` against ``x`` in ``histories`` (collect_histories' long frame):
    one line per experiment (mean over seeds), a ±1 std band; ``run`` (default: the
    histories' seeds and experiments, :func:`run_caption`) as the footer."""
    fig, (ax,) = new_figure(1, width=6.4, height=4.2)
    draw_curves(ax, histories, metric, x, labels)
    ax.set_title(title or f"Validation {METRIC_TITLES.get(metric, metric)} during training (mean ± std over seeds)")
    ax.legend(fontsize=8)
    name_run(fig, run if run is not None else run_caption(histories))
    return save(fig, path)
