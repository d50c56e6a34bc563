"""Head pretraining on cached frozen-encoder features: the first phase of every run.

The report pretrains the heads before every fine-tuning run ("For all of our experiments we
first pretrained our classification head", §4): the encoder frozen, only the heads train
(AdamW, lr 1e-3, up to 25 epochs, patience 3). Two ways to choose when to stop:

* ``joint`` (the report's default): the heads train side by side, epoch by epoch, and ONE
  stopping point is chosen for all of them, the epoch with the best mean validation metric;
* ``individual`` (the report's AdvancedModel): each head stops at its own best epoch.

Heads share no parameter and the encoder is frozen, so each head's trajectory is the same
either way (its batches, its dropout and its optimiser depend on its task alone): the two
differ only in the epoch each head is kept at. Selection uses the validation split held out
of the training data, never dev.

Since the encoder does not change, its output for a split is the same every epoch: it is
computed ONCE per (task, split) and cached, on disk if ``cache_dir`` is given, as a
safetensors file keyed by a hash of the encoder's weights and the split's token ids
(:func:`load_or_encode`). Training a head then costs only the head.

What is stored (:class:`CachedFeatures`): each part's sentence vector, float32, and for heads
that read every token (RNN/LSTM) each part's token states in **float16**: half the memory of
fp32 and a relative rounding error of 2^-11 (bf16's is 2^-8). Hidden states beyond fp16's
range (65,504) raise an error instead of turning into inf.

Deliberate differences from a loop that runs the encoder on every batch:
  * the encoder runs in eval mode (no dropout), so its output can be cached; the head
    itself trains with its own dropout;
  * ``cache=False`` (the benchmark's baseline) runs the encoder on every batch but rounds
    its output exactly as the cache stores it, so both paths train on the same numbers
    (up to float noise from different padding widths).
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from mtlib import seeds
from mtlib.config import Config
from mtlib.data.encode import EncodedSplit, collate, epoch_batches, eval_batches
from mtlib.training.evaluate import score
from mtlib.training.precision import autocast, torch_threads
from mtlib.model.heads import Features, RecurrentHead
from mtlib.io import atomic_path
from mtlib.settings import PretrainSettings
from mtlib.tasks import TASKS, metric_key

CACHE_FORMAT = "2"
TOKEN_DTYPE = torch.float16
FP16_MAX = torch.finfo(torch.float16).max


def needs_tokens(head: nn.Module) -> bool:
    """Whether a head reads every token's state (RNN/LSTM) or only [CLS]."""
    return isinstance(head, RecurrentHead)


def _round_tokens(hidden: torch.Tensor) -> torch.Tensor:
    """fp32 -> the cache's fp16, refusing values fp16 cannot hold."""
    if hidden.abs().max() > FP16_MAX:
        raise ValueError(f"encoder hidden states exceed float16's range ({FP16_MAX}); cannot cache them in fp16")
    return hidden.to(TOKEN_DTYPE)


@dataclass
class CachedFeatures:
    """The frozen encoder's output for one split, in row order."""

    pooled: torch.Tensor         # (N, parts * H) float32
    tokens: list[torch.Tensor]   # per part (total tokens, H) float16; empty if not token-level
    offsets: list[torch.Tensor]  # per part (N + 1,) int64: row i is tokens[starts[i]:starts[i + 1]]

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def batch(self, rows: np.ndarray, device: torch.device) -> Features:
        """:class:`Features` for ``rows``: token states padded to the batch's longest row."""
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        tokens, masks = [], []
        for flat, offsets in zip(self.tokens, self.offsets):
            starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
            steps = torch.arange(int(lengths.max()))
            mask = steps[None] < lengths[:, None]                              # (B, T)
            index = torch.where(mask, starts[:, None] + steps[None], 0)        # (B, T)
            padded = flat[index].float().masked_fill(~mask[..., None], 0.0)   # (B, T, H)
            tokens.append(padded.to(device))
            masks.append(mask.long().to(device))
        return Features(self.pooled[rows].to(device), tokens, masks)


