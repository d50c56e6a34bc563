"""The figures of the data notebook (01): class distributions, token lengths, EDA class
balancing and the task samplers' probabilities. Each takes data in (frames, dicts, arrays),
writes a PNG and returns the Figure (see :mod:`mtlib.study.plotting`)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtlib.study.plotting import CLASS_NAMES, TASK_TITLES, new_figure, save
from mtlib.tasks import TASK_NAMES, TASKS


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


def plot_class_distributions(labels: Mapping[str, Sequence], path: str | Path) -> Figure:
    """Bar charts of SST's five classes and Quora's two, a histogram of STS scores (0..5);
    ``labels``: task -> its label column (any of sst, para, sts, in that order)."""
    tasks = [t for t in TASK_NAMES if t in labels]
    unknown = set(labels) - set(tasks)
    if unknown or not tasks:
        raise KeyError(f"tasks {sorted(unknown) or '[]'}: expected some of sst, para, sts")
    fig, axes = new_figure(len(tasks))
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
        ax.set(title=f"{TASK_TITLES[task]} (n={len(values):,})", ylabel="examples")
    return save(fig, path)


def plot_token_lengths(lengths: Mapping[str, Sequence[int]], path: str | Path, percentile: float = 98.0) -> Figure:
    """One histogram of token lengths per task (pairs: the whole pair), the percentile marked."""
    fig, axes = new_figure(len(lengths))
    for ax, (task, values) in zip(axes, lengths.items()):
        values = np.asarray(values, dtype=float)
        cut = float(np.percentile(values, percentile))
        ax.hist(values, bins=40, color="C0", edgecolor="white")
        ax.axvline(cut, color="C3", linestyle="--", label=f"{percentile:g}th percentile: {cut:.0f}")
        ax.set(title=f"{TASK_TITLES.get(task, task)} (mean {values.mean():.0f} tokens)", xlabel="tokens",
               ylabel="examples")
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_augmentation_counts(before: Mapping[str, object], after: Mapping[str, object], path: str | Path) -> Figure:
    """Class counts before and after augmentation, side by side, one panel per task; each
    value is a mapping {class: count} or an array of labels."""
    missing = set(before) ^ set(after)
    if missing:
        raise KeyError(f"tasks {sorted(missing)} are not in both before and after")
    fig, axes = new_figure(len(before))
    for ax, task in zip(axes, before):
        n = len(CLASS_NAMES[task]) if task in CLASS_NAMES else None
        old, new = _class_counts(before[task], n), _class_counts(after[task], n)
        old, new = old.align(new, fill_value=0)
        x = np.arange(len(old))
        ax.bar(x - 0.2, old.to_numpy(), width=0.4, label=f"before ({old.sum():,})", color="C7")
        ax.bar(x + 0.2, new.to_numpy(), width=0.4, label=f"after ({new.sum():,})", color="C0")
        _class_ticks(ax, task, len(old))
        ax.set(title=TASK_TITLES.get(task, task), ylabel="training examples")
        ax.margins(y=0.2)
        ax.legend(fontsize=8, loc="upper center", ncols=2)
    return save(fig, path)


def plot_sampler_probabilities(probabilities: Mapping[str, Mapping[int, Mapping[str, float]]],
                               path: str | Path) -> Figure:
    """P(task) per epoch for each sampler: {sampler: {epoch: {task: probability}}}."""
    fig, axes = new_figure(len(probabilities), width=3.8, sharey=True)
    for ax, (sampler, per_epoch) in zip(axes, probabilities.items()):
        frame = pd.DataFrame(per_epoch).T.sort_index()  # (epochs, tasks)
        for task in frame.columns:
            ax.plot(frame.index, frame[task], marker="o", label=task)
        ax.set(title=sampler, xlabel="epoch", ylim=(0, 1), xticks=frame.index)
    axes[0].set_ylabel("P(task)")
    axes[0].legend(fontsize=8)
    return save(fig, path)
