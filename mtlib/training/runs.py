"""Run folders: what a training run leaves on disk, and the state it resumes from.

A run folder holds ``config.yaml`` (the resolved config), ``history.csv`` (one row per
evaluation), ``metrics.json``, ``predictions/<task>-<split>.csv``, ``checkpoints/best``
(weights of the best evaluation) and, until the run completes, ``checkpoints/last`` (the
full training state, for ``--resume``). Every file is written atomically.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from mtlib.config import Config, config_from_dict
from mtlib.io import write_csv, write_json, write_text

ADJUSTMENT_FILE = "sst_adjustment.safetensors"
CURVE_COLUMNS = ("update", "epoch", "examples")


@dataclass
class RunState:
    """The counters of a training run: what the loop updates and a checkpoint restores."""

    update: int = 0                 # optimiser updates made
    examples: int = 0               # training examples consumed
    tokens: int = 0                 # real (non-padding) training tokens consumed
    train_seconds: float = 0.0      # time in updates, without evaluation
    best_score: float = -math.inf   # the best selection score so far
    best_update: int = 0
    bad_evals: int = 0              # evaluations since the best one
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)  # one row per evaluation

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RunState":
        return cls(**data)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def best(self) -> Path:
        return self.path / "checkpoints" / "best"

    @property
    def last(self) -> Path:
        return self.path / "checkpoints" / "last"

    @property
    def adjustment(self) -> Path:
        return self.path / ADJUSTMENT_FILE

    def predictions(self, task: str, split: str) -> Path:
        return self.path / "predictions" / f"{task}-{split}.csv"


def save_config(cfg: Config, path: Path) -> None:
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
    return config_from_dict(yaml.safe_load(path.read_text()), where=str(path))


def write_history(folder: RunFolder, history: list[dict]) -> None:
    write_csv(folder.history, pd.DataFrame(history))


def export_run(run_dir: str | Path, metrics_path: str | Path, curve_path: str | Path) -> dict:
    """Write a run's dev (and test) scores to ``metrics_path`` (JSON) and its learning curve
    to ``curve_path`` (CSV: update, epoch, examples, each metric, then ``dev_mean``, the
    mean of the trained tasks' metrics, which early stopping follows): flat files for
    ``dvc metrics`` and ``dvc plots``.

    A run without history.csv (the random predictor does not train) gets a curve with the
    header only. Returns what was written to ``metrics_path``.
    """
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    flat = {split: metrics[split] for split in ("dev", "test") if isinstance(metrics.get(split), dict)}
    flat.update({k: metrics[k] for k in ("best_update", "updates", "train_seconds") if k in metrics})
    write_json(metrics_path, flat)
    history_path = run_dir / "history.csv"
    if history_path.exists():
        history = pd.read_csv(history_path)
        scores = [c for c in history.columns if "/" in c]
        curve = history[[c for c in CURVE_COLUMNS if c in history] + scores].copy()
        curve["dev_mean"] = history["mean"] if "mean" in history else history[scores].mean(axis=1)
    else:
        curve = pd.DataFrame(columns=[*CURVE_COLUMNS, "dev_mean"])
    write_csv(curve_path, curve)
    return flat