class EncoderFeatures:
    """The uncached alternative: runs the encoder on every batch (``HeadPretraining(cache=False)``).

    Its output is rounded as :class:`CachedFeatures` stores it, so the two agree. The model
    must be in eval mode, as :func:`pretrain_heads` puts it."""

    def __init__(self, model, split: EncodedSplit, pad_id: int, device: torch.device, amp: str, token_level: bool):
        self.model, self.split, self.pad_id = model, split, pad_id
        self.device, self.amp, self.token_level = device, amp, token_level

    def __len__(self) -> int:
        return len(self.split)

    @torch.no_grad()
    def batch(self, rows: np.ndarray, device: torch.device) -> Features:
        batch = collate(self.split, np.asarray(rows), self.pad_id).to(self.device)
        with autocast(self.amp, self.device):
            out = self.model.features(batch)
        if not self.token_level:
            return Features(out.pooled.float().to(device), [], [])
        tokens = [_round_tokens(h.float() * m[..., None]).float().to(device) for h, m in zip(out.tokens, out.masks)]
        return Features(out.pooled.float().to(device), tokens, [m.long().to(device) for m in out.masks])


@torch.no_grad()
def encode_features(model, split: EncodedSplit, batch_size: int, pad_id: int, device: torch.device,
                    amp: str = "none", token_level: bool = False) -> CachedFeatures:
    """Run the encoder (eval mode, no grad) over ``split`` once; see the module docstring."""
    n = len(split)
    if n == 0:
        raise ValueError(f"{split.task}: an empty split has no features")
    was_training = model.training
    model.eval()
    pooled = None
    rows_tokens = [[None] * n for _ in split.parts] if token_level else []
    for batch in eval_batches(split, batch_size, pad_id):
        with autocast(amp, device):
            out = model.features(batch.to(device))
        if pooled is None:
            pooled = torch.zeros(n, out.pooled.shape[-1])
        pooled[batch.index] = out.pooled.float().cpu()
        for part, (hidden, mask) in enumerate(zip(out.tokens, out.masks) if token_level else ()):
            hidden, lengths = _round_tokens(hidden.float()).cpu(), mask.sum(1).tolist()
            for r, i in enumerate(batch.index):
                rows_tokens[part][i] = hidden[r, :lengths[r]]
    model.train(was_training)
    tokens = [torch.cat(rows) for rows in rows_tokens]
    offsets = [torch.tensor(np.cumsum([0] + [len(r) for r in rows]), dtype=torch.long) for rows in rows_tokens]
    return CachedFeatures(pooled, tokens, offsets)


