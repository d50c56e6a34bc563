"""What a run leaves for its readers: metrics.json as one :class:`RunRecord`, the curve of
its history.csv, and the names of its folder.

Every method of mtlib.training.loop writes its metrics.json through :meth:`RunRecord.write`,
and every reader (the run tables, the results table, the page headers, inference) reads
it through :meth:`RunRecord.read`, so a key is named in one place. The record sits below the
layers because both the training layer (writing) and the study layer (reading, without
torch) need it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mtlib.io import write_json

SEED_FOLDER = re.compile(r"seed(\d+)")  # results/runs/<experiment>/seed<k>
PRECISIONS = {"none": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast with a GradScaler"}  # train.amp
CURVE_COLUMNS = ("update", "epoch", "examples")
IDENTITY = ("backbone", "profile", "experiment", "seed", "machine")


class RecordError(ValueError):
    """A metrics.json that cannot be read as a run's record; the message names the file."""


def folder_seed(folder: str | Path) -> int | None:
    """The k of a ``seed<k>`` run folder; None for a folder named otherwise."""
    match = SEED_FOLDER.fullmatch(Path(folder).name)
    return int(match.group(1)) if match else None


def score_that_counts(scores: Mapping[str, float]) -> float:
    """The one number a split's scores stand for: their ``mean`` (of the three tasks), or for
    a run that trains fewer tasks the mean of their metrics (NaN for none). Early stopping
    and checkpoint selection follow it on validation; the run tables report it on dev."""
    if "mean" in scores:
        return float(scores["mean"])
    return float(np.mean(list(scores.values()))) if scores else math.nan


def curve(history: pd.DataFrame) -> pd.DataFrame:
    """A learning curve from a history.csv: update, epoch, examples, each task's validation
    metric, then ``validation_mean``, :func:`score_that_counts` of each evaluation."""
    scores = [c for c in history.columns if "/" in c]
    out = history[[c for c in CURVE_COLUMNS if c in history] + scores].copy()
    counted = history[[c for c in history.columns if "/" in c or c == "mean"]]
    out["validation_mean"] = [score_that_counts(row.dropna().to_dict()) for _, row in counted.iterrows()]
    return out


@dataclass(frozen=True)
class RunRecord:
    """A run's metrics.json. Split scores are ``{'<task>/<metric>': value, 'mean': value}``;
    a field left None is not written. The fields' order is the key order of the runs that
    score without training (heads, posthoc, random); see :data:`TRAINED_ORDER`."""

    dev: dict                                       # scored once, at the selected checkpoint
    validation: dict | None = None                  # at the selected checkpoint (or kept head epochs)
    head_epochs: dict | None = None                 # heads only: the epoch each head was kept at
    dev_unadjusted: dict | None = None              # with an adjustment matrix: dev without it
    eval_examples_per_second: float | None = None
    test_unadjusted: dict | None = None
    test: dict | None = None                        # where the test files are labelled
    best_update: int | None = None                  # 0 for a run that trains no update
    updates: int | None = None
    stopped_early: bool | None = None
    train_seconds: float | None = None
    train_examples_per_second: float | None = None
    train_tokens_per_second: float | None = None
    data: dict = field(default_factory=dict)        # training rows per task after each preparation step
    params: dict = field(default_factory=dict)      # mtlib.model.multitask.parameter_counts
    precision: str | None = None                    # train.amp as resolved on the machine
    backbone: str | None = None
    profile: str | None = None
    experiment: str | None = None
    seed: int | None = None
    machine: str | None = None

    def to_json(self, order: tuple[str, ...] | None = None) -> dict:
        """The record as metrics.json holds it: its set fields, in ``order`` (default: the fields')."""
        values = dataclasses.asdict(self)
        return {key: values[key] for key in order or values if values[key] is not None}

    def write(self, path: str | Path, order: tuple[str, ...] | None = None) -> dict:
        content = self.to_json(order)
        write_json(path, content)
        return content

    @classmethod
    def from_json(cls, content: Mapping) -> "RunRecord":
        """The record of a metrics.json's content (keys it does not know are ignored)."""
        return cls(**{f.name: content[f.name] for f in dataclasses.fields(cls) if f.name in content})

    @classmethod
    def read(cls, path: str | Path) -> "RunRecord":
        """The record in ``path``; :class:`RecordError` names the file when it holds none."""
        try:
            content = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RecordError(f"{path}: malformed metrics.json: {error}") from error
        if not isinstance(content, dict) or not isinstance(content.get("dev"), dict):
            raise RecordError(f"{path}: malformed metrics.json: no 'dev' object of scores")
        return cls.from_json(content)

    @property
    def dev_score(self) -> float:
        return score_that_counts(self.dev)

    @property
    def precision_label(self) -> str | None:
        return PRECISIONS.get(self.precision, self.precision)


# A fine-tuning run's key order (what its metrics.json has always held): its scores and
# counters first, then the cost of training, the model and the data.
TRAINED_ORDER = ("dev", "validation", "best_update", "updates", "stopped_early", "dev_unadjusted",
                 "eval_examples_per_second", "test_unadjusted", "test", "train_seconds",
                 "train_examples_per_second", "train_tokens_per_second", "params", "data", "precision", *IDENTITY)
