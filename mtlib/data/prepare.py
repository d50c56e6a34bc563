"""The data a run trains and is scored on, prepared as its config says.

``prepare_data`` reads and validates the course files, samples what the profile keeps,
tokenises (cached), and for training drops the longest inputs and EDA-balances the classes
of the tasks that ask for it (cached in ``data.processed_dir``).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from mtlib.config import Config
from mtlib.data.augment import balance_classes, length_filter, write_augmented
from mtlib.data.encode import EncodedSplit, encode_split
from mtlib.data.files import file_name, find_data_dir, load_split, read_task_file
from mtlib.io import write_csv
from mtlib.tasks import TASK_NAMES, TASKS

DEV_SAMPLE_SEED = 0  # the dev subsample is fixed: every run is scored on the same rows


def prepare_data(cfg: Config, tokenizer, data_dir=None, splits=("train", "dev"),
                 counts: dict | None = None) -> dict[str, dict[str, EncodedSplit]]:
    """``{split: {task: EncodedSplit}}``: validated, subsampled as the profile says, tokenised;
    training data length-filtered and augmented when the config says so (``counts``, if
    given, receives the training-set size per task after each of those steps)."""
    folder = find_data_dir(data_dir or cfg.data.dir)
    out = {}
    for split in splits:
        out[split] = {}
        for task in TASK_NAMES:
            if split == "test-student" and not (folder / file_name(task, split)).exists():
                continue  # unlabelled files are optional (the local mirror has no quora test file)
            size = {"train": cfg.data.train_size[task], "dev": cfg.data.dev_size[task]}.get(split)
            seed = cfg.train.seed if split == "train" else DEV_SAMPLE_SEED
            frame = load_split(folder, task, split, size, seed)
            encoded = _encode(cfg, tokenizer, frame, task)
            if split == "train":
                encoded = _prepare_training(cfg, tokenizer, frame, encoded, task, {} if counts is None else counts)
            out[split][task] = encoded
    return out


def _encode(cfg: Config, tokenizer, frame, task: str) -> EncodedSplit:
    return encode_split(tokenizer, frame, task, cfg.model.pair_mode, cfg.backbone.max_length,
                        cfg.data.cache_dir, cfg.backbone.name)


def _prepare_training(cfg: Config, tokenizer, frame, encoded: EncodedSplit, task: str, counts: dict) -> EncodedSplit:
    """Drop the longest inputs, then EDA-balance the classes (cached in data/processed)."""
    d = cfg.data
    counts.setdefault("loaded", {})[task] = len(frame)
    if d.length_filter > 0:
        frame, _ = length_filter(frame, encoded.lengths(), d.length_filter)
        frame = frame.reset_index(drop=True)
        encoded = _encode(cfg, tokenizer, frame, task)
        counts.setdefault("length_filtered", {})[task] = len(frame)
    if d.augment and TASKS[task].balanced:
        frame = _augmented(frame, task, cfg.train.seed, Path(d.processed_dir))
        encoded = _encode(cfg, tokenizer, frame, task)
        counts.setdefault("augmented", {})[task] = len(frame)
    return encoded


def _augmented(frame, task: str, seed: int, folder: Path):
    """``frame`` EDA-balanced, read from ``folder`` when this exact input was balanced before."""
    spec = TASKS[task]
    key = hashlib.sha256("\x1f".join(frame["id"]).encode() + f"{task}/{seed}".encode()).hexdigest()[:16]
    path = folder / f"{task}-train-augmented-{key}.csv"
    if not path.exists():
        augmented, classes = balance_classes(frame, list(spec.text_columns), spec.label_column, seed=seed)
        write_csv(path.with_name(path.stem + "-counts.csv"), classes.reset_index())
        write_augmented(augmented, path)
    return read_task_file(path, task)
