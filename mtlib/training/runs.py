"""Run folders: what a training run leaves on disk, and the state it resumes from.

A run folder holds ``.mtlib-run`` (the marker, written first: what makes a folder one that
``--overwrite`` may replace), ``config.yaml`` (the resolved config), ``history.csv`` (one
row per evaluation), ``metrics.json``, ``predictions/<task>-<split>.csv``,
``checkpoints/best`` (weights of the best evaluation) and, until the run completes,
``checkpoints/last`` (the full training state, for ``--resume``). Every file is written
atomically.

A run folder has one writer at a time: :func:`lock` takes an exclusive lock on
``.<name>.lock`` beside the folder (beside, so that replacing the folder keeps the lock,
and a DVC output holds no lock file) for the whole of a train, resume or evaluate.
:func:`claim` checks what a run may do with a folder, under that lock; :func:`check_folder`
runs the same checks without the lock, before a run spends time on its data.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import filelock
import yaml

from mtlib.config import Config, TrainConfig, load_config_file
from mtlib.errors import RunFolderError
from mtlib.io import write_text
from mtlib.record import RunRecord, examples_at
from mtlib.training.checkpoint import checkpoint_exists

MARKER = ".mtlib-run"
MARKER_TEXT = "This folder is an mtlib run folder: `mtlib train --overwrite` may replace it.\n"
ADJUSTMENT_FILE = "sst_adjustment.safetensors"
# Config keys that say where a run computes, not what it computes: a resume may change them.
WHERE_IT_RUNS = ("train.device", "train.num_threads", "data.dir", "data.cache_dir", "data.processed_dir")


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


class RunFolder:
    """The paths of one run folder."""

    def __init__(self, path: Path):
        self.path = path
        self.marker = path / MARKER
        self.config = path / "config.yaml"
        self.metrics = path / "metrics.json"
        self.history = path / "history.csv"
        self.best = path / "checkpoints" / "best"
        self.last = path / "checkpoints" / "last"
        self.adjustment = path / ADJUSTMENT_FILE

    def predictions(self, task: str, split: str) -> Path:
        return self.path / "predictions" / f"{task}-{split}.csv"


def init_checkpoint(t: TrainConfig) -> Path:
    """The best weights of the run ``train.init_from`` names (``{seed}``: this run's seed)."""
    return RunFolder(Path(t.init_from.format(seed=t.seed))).best


def start_examples(t: TrainConfig) -> int:
    """The examples the run ``train.init_from`` names had seen at the checkpoint this run
    starts from (its best: the update its metrics.json selected), counted from that run's
    own start: where this run's curve continues (mtlib.record.read_history)."""
    folder = Path(t.init_from.format(seed=t.seed))
    record = RunRecord.read(RunFolder(folder).metrics)
    return examples_at(folder, int(record.best_update or 0))


def read_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunFolderError(f"{path}: missing; {run_dir} is not a finished run folder (train one with mtlib train)")
    return load_config_file(path)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def identity(cfg: Config) -> dict:
    """The config as flat ``{dotted key: value}``, without the keys that say where it runs."""
    return {k: v for k, v in _flat(cfg.to_dict()).items() if k not in WHERE_IT_RUNS}


def fingerprint(cfg: Config) -> str:
    """A short hash of :func:`identity`: stored in every checkpoint, checked when one is loaded."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:16]


def differences(saved: Config, cfg: Config) -> list[str]:
    """``key: saved -> now`` for every identity key that differs."""
    a, b = identity(saved), identity(cfg)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_folder(path: Path, cfg: Config, resume: bool, overwrite: bool) -> bool:
    """What a run may do with ``path``; raises RunFolderError when it may do nothing.
    Returns True when the run starts the folder afresh (absent, empty, or replaced by
    ``overwrite``), False when it continues the run there (``resume``). Only reads."""
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path}: exists and is not a folder (give --out a folder path)")
    if not path.exists() or not any(path.iterdir()):
        return True
    if not (path / MARKER).exists():
        raise RunFolderError(f"{path}: not empty and not a run folder (no {MARKER}); nothing is written there "
                             "(choose another --out)")
    if resume:
        changed = differences(read_run_config(path), cfg) if (path / "config.yaml").exists() else []
        if changed:
            more = f"; and {len(changed) - 6} more" if len(changed) > 6 else ""
            raise RunFolderError(f"{path}: --resume with another config than the run's config.yaml: "
                                 f"{'; '.join(changed[:6])}{more} (resume with the run's own settings, "
                                 "or start a new run with another --out or --overwrite)")
        return False
    if overwrite:
        return True
    raise RunFolderError(f"{path}: run folder is not empty; pass --resume to continue it or --overwrite "
                         "to replace it (resume=True / overwrite=True)")


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)


@contextlib.contextmanager
def lock(path: str | Path):
    """Hold the run folder ``path``'s exclusive lock, or refuse at once naming its holder's pid."""
    path = Path(path)
    where = path.resolve()  # `--out .` or `--out run/` name the same folder as its full path
    where.parent.mkdir(parents=True, exist_ok=True)
    lock_file = where.with_name(f".{where.name}.lock")
    held = filelock.FileLock(lock_file, on_acquired=_write_pid)
    try:
        held.acquire(blocking=False)
    except filelock.Timeout:
        holder = lock_file.read_text().strip() or "unknown"
        raise RunFolderError(f"{path}: in use by another mtlib process, pid {holder} (wait for it to finish: "
                             "a run folder has one writer at a time)") from None
    try:
        yield
    finally:
        held.release()


@contextlib.contextmanager
def claim(path: str | Path, cfg: Config, resume: bool, overwrite: bool):
    """Lock ``path`` for a training run and yield its :class:`RunFolder`, checked by
    :func:`check_folder`: a fresh run empties the folder (its old run, with ``overwrite``)
    and writes the marker and config.yaml; a resumed run keeps them. A fresh run that fails
    before its first checkpoint leaves nothing behind (an empty folder the user made stays)."""
    path = Path(path)
    with lock(path):
        fresh = check_folder(path, cfg, resume, overwrite)
        users_empty_folder = path.is_dir() and not any(path.iterdir())
        folder = RunFolder(path)
        try:
            if fresh:
                _clear(path, remove_folder=False)
            if not folder.marker.exists():
                write_text(folder.marker, MARKER_TEXT)
            if not folder.config.exists():
                write_text(folder.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            yield folder
        except BaseException:
            if fresh and not checkpoint_exists(folder.last) and not folder.metrics.exists():
                with contextlib.suppress(OSError):  # the error that brought us here is the one to report
                    _clear(path, remove_folder=not users_empty_folder)
            raise


def _clear(path: Path, remove_folder: bool) -> None:
    """Delete what ``path`` holds (callers have checked that it is a run folder's)."""
    for child in list(path.iterdir()) if path.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink(missing_ok=True)
    if remove_folder and path.is_dir():
        path.rmdir()
