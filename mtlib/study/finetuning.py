"""One experiment trained for each seed, and read back: what notebooks 03 and 04 show.

Both notebooks train an experiment's seeds side by side (:func:`train_seeds`), flatten the
runs for ``dvc metrics`` and ``dvc plots`` (:func:`export_runs`), and show the same table of
seeds, the dev score each run was selected for, and the validation curves. The runs are
read through :class:`~mtlib.record.RunRecord`; the curves are VALIDATION curves (the split
that picks the checkpoint), dev is scored once per run.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import seaborn as sns

from mtlib.config import Config, load_config, resolve_seeds
from mtlib.io import write_csv, write_json
from mtlib.record import CURVE_COLUMNS, RunRecord, curve, folder_seed
from mtlib.training.sweep import Job, train_many


def run_scores(run_dir: str | Path) -> dict:
    """A run's dev (and test) scores with best_update, updates and train_seconds: what DVC's
    metrics show (no parameter or data counts)."""
    record = RunRecord.read(Path(run_dir) / "metrics.json")
    flat = {split: scores for split, scores in (("dev", record.dev), ("test", record.test)) if scores is not None}
    counters = {"best_update": record.best_update, "updates": record.updates, "train_seconds": record.train_seconds}
    return {**flat, **{key: value for key, value in counters.items() if value is not None}}


def run_curve(run_dir: str | Path) -> pd.DataFrame:
    """A run's validation curve (:func:`mtlib.record.curve`). A run without history.csv (the
    random predictor does not train) has no rows."""
    history_path = Path(run_dir) / "history.csv"
    if not history_path.exists():
        return pd.DataFrame(columns=[*CURVE_COLUMNS, "validation_mean"])
    return curve(pd.read_csv(history_path))


def export_runs(run_dirs: Mapping[int, str | Path], metrics_path: str | Path, curve_path: str | Path) -> dict:
    """Flat files of one experiment's runs (``{seed: run folder}``) for ``dvc metrics`` and
    ``dvc plots``: ``metrics_path`` (JSON, ``{"seed<k>": run_scores}``) and ``curve_path``
    (CSV: a ``seed`` column, then run_curve's). Returns what was written to ``metrics_path``."""
    scores = {f"seed{seed}": run_scores(path) for seed, path in run_dirs.items()}
    curves = [run_curve(path).assign(seed=seed) for seed, path in run_dirs.items()]
    frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["seed", *CURVE_COLUMNS])
    write_json(metrics_path, scores)
    write_csv(curve_path, frame[["seed", *[c for c in frame.columns if c != "seed"]]])
    return scores


def run_summary(record: RunRecord) -> dict:
    """The headline numbers of a run, the same keys for every kind of run: ``dev_score``
    (:func:`mtlib.record.score_that_counts` of dev), ``curve_metric`` (the history.csv column
    that score is), updates, best_update, train_seconds, examples_per_second (NaN without
    training), params_total, params_trainable."""
    params, speed = record.params, record.train_examples_per_second
    return {"dev_score": record.dev_score, "curve_metric": "mean" if "mean" in record.dev else next(iter(record.dev), "mean"),
            "updates": int(record.updates or 0), "best_update": int(record.best_update or 0),
            "train_seconds": math.nan if record.train_seconds is None else float(record.train_seconds),
            "examples_per_second": math.nan if speed is None else float(speed),
            "params_total": int(params.get("total", 0)), "params_trainable": int(params.get("trainable", 0))}


def metrics_table(record: RunRecord) -> pd.DataFrame:
    """A run's scores as a split x metric table (dev, and test where scored)."""
    return pd.DataFrame({split: scores for split, scores in (("dev", record.dev), ("test", record.test))
                         if scores is not None}).T


