"""Tokenisation, its on-disk cache, and batches.

Pair tasks have two encodings (``pair_mode``):
- ``sentence``: ONE sequence ``[CLS] s1 [SEP] s2 [SEP]`` with segment ids 0 then 1, the
  longer sentence truncated first, padding only at the end (the reference code padded
  each sentence before concatenating, and left every segment id at 0);
- ``embedding``: each sentence encoded alone; the model concatenates the two embeddings.

An encoded split holds one or two *parts* (lists of token-id sequences); a batch pads
each part to its own longest sequence.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtlib import seeds
from mtlib.io import atomic_path
from mtlib.tasks import TASKS


@dataclass
class EncodedSplit:
    task: str
    ids: list[str]
    parts: list[tuple[list[list[int]], list[list[int]]]]  # per part: (input ids, segment ids)
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows) -> "EncodedSplit":
        """The split restricted to ``rows`` (indices), in that order."""
        rows = np.asarray(rows, dtype=int)
        parts = [([ids[i] for i in rows], [types[i] for i in rows]) for ids, types in self.parts]
        labels = None if self.labels is None else self.labels[rows]
        return EncodedSplit(self.task, [self.ids[i] for i in rows], parts, labels)

    def lengths(self) -> np.ndarray:
        """Tokens per example, summed over parts (what a batch of it costs)."""
        return np.sum([[len(seq) for seq in ids] for ids, _ in self.parts], axis=0)


@dataclass
class Batch:
    task: str
    ids: list[str]
    inputs: list[dict[str, torch.Tensor]]  # per part: input_ids, attention_mask, token_type_ids
    labels: torch.Tensor | None
    index: np.ndarray                     # rows of the split, for putting predictions back

    def to(self, device) -> "Batch":
        inputs = [{k: v.to(device) for k, v in part.items()} for part in self.inputs]
        labels = None if self.labels is None else self.labels.to(device)
        return Batch(self.task, self.ids, inputs, labels, self.index)

    def __len__(self) -> int:
        return len(self.ids)

    def real_tokens(self) -> int:
        return int(sum(part["attention_mask"].sum() for part in self.inputs))

    def padded_tokens(self) -> int:
        return int(sum(part["attention_mask"].numel() for part in self.inputs))


def tokenize(tokenizer, frame: pd.DataFrame, task: str, pair_mode: str, max_length: int):
    """Token ids per part for every row of ``frame``."""
    spec = TASKS[task]
    columns = [frame[c].tolist() for c in spec.text_columns]
    # (first, second) sentences per part: a pair in one sequence, or each column alone
    groups = [tuple(columns)] if spec.is_pair and pair_mode == "sentence" else [(c, None) for c in columns]
    encodings = [tokenizer(first, second, truncation="longest_first" if second is not None else True,
                           max_length=max_length, return_token_type_ids=True) for first, second in groups]
    return [(enc["input_ids"], enc["token_type_ids"]) for enc in encodings]


def _cache_key(tokenizer, backbone: str, frame: pd.DataFrame, task: str, pair_mode: str, max_length: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([backbone, getattr(tokenizer, "name_or_path", ""), len(tokenizer),
                         task, pair_mode if TASKS[task].is_pair else "single", max_length]).encode())
    for column in TASKS[task].text_columns:
        h.update("\x1f".join(frame[column]).encode())
    return h.hexdigest()[:24]


def _save_parts(path: Path, parts) -> None:
    tensors = {}
    for k, (ids, types) in enumerate(parts):
        tensors[f"{k}.offsets"] = torch.tensor(np.cumsum([0] + [len(s) for s in ids]), dtype=torch.int64)
        tensors[f"{k}.ids"] = torch.tensor([t for s in ids for t in s], dtype=torch.int32)
        tensors[f"{k}.types"] = torch.tensor([t for s in types for t in s], dtype=torch.int8)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def _load_parts(path: Path, rows: int):
    """The cached parts, or None (with a warning) when the file is not a readable cache of
    ``rows`` rows: a cache is rebuilt, never trusted blindly nor fatal."""
    try:
        tensors = load_file(str(path))
        parts = []
        for k in range(len(tensors) // 3):
            offsets = tensors[f"{k}.offsets"].tolist()
            ids, types = tensors[f"{k}.ids"].tolist(), tensors[f"{k}.types"].tolist()
            spans = list(zip(offsets[:-1], offsets[1:]))
            parts.append(([ids[a:b] for a, b in spans], [types[a:b] for a, b in spans]))
        if parts and all(len(ids) == rows for ids, _ in parts):
            return parts
        problem = f"it does not hold {rows} rows"
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
        problem = " ".join(str(err).split()) or type(err).__name__
    warnings.warn(f"{path}: unreadable tokenisation cache ({problem}); rebuilding it")
    return None


def encode_split(tokenizer, frame: pd.DataFrame, task: str, pair_mode: str, max_length: int,
                 cache_dir: str | Path | None = None, backbone: str = "") -> EncodedSplit:
    """Tokenise a validated split, reusing the cache keyed by backbone, text and max length."""
    label = TASKS[task].label_column
    labels = frame[label].to_numpy() if label in frame.columns else None
    parts = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{task}-{_cache_key(tokenizer, backbone, frame, task, pair_mode, max_length)}.safetensors"
        if path.exists():
            parts = _load_parts(path, len(frame))
    if parts is None:
        parts = tokenize(tokenizer, frame, task, pair_mode, max_length)
        if cache_dir is not None:
            _save_parts(path, parts)
    return EncodedSplit(task, frame["id"].tolist(), parts, labels)


def _padded(seqs: list[list[int]], width: int, pad_value: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, width) int64 array of ``seqs`` padded at the end with ``pad_value``, and the
    (rows, width) mask of real tokens: one vectorised copy, no Python loop over rows."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    mask = np.arange(width) < lengths[:, None]
    out = np.full((len(seqs), width), pad_value, dtype=np.int64)
    out[mask] = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    return out, mask


def collate(split: EncodedSplit, rows: np.ndarray, pad_id: int, pad_to: int | None = None) -> Batch:
    """Pad each part to the batch's longest sequence (or to ``pad_to``), at the end only."""
    inputs = []
    for ids, types in split.parts:
        seqs = [ids[i] for i in rows]
        width = pad_to or max(map(len, seqs))
        input_ids, mask = _padded(seqs, width, pad_id)
        token_types, _ = _padded([types[i] for i in rows], width, 0)
        inputs.append({"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask.astype(np.int64)),
                       "token_type_ids": torch.from_numpy(token_types)})
    labels = None
    if split.labels is not None:
        dtype = torch.long if TASKS[split.task].integer_labels else torch.float32
        labels = torch.tensor(split.labels[rows].astype(float)).to(dtype)
    return Batch(split.task, [split.ids[i] for i in rows], inputs, labels, np.asarray(rows))