def encoder_fingerprint(model) -> str:
    """A hash of every weight and buffer the features depend on (all but the heads)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name.startswith("heads."):
            continue
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def cache_key(fingerprint: str, model, split: EncodedSplit, amp: str, token_level: bool) -> str:
    """A hash of what the features depend on: the encoder (its class and every weight, so a
    backbone, a seed or a checkpoint gets its own files), the pooling, the task (PAL routing),
    the ids and token ids (which fix the tokenizer, max length and pair mode), amp and the
    file format."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT, type(model.encoder).__name__, fingerprint, model.pool.__name__, split.task,
                         len(split.parts), amp, token_level, str(TOKEN_DTYPE)]).encode())
    h.update("\x1f".join(split.ids).encode())
    for ids, types in split.parts:
        for seqs in (ids, types):
            h.update(np.array([len(s) for s in seqs], dtype=np.int64).tobytes())
            h.update(np.array([t for s in seqs for t in s], dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def save_features(path: str | Path, features: CachedFeatures, metadata: dict[str, str]) -> None:
    tensors = {"pooled": features.pooled.contiguous()}
    for part, (flat, offsets) in enumerate(zip(features.tokens, features.offsets)):
        tensors[f"tokens.{part}"], tensors[f"offsets.{part}"] = flat.contiguous(), offsets.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": CACHE_FORMAT, **metadata})


def load_features(path: str | Path) -> CachedFeatures:
    tensors = load_file(str(path))
    parts = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("tokens."))
    return CachedFeatures(tensors["pooled"], [tensors[f"tokens.{p}"] for p in parts],
                          [tensors[f"offsets.{p}"] for p in parts])


def _load_cached(path: Path, rows: int) -> CachedFeatures | None:
    """The cached features, or None (with a warning) when the file is not a readable cache of
    ``rows`` rows: the features are then computed again and the file rewritten."""
    try:
        features = load_features(path)
        problem = None if len(features) == rows else f"it holds {len(features)} rows, not {rows}"
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
        problem = " ".join(str(err).split()) or type(err).__name__
    if problem is None:
        return features
    warnings.warn(f"{path}: unreadable feature cache ({problem}); rebuilding it")
    return None


def load_or_encode(model, split: EncodedSplit, batch_size: int, pad_id: int, device: torch.device,
                   amp: str = "none", token_level: bool = False, cache_dir: str | Path | None = None,
                   fingerprint: str | None = None) -> CachedFeatures:
    """:func:`encode_features`, read from ``cache_dir`` when a file with the same key exists
    (written atomically otherwise). ``fingerprint``: :func:`encoder_fingerprint`, if known."""
    if cache_dir is None:
        return encode_features(model, split, batch_size, pad_id, device, amp, token_level)
    key = cache_key(fingerprint or encoder_fingerprint(model), model, split, amp, token_level)
    path = Path(cache_dir) / f"{split.task}-{key}.safetensors"
    if path.exists():
        cached = _load_cached(path, len(split))
        if cached is not None:
            return cached
    features = encode_features(model, split, batch_size, pad_id, device, amp, token_level)
    save_features(path, features, {"task": split.task, "rows": str(len(split)), "amp": amp,
                                   "token_level": str(token_level)})
    return features


def _labels(split: EncodedSplit, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    dtype = torch.long if TASKS[split.task].integer_labels else torch.float32
    return torch.tensor(split.labels[rows].astype(float)).to(dtype).to(device)


def _head_output(head: nn.Module, features: Features) -> torch.Tensor:
    out = head(features)
    return out.squeeze(-1) if out.shape[-1] == 1 else out  # as MultitaskModel.forward


@torch.no_grad()
def predict_features(head: nn.Module, source, split: EncodedSplit, batch_size: int, device: torch.device,
                     amp: str) -> np.ndarray:
    """The head's predictions (``TASKS[task].predict``) for every row of ``split``, in row
    order, from ``source`` (cached features or the encoder); the head is left in eval mode."""
    head.eval()
    predictions = np.zeros(len(split))
    order = np.argsort(split.lengths(), kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        with autocast(amp, device):
            predictions[rows] = TASKS[split.task].predict(_head_output(head, source.batch(rows, device)))
    return predictions


class HeadTrainer:
    """One task's head, trained epoch by epoch on fixed features, scored on the validation split.

    Everything random about it (batch order, dropout) is its own: a generator and a torch
    RNG state seeded from ``(seed, task)``, carried from one epoch to the next, so the
    trajectory is the same whether the head trains alone or beside others.
    """

    def __init__(self, head: nn.Module, train: EncodedSplit, validation: EncodedSplit, sources, batch_size: int,
                 how: "HeadPretraining"):
        self.head, self.train, self.validation = head, train, validation
        self.train_source, self.validation_source = sources
        self.batch_size, self.bucketing, self.eval_batch_size = batch_size, how.bucketing, how.eval_batch_size
        self.device, self.amp = torch.device(how.device), how.amp
        self.optimizer = torch.optim.AdamW(head.parameters(), lr=how.lr, weight_decay=how.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=how.amp == "fp16")
        self.generator = seeds.generator(seeds.task_seed(how.seed, train.task))
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(seeds.task_seed(how.seed, train.task))
            self.rng = self._get_rng()
        self.epochs = 0
        self.snapshots: dict[int, dict] = {0: copy.deepcopy(head.state_dict())}

    def _rng_devices(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    def _get_rng(self) -> list[torch.Tensor]:
        return [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in self._rng_devices()]

    def epoch(self) -> dict:
        """One shuffled pass over the training features, then the validation metric."""
        self.head.train()
        total, seen = 0.0, 0
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.set_rng_state(self.rng[0])
            for d, state in zip(self._rng_devices(), self.rng[1:]):
                torch.cuda.set_rng_state(state, d)
            for rows in epoch_batches(self.train.lengths(), self.batch_size, self.generator, self.bucketing):
                with autocast(self.amp, self.device):
                    output = _head_output(self.head, self.train_source.batch(rows, self.device))
                    loss = TASKS[self.train.task].loss(output, _labels(self.train, rows, self.device))
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                total, seen = total + float(loss.detach()) * len(rows), seen + len(rows)
            self.rng = self._get_rng()
        self.epochs += 1
        self.snapshots[self.epochs] = copy.deepcopy(self.head.state_dict())
        return {"epoch": self.epochs, "loss": total / max(seen, 1), metric_key(self.train.task): self.validation_score()}

    def validation_score(self) -> float:
        """The task's metric of the head as it is now, on the validation split."""
        predictions = predict_features(self.head, self.validation_source, self.validation, self.eval_batch_size,
                                       self.device, self.amp)
        return TASKS[self.train.task].score(predictions, self.validation.labels)

    def keep(self, epoch: int) -> None:
        """Load the head's weights as they were after ``epoch`` (0: before any training)."""
        self.head.load_state_dict(self.snapshots[epoch])


def _best_epoch(scores: list[float]) -> int:
    """1-based epoch of the best score (the first of equal ones); 0 when there is none."""
    return int(np.argmax(scores)) + 1 if scores else 0


def _stalled(scores: list[float], patience: int | None) -> bool:
    return patience is not None and len(scores) - _best_epoch(scores) >= patience


def _mean_curve(scores: dict[str, list[float]]) -> list[float]:
    return list(np.mean(list(scores.values()), axis=0))


@dataclass(frozen=True)
class Selection:
    stopped: Callable[[dict[str, list[float]], set[str], int | None], set[str]]  # heads that stop training now
    kept: Callable[[dict[str, list[float]], str], int]                         # the epoch a head is kept at


SELECTIONS = {
    "individual": Selection(lambda scores, active, patience: {t for t in active if _stalled(scores[t], patience)},
                            lambda scores, task: _best_epoch(scores[task])),
    "joint": Selection(lambda scores, active, patience: set(active) if _stalled(_mean_curve(scores), patience) else set(),
                       lambda scores, task: _best_epoch(_mean_curve(scores))),
}


def train_heads(trainers: dict[str, HeadTrainer], epochs: int, patience: int | None, selection: str,
                progress: bool = False) -> dict[str, list[dict]]:
    """Train every head epoch by epoch, until ``patience`` epochs bring no better validation
    metric, and keep each at the epoch ``selection`` picks (module docstring)."""
    rule = SELECTIONS[selection]
    history: dict[str, list[dict]] = {task: [] for task in trainers}
    active = set(trainers)
    for _ in tqdm(range(epochs), desc="pretrain heads", disable=not progress):
        for task in [t for t in trainers if t in active]:
            history[task].append(trainers[task].epoch())
        active -= rule.stopped(_scores(history), active, patience)
        if not active:
            break
    scores = _scores(history)
    for task, trainer in trainers.items():
        kept = rule.kept(scores, task)
        trainer.keep(kept)
        for row in history[task]:
            row["kept"] = row["epoch"] == kept
    return history


def kept_scores(history: dict[str, list[dict]]) -> tuple[dict[str, float], dict[str, int]]:
    """``{'<task>/<metric>': validation metric}`` of each head at the epoch it was kept, and those epochs."""
    kept = {task: next(row for row in rows if row["kept"]) for task, rows in history.items()}
    return {metric_key(t): row[metric_key(t)] for t, row in kept.items()}, {t: row["epoch"] for t, row in kept.items()}


def _scores(history: dict[str, list[dict]]) -> dict[str, list[float]]:
    return {task: [row[metric_key(task)] for row in rows] for task, rows in history.items()}


SAMPLE_SEED = 0  # the rows heads pretrain on when a split is capped: the same for every training seed


def pretraining_sample(split: EncodedSplit, max_examples: int | None) -> EncodedSplit:
    """``split``, or a fixed sample of ``max_examples`` of its rows (in their order)."""
    if max_examples is None or len(split) <= max_examples:
        return split
    rng = np.random.default_rng(seeds.task_seed(SAMPLE_SEED, split.task))
    return split.take(np.sort(rng.choice(len(split), max_examples, replace=False)))


def feature_sources(model, splits: list[EncodedSplit], token_level: bool, eval_batch_size: int, pad_id: int,
                    device: torch.device, amp: str, cache: bool = True, cache_dir=None, fingerprint=None) -> list:
    """Cached features (or, ``cache=False``, the encoder run on every batch) for ``splits``."""
    if cache:
        return [load_or_encode(model, s, eval_batch_size, pad_id, device, amp, token_level, cache_dir, fingerprint)
                for s in splits]
    return [EncoderFeatures(model, s, pad_id, device, amp, token_level) for s in splits]


@dataclass(frozen=True)
class HeadPretraining(PretrainSettings):
    """How the heads pretrain: the checked ``train.pretrain_args`` (:class:`PretrainSettings`),
    then what the run sets (:meth:`for_run`). ``max_examples`` are a fixed sample
    (:data:`SAMPLE_SEED`), so every seed reads the same cached features."""

    cache: bool = True
    seed: int = 0
    batch_size: int | dict = 32  # or {task: int}
    eval_batch_size: int = 128
    bucketing: bool = True
    device: torch.device = torch.device("cpu")
    amp: str = "none"
    pad_id: int = 0
    cache_dir: Path | None = None
    progress: bool = False

    @classmethod
    def for_run(cls, cfg: Config, device: torch.device, amp: str, pad_id: int, selection: str,
                progress: bool = False) -> "HeadPretraining":
        """The settings of ``cfg``'s heads: its pretrain_args, seed, batch sizes and caches."""
        t = cfg.train
        knobs = {**asdict(cfg.methods.pretrain), "selection": selection}
        return cls(**knobs, seed=t.seed, batch_size={task: t.batch_size[task] for task in t.tasks},
                   eval_batch_size=t.eval_batch_size, bucketing=cfg.data.bucketing, device=device, amp=amp,
                   pad_id=pad_id, cache_dir=Path(cfg.data.cache_dir) / "features", progress=progress)


def pretrain_heads(model, train: dict[str, EncodedSplit], validation: dict[str, EncodedSplit],
                   how: HeadPretraining = HeadPretraining()) -> dict[str, list[dict]]:
    """Train the heads of ``train``'s tasks with the encoder frozen (module docstring), as
    ``how`` says. The encoder and the global RNG states are left as they were.

    Returns ``{task: [{'epoch', 'loss', '<task>/<metric>', 'kept', 'seconds'}, ...]}``;
    ``seconds`` of the first row includes encoding (or loading) the features.
    """
    device = torch.device(how.device)
    was_training = model.training
    model.eval()  # encoder (and PALs) without dropout; each head switches itself to train mode
    fingerprint = encoder_fingerprint(model) if how.cache and how.cache_dir is not None else None
    trainers, started = {}, time.perf_counter()
    for task, split in train.items():
        head = model.heads[task]
        split = pretraining_sample(split, how.max_examples)
        sources = feature_sources(model, [split, validation[task]], needs_tokens(head), how.eval_batch_size,
                                  how.pad_id, device, how.amp, how.cache, how.cache_dir, fingerprint)
        size = how.batch_size if isinstance(how.batch_size, int) else how.batch_size[task]
        trainers[task] = HeadTrainer(head, split, validation[task], sources, size, how)
    setup = time.perf_counter() - started
    # A head's batches are far too small for a second thread, which only waits for hand-offs:
    # on a busy 2-core EPYC an AdvancedModel run with 2 threads spent 342 s pretraining its
    # heads against 195 s of training (benchmarks/bench_overhead.py). Heads train on one.
    with torch_threads(1):
        history = train_heads(trainers, how.epochs, how.patience, how.selection, how.progress)
    for rows in history.values():
        for row in rows:
            row["seconds"] = setup if row["epoch"] == 1 else 0.0
    model.train(was_training)
    return history


def evaluate_heads(model, splits: dict[str, EncodedSplit], batch_size: int, pad_id: int, device: torch.device,
                   amp: str = "none", cache_dir: str | Path | None = None) -> tuple[dict[str, float], dict]:
    """Score the heads of a frozen-encoder model on ``splits`` from cached features: the same
    predictions as the model in eval mode, without running the encoder again where the
    features are cached. Returns (metrics of the labelled splits, {task: predictions})."""
    was_training = model.training
    model.eval()
    fingerprint = encoder_fingerprint(model) if cache_dir is not None else None
    predictions = {}
    for task, split in splits.items():
        head = model.heads[task]
        [source] = feature_sources(model, [split], needs_tokens(head), batch_size, pad_id, device, amp,
                                   cache_dir=cache_dir, fingerprint=fingerprint)
        predictions[task] = predict_features(head, source, split, batch_size, device, amp)
    model.train(was_training)
    return score(splits, predictions), predictions
