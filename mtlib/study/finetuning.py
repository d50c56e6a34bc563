"""One experiment trained for each seed and read back: what notebooks 03 and 04 show.

Their curves are VALIDATION curves (the split that picks the checkpoint): dev is scored once
per run, by its selected weights.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import seaborn as sns

from mtlib.config import Config, load_config, resolve_seeds
from mtlib.io import write_csv, write_json
from mtlib.record import CURVE_COLUMNS, RunRecord, curve, read_history, score_that_counts
from mtlib.training.sweep import Job, train_many


def run_scores(record: RunRecord) -> dict:
    """What DVC's metrics show of a run: dev (and test) scores, best_update, updates and
    train_seconds (no parameter or data counts)."""
    shown = {"dev": record.dev, "test": record.test, "best_update": record.best_update, "updates": record.updates,
             "train_seconds": record.train_seconds}
    return {key: value for key, value in shown.items() if value is not None}


def export_runs(run_dirs: Mapping[int, str | Path], metrics_path: str | Path, curve_path: str | Path) -> dict:
    """Flat files of one experiment's runs (``{seed: run folder}``) for ``dvc metrics`` and
    ``dvc plots``: ``metrics_path`` (JSON, ``{"seed<k>": run_scores}``) and ``curve_path``
    (CSV: ``seed``, then :func:`mtlib.record.curve`). Returns what was written to ``metrics_path``."""
    scores = {f"seed{seed}": run_scores(RunRecord.read(Path(path) / "metrics.json")) for seed, path in run_dirs.items()}
    curves = [curve(read_history(path)).assign(seed=seed) for seed, path in run_dirs.items()]
    frame = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["seed", *CURVE_COLUMNS])
    write_json(metrics_path, scores)
    write_csv(curve_path, frame[["seed", *[c for c in frame.columns if c != "seed"]]])
    return scores


def run_summary(record: RunRecord) -> dict:
    """A run's headline numbers, the same keys for every kind of run: ``dev_score`` (the
    score that counts, on dev), ``curve_metric`` (the history.csv column that score is),
    updates, best_update, train_seconds, examples_per_second (NaN without training),
    params_total, params_trainable."""
    speed, seconds, params = record.train_examples_per_second, record.train_seconds, record.params or {}
    return {"dev_score": score_that_counts(record.dev),
            "curve_metric": "mean" if "mean" in record.dev else next(iter(record.dev), "mean"),
            "updates": int(record.updates or 0), "best_update": int(record.best_update or 0),
            "train_seconds": math.nan if seconds is None else float(seconds),
            "examples_per_second": math.nan if speed is None else float(speed),
            "params_total": int(params.get("total", 0)), "params_trainable": int(params.get("trainable", 0))}


def seeds_table(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run (index: seed): each dev metric, best_update, updates, train_seconds,
    train examples/s and precision."""
    rows = {}
    for record in records:
        s = run_summary(record)
        rows[int(record.seed)] = {**{f"dev {k}": v for k, v in record.dev.items()}, "best_update": s["best_update"],
                                  "updates": s["updates"], "train_seconds": s["train_seconds"],
                                  "examples/s": s["examples_per_second"], "precision": record.precision_label or "–"}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("seed")


def seed_jobs(params: str | Path, experiment: str, profile: str | None, seeds, runs_dir: str | Path) -> list[Job]:
    """A job per seed (``seeds`` as :func:`mtlib.config.resolve_seeds` reads them), each
    replacing the run in ``<runs_dir>/<experiment>/seed<k>``."""
    return [Job(load_config(params, experiment, profile, seed), Path(runs_dir) / experiment / f"seed{seed}",
                overwrite=True) for seed in resolve_seeds(seeds, params)]


def train_seeds(jobs: list[Job], workers: int, metrics_dir: str | Path, curves_dir: str | Path) -> list[RunRecord]:
    """Train every job (mtlib.training.sweep), export them for DVC; their records in order."""
    records = [RunRecord.from_json(content) for content in train_many(jobs, workers)]
    experiment = jobs[0].cfg.experiment
    export_runs({job.cfg.train.seed: job.out_dir for job in jobs},
                Path(metrics_dir) / f"{experiment}.json", Path(curves_dir) / f"{experiment}.csv")
    return records


def describe_setup(cfg: Config, seeds: Sequence[int]) -> str:
    """One paragraph of what an experiment's runs do: its choice on every axis."""
    m, t, d = cfg.model, cfg.train, cfg.data
    return (f"Experiment **{cfg.experiment}**, seeds {', '.join(map(str, seeds))}, profile **{cfg.profile}** "
            f"(backbone `{cfg.backbone.name}`): "
            f"{m.pair_mode} concatenation, heads {dict((task, m.head_for(task).kind) for task in t.tasks)}, "
            f"PALs {m.pals}; sampler {t.sampler}, batch plan {t.plan}, combiner {t.combiner}, SMART {t.smart}, "
            f"head pretraining {t.pretrain_heads}; length filter {d.length_filter:.0%}, EDA balancing {d.augment}; "
            f"{t.epochs} epochs of {t.batches_per_epoch} micro-batches at learning rate {t.lr:g}"
            + (f", of which it trains only the {t.tasks[0]} batches that a {t.match_examples['sampler']} sampler over "
               f"{', '.join(t.match_examples['tasks'])} draws (seed by seed: equal examples of {t.tasks[0]})"
               if t.match_examples else "")
            + ("; only the heads train (the encoder is frozen)" if cfg.methods.frozen_encoder else "")
            + (f"; starts from `{t.init_from}`" if t.init_from else "") + ".")


def plot_validation_curves(jobs: list[Job], metric: str):
    """Validation ``metric`` (the score that counts: run_summary's curve_metric) against
    training examples seen, a line per seed; None for runs that do not train (no history)."""
    history = pd.concat([read_history(job.out_dir) for job in jobs])
    if not len(history):
        return None
    ax = sns.lineplot(data=history.assign(seed=history["seed"].astype(str)), x="examples", y=metric,
                      hue="seed", marker="o")
    ax.set(title=f"{jobs[0].cfg.experiment}: validation {metric} during training, one line per seed",
           xlabel="training examples seen", ylabel=f"validation {metric}")
    return ax