def seeds_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run (index: seed): each dev metric, then best_update, updates,
    train_seconds, train examples/s and precision."""
    rows = {}
    for record in records:
        summary = run_summary(record)
        rows[int(record.seed)] = {**{f"dev {k}": v for k, v in record.dev.items()},
                                  "best_update": summary["best_update"], "updates": summary["updates"],
                                  "train_seconds": summary["train_seconds"],
                                  "examples/s": summary["examples_per_second"],
                                  "precision": record.precision_label or "–"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("seed")


def run_history(run_dir) -> pd.DataFrame:
    """A run's history.csv with ``experiment`` and ``seed`` columns (empty when it has none,
    e.g. the random predictor, which does not train)."""
    run_dir = Path(run_dir)
    path = run_dir / "history.csv"
    frame = pd.read_csv(path) if path.exists() else pd.DataFrame()
    return frame.assign(experiment=run_dir.parent.name, seed=folder_seed(run_dir) or 0)


@dataclass(frozen=True)
class SeedRuns:
    """An experiment's runs, one per seed, as the notebooks show them."""

    experiment: str
    seeds: list[int]
    folders: list[Path]
    records: list[RunRecord]

    @property
    def summaries(self) -> list[dict]:
        return [run_summary(record) for record in self.records]

    @property
    def table(self) -> pd.DataFrame:
        return seeds_table(self.records)

    @property
    def history(self) -> pd.DataFrame:
        return pd.concat([run_history(folder) for folder in self.folders], ignore_index=True)


def seed_jobs(params: str | Path, experiment: str, profile: str | None, seeds, runs_dir: str | Path) -> list[Job]:
    """A job per seed (``seeds`` as :func:`mtlib.config.resolve_seeds` reads them), each
    into ``<runs_dir>/<experiment>/seed<k>``, replacing the run there."""
    return [Job(load_config(params, experiment, profile, seed), Path(runs_dir) / experiment / f"seed{seed}",
                overwrite=True) for seed in resolve_seeds(seeds, params)]


def train_seeds(jobs: list[Job], workers: int, metrics_dir: str | Path, curves_dir: str | Path) -> SeedRuns:
    """Train every job (mtlib.training.sweep), export them for DVC, and read them back."""
    records = [RunRecord.from_json(content) for content in train_many(jobs, workers)]
    experiment, seeds = jobs[0].cfg.experiment, [job.cfg.train.seed for job in jobs]
    export_runs({seed: job.out_dir for seed, job in zip(seeds, jobs)},
                Path(metrics_dir) / f"{experiment}.json", Path(curves_dir) / f"{experiment}.csv")
    return SeedRuns(experiment, seeds, [Path(job.out_dir) for job in jobs], records)


def describe_setup(cfg: Config, seeds: Sequence[int]) -> str:
    """One paragraph of what an experiment's runs do: its choice on every axis."""
    m, t, d = cfg.model, cfg.train, cfg.data
    return (f"Experiment **{cfg.experiment}**, seeds {', '.join(map(str, seeds))}, profile **{cfg.profile}** "
            f"(backbone `{cfg.backbone.name}`): "
            f"{m.pair_mode} concatenation, heads {dict((task, m.head_for(task).kind) for task in t.tasks)}, "
            f"PALs {m.pals}; sampler {t.sampler}, update {t.update}, combiner {t.combiner}, SMART {t.smart}, "
            f"head pretraining {t.pretrain_heads}; length filter {d.length_filter:.0%}, EDA balancing {d.augment}; "
            f"{t.epochs} epochs of {t.batches_per_epoch} micro-batches at learning rate {t.lr:g}.")


def plot_validation_curves(runs: SeedRuns):
    """The validation score that counts against training examples seen, one line per seed;
    None for an experiment that does not train (no history)."""
    history, metric = runs.history, runs.summaries[0]["curve_metric"]
    if not len(history):
        return None
    ax = sns.lineplot(data=history.assign(seed=history["seed"].astype(str)), x="examples", y=metric,
                      hue="seed", marker="o")
    ax.set(title=f"{runs.experiment}: validation {metric} during training, one line per seed",
           xlabel="training examples seen", ylabel=f"validation {metric}")
    return ax