def epoch_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator,
                  bucketing: bool, bucket_factor: int = 50) -> list[np.ndarray]:
    """One pass over a split in shuffled batches.

    With bucketing, the shuffled rows are cut into chunks of ``bucket_factor`` batches, each
    chunk sorted by length and cut into batches, and the batch order shuffled again: every
    row is used once, and each batch holds similar lengths.
    """
    order = torch.randperm(len(lengths), generator=generator).numpy()
    if bucketing:
        chunk = batch_size * bucket_factor
        order = np.concatenate([
            c[np.argsort(lengths[c], kind="stable")] for c in np.split(order, range(chunk, len(order), chunk))
        ])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucketing:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


class BatchStream:
    """An endless stream of training batches of one task, resumable from ``(passes, position)``.

    Pass ``p`` is shuffled by a generator seeded from ``(seed, task, p)`` alone, so the
    stream after a resume is the stream the uninterrupted run would have seen.
    """

    def __init__(self, split: EncodedSplit, batch_size: int, seed: int, pad_id: int,
                 bucketing: bool = True, pad_to: int | None = None):
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.pad_id, self.bucketing, self.pad_to = pad_id, bucketing, pad_to
        self.lengths = split.lengths()
        self.passes, self.position = 0, 0
        self._batches = None

    def _plan(self) -> list[np.ndarray]:
        generator = seeds.generator(seeds.pass_seed(self.seed, self.split.task, self.passes))
        return epoch_batches(self.lengths, self.batch_size, generator, self.bucketing)

    def next(self) -> Batch:
        if self._batches is None:
            self._batches = self._plan()
        if self.position >= len(self._batches):
            self.passes, self.position = self.passes + 1, 0
            self._batches = self._plan()
        rows = self._batches[self.position]
        self.position += 1
        return self.collate(rows)

    def collate(self, rows: np.ndarray) -> Batch:
        """The batch of these rows (benchmarks override it to time other ways of padding)."""
        return collate(self.split, rows, self.pad_id, self.pad_to)

    def state_dict(self) -> dict:
        return {"passes": self.passes, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.passes, self.position = int(state["passes"]), int(state["position"])
        self._batches = None


def eval_batches(split: EncodedSplit, batch_size: int, pad_id: int):
    """The whole split in length-sorted batches (least padding); ``Batch.index`` restores order."""
    order = np.argsort(split.lengths(), kind="stable")
    for i in range(0, len(order), batch_size):
        yield collate(split, order[i:i + batch_size], pad_id)
