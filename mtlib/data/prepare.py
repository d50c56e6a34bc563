"""The data a run trains, selects and is scored on, prepared as its config says.

Three labelled splits per task:

* ``validation``: a fixed sample held out of the training file (``data.validation_size``,
  seed :data:`VALIDATION_SEED`): early stopping and checkpoint selection look only at it;
* ``train``: the rest of the training file, sampled as the profile says (``data.train_size``,
  seeded by the training seed), then length-filtered and EDA-balanced when asked;
* ``dev``: the course's dev file (a fixed sample of ``data.dev_size``, seed
  :data:`DEV_SAMPLE_SEED`): scored ONCE, at the selected checkpoint, and reported.

The three never share a row. ``test-student`` (unlabelled) is read on request.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pandas as pd

from mtlib.config import Config
from mtlib.data.augment import balance_classes, length_filter, write_augmented
from mtlib.data.encode import EncodedSplit, encode_split
from mtlib.data.files import DataError, file_name, find_data_dir, load_split, read_task_file, subsample
from mtlib.io import write_csv
from mtlib.tasks import TASK_NAMES, TASKS

DEV_SAMPLE_SEED = 0         # the dev subsample is fixed: every run is scored on the same rows
VALIDATION_SEED = 0         # ... and selects on the same held-out rows
AUGMENTATION_SEED = 0       # EDA's random choices: one augmented training set, as the report made one


def split_train(frame: pd.DataFrame, validation_size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation): ``validation_size`` rows drawn with :data:`VALIDATION_SEED`, and the rest."""
    if validation_size >= len(frame):
        raise ValueError(f"validation_size {validation_size} leaves no training rows (the file has {len(frame)})")
    validation = subsample(frame, validation_size, VALIDATION_SEED)
    rest = frame[~frame["id"].isin(set(validation["id"]))].reset_index(drop=True)
    return rest, validation


def prepare_data(cfg: Config, tokenizer, data_dir=None,
                 splits=("train", "validation", "dev")) -> dict[str, dict[str, EncodedSplit]]:
    """``{split: {task: EncodedSplit}}`` for ``splits`` (see the module docstring)."""
    return prepare_counted(cfg, tokenizer, data_dir, splits)[0]


def prepare_counted(cfg: Config, tokenizer, data_dir=None, splits=("train", "validation", "dev"),
                    ) -> tuple[dict[str, dict[str, EncodedSplit]], dict[str, dict[str, int]]]:
    """:func:`prepare_data`, and the training-set size per task after each preparation step
    (``{"loaded"|"length_filtered"|"augmented": {task: rows}}``)."""
    folder = find_data_dir(data_dir or cfg.data.dir)
    counts: dict[str, dict[str, int]] = {}
    out: dict[str, dict[str, EncodedSplit]] = {split: {} for split in splits}
    for task in TASK_NAMES:
        frames = {}
        if {"train", "validation"} & set(splits):
            whole = load_split(folder, task, "train")
            train, frames["validation"] = split_train(whole, cfg.data.validation_size[task])
            frames["train"] = subsample(train, cfg.data.train_size[task], cfg.train.seed)
        if "dev" in splits:
            frames["dev"] = load_split(folder, task, "dev", cfg.data.dev_size[task], DEV_SAMPLE_SEED)
        if "test-student" in splits and (folder / file_name(task, "test-student")).exists():
            frames["test-student"] = load_split(folder, task, "test-student")  # optional: no quora test file here
        for split in [s for s in splits if s in frames]:
            frame = frames[split]
            if split == "train":
                frame, steps = _prepare_training(cfg, tokenizer, frame, task)
                for step, rows in steps.items():
                    counts.setdefault(step, {})[task] = rows
            out[split][task] = _encode(cfg, tokenizer, frame, task)
    return out, counts


def _encode(cfg: Config, tokenizer, frame, task: str) -> EncodedSplit:
    return encode_split(tokenizer, frame, task, cfg.model.pair_mode, cfg.backbone.max_length,
                        cfg.data.cache_dir, cfg.backbone.name)


def _prepare_training(cfg: Config, tokenizer, frame, task: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the longest inputs, then EDA-balance the classes (cached in data/processed);
    also returns the rows left after each step."""
    d = cfg.data
    steps = {"loaded": len(frame)}
    if d.length_filter > 0:
        frame, _ = length_filter(frame, _encode(cfg, tokenizer, frame, task).lengths(), d.length_filter)
        frame = frame.reset_index(drop=True)
        steps["length_filtered"] = len(frame)
    if d.augment and TASKS[task].balanced:
        frame = _augmented(frame, task, Path(d.processed_dir))
        steps["augmented"] = len(frame)
    return frame, steps


def _augmented(frame, task: str, folder: Path):
    """``frame`` EDA-balanced, read from ``folder`` when this exact input was balanced before."""
    spec = TASKS[task]
    key = hashlib.sha256("\x1f".join(frame["id"]).encode() + f"{task}/{AUGMENTATION_SEED}".encode()).hexdigest()[:16]
    path = folder / f"{task}-train-augmented-{key}.csv"
    if path.exists():
        try:
            return read_task_file(path, task)
        except DataError as err:  # a cache: rebuilt, not fatal
            warnings.warn(f"unreadable augmented training file ({err}); rebuilding it")
    augmented, classes = balance_classes(frame, list(spec.text_columns), spec.label_column, seed=AUGMENTATION_SEED)
    write_csv(path.with_name(path.stem + "-counts.csv"), classes.reset_index())
    write_augmented(augmented, path)
    return read_task_file(path, task)
