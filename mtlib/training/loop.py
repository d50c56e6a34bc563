"""Training one experiment: data -> model -> updates -> dev evaluation -> run folder.

A run folder holds ``config.yaml`` (the resolved config), ``history.csv`` (one row per
dev evaluation), ``metrics.json``, ``predictions/<task>-<split>.csv`` and
``checkpoints/best`` (weights of the best dev mean) — plus ``checkpoints/last`` (the
full training state, for ``resume``) until the run completes.
"""
from __future__ import annotations

import hashlib
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from mtlib.training.adjust import fit_adjustment, save_adjustment, sst_probabilities
from mtlib.data.augment import balance_classes, length_filter, write_augmented
from mtlib.model.backbone import load_tokenizer
from mtlib.training.checkpoint import checkpoint_exists, load_checkpoint, load_model_weights, save_checkpoint
from mtlib.config import TASK_NAMES, Config, TrainConfig, config_from_dict
from mtlib.data.files import file_name, find_data_dir, load_split, read_task_file
from mtlib.data.encode import BatchStream, EncodedSplit, encode_split
from mtlib.training.evaluate import autocast, evaluate, prediction_frame, score
from mtlib.training.combiners import get_combiner, param_segments, point_grads
from mtlib.io import write_csv, write_json, write_text
from mtlib.model.multitask import MultitaskModel, add_task_pals, build_model, parameter_counts
from mtlib.training.pretrain import pretrain_heads
from mtlib.training.samplers import TaskSampler
from mtlib.training.smart import Smart
from mtlib.tasks import TASKS
from mtlib.training.updates import UPDATES, PlanContext, updates_per_epoch

DEV_SAMPLE_SEED = 0  # the dev subsample is fixed: every run is scored on the same rows
AUGMENTED_TASKS = ("sst", "para")
ADJUSTMENT_FILE = "sst_adjustment.safetensors"  # the classification tasks whose classes EDA balances


def resolve_device(name: str) -> torch.device:
    """'auto' (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.device={name} but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"train.device={name} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def learning_rate(update: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or linear decay to 0."""
    total = cfg.epochs * updates_per_epoch(cfg)
    if update < cfg.warmup_steps:
        return cfg.lr * (update + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * max(0.0, (total - update) / max(1, total - cfg.warmup_steps))


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
                frame, encoded = _prepare_training(cfg, tokenizer, frame, encoded, task, counts)
            out[split][task] = encoded
    return out


def _encode(cfg: Config, tokenizer, frame, task: str) -> EncodedSplit:
    return encode_split(tokenizer, frame, task, cfg.model.pair_mode, cfg.backbone.max_length,
                        cfg.data.cache_dir, cfg.backbone.name)


def _prepare_training(cfg: Config, tokenizer, frame, encoded: EncodedSplit, task: str, counts: dict | None):
    """Drop the longest inputs, then EDA-balance SST and Quora (cached in data/processed)."""
    d = cfg.data
    counts = {} if counts is None else counts
    counts.setdefault("loaded", {})[task] = len(frame)
    if d.length_filter > 0:
        frame, _ = length_filter(frame, encoded.lengths(), d.length_filter)
        frame = frame.reset_index(drop=True)
        encoded = _encode(cfg, tokenizer, frame, task)
        counts.setdefault("length_filtered", {})[task] = len(frame)
    if d.augment and task in AUGMENTED_TASKS:
        spec = TASKS[task]
        key = hashlib.sha256("\x1f".join(frame["id"]).encode() + f"{task}/{cfg.train.seed}".encode()).hexdigest()[:16]
        path = Path(d.processed_dir) / f"{task}-train-augmented-{key}.csv"
        if not path.exists():
            augmented, classes = balance_classes(frame, list(spec.text_columns), spec.label_column, seed=cfg.train.seed)
            write_csv(path.with_name(path.stem + "-counts.csv"), classes.reset_index())
            write_augmented(augmented, path)
        frame = read_task_file(path, task)
        encoded = _encode(cfg, tokenizer, frame, task)
        counts.setdefault("augmented", {})[task] = len(frame)
    return frame, encoded


def save_config(cfg: Config, path: Path) -> None:
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
    return config_from_dict(yaml.safe_load(path.read_text()), where=str(path))


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors


def _restore_rng(tensors: dict, state: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(tuple(state["rng_numpy"]))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["rng_python"]))


def _numpy_state() -> list:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), pos, has_gauss, cached]


class Stepper:
    """One optimiser update: draw the plan's batches, backpropagate each weighted loss
    (plus SMART's terms when on), combine per-task gradients of the SHARED parameters when
    the combiner is not a plain sum, and step (through the GradScaler under fp16).

    Per-task gradients are collected batch by batch into a (tasks x params) matrix: before
    each backward the shared parameters' ``.grad`` are pointed at their task's row, so
    autograd accumulates there directly; the combined gradient goes into one more (params,)
    buffer, which the ``.grad`` then view. Both buffers live for the whole run: tasks + 1
    gradient copies, no per-batch copies, and no autograd graph outlives its batch.
    Heads and PALs are task-specific: they keep their own task's gradient untouched.
    """

    def __init__(self, cfg: Config, model: MultitaskModel, optimizer, scaler, streams, sampler, sizes, device):
        t = cfg.train
        self.cfg, self.model, self.optimizer, self.scaler = cfg, model, optimizer, scaler
        self.streams, self.sampler, self.sizes, self.device = streams, sampler, sizes, device
        self.plan = UPDATES[t.update]
        self.combiner = get_combiner(t.combiner, **t.combiner_args)
        named = [(n, p) for n, p in model.encoder.named_parameters() if p.requires_grad]
        self.shared = [p for _, p in named]
        self.segments = param_segments(named, t.granularity)
        self.task_index = {task: i for i, task in enumerate(t.tasks)}
        self.combiner_state = self.combiner.init_state(len(t.tasks), len(self.segments))
        total = t.epochs * updates_per_epoch(t)
        self.smart = Smart(model, **{"total_steps": total, **t.smart_args}) if t.smart else None
        self.batch_counts: dict[str, int] = {}
        self.counts_epoch = 0
        self.grads: torch.Tensor | None = None     # (tasks, params), surgery only
        self.combined: torch.Tensor | None = None  # (params,)

    def loss(self, batch) -> torch.Tensor:
        output = self.model(batch)
        loss = TASKS[batch.task].loss(output, batch.labels)
        if self.smart is not None:
            loss = self.smart.regularised_loss(self.model, batch, output, loss)
        return loss

    def step(self, update: int, epoch: int) -> tuple[int, int]:
        """Run update number ``update``; returns (examples, real tokens) consumed."""
        t = self.cfg.train
        if epoch != self.counts_epoch:
            self.batch_counts, self.counts_epoch = {}, epoch
        generator = torch.Generator().manual_seed(t.seed * 1_000_003 + update)
        ctx = PlanContext(self.sampler, epoch, t.epochs, self.sizes, t.accumulation, t.group_size, generator,
                          self.batch_counts)
        surgery = t.combiner != "sum"
        if surgery:  # one (tasks x params) buffer for the whole run
            if self.grads is None:
                size = sum(p.numel() for p in self.shared)
                self.grads = torch.zeros(len(t.tasks), size, device=self.device)
                self.combined = torch.zeros(size, device=self.device)
            self.grads.zero_()
        examples = tokens = 0
        for task, weight in self.plan(ctx):
            batch = self.streams[task].next()
            examples, tokens = examples + len(batch), tokens + batch.real_tokens()  # on the CPU: no device sync
            batch = batch.to(self.device)
            if surgery:  # this backward accumulates into the task's row
                point_grads(self.shared, self.grads[self.task_index[task]])
            with autocast(t.amp, self.device):
                loss = self.loss(batch) * weight
            self.scaler.scale(loss).backward()
        if surgery:  # combine UNSCALED gradients; re-scale so the scaler's inf/nan check still applies
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            if scale != 1.0:
                self.grads.mul_(1.0 / scale)
            combined, self.combiner_state = self.combiner.combine(self.grads, self.combiner_state, generator,
                                                                  self.segments, out=self.combined)
            point_grads(self.shared, combined.mul_(scale) if scale != 1.0 else combined)
        if t.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.smart is not None:
            self.smart.update_ema(self.model)
        return examples, tokens

    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """JSON-able state and tensors, for the checkpoint."""
        tensors = {f"combiner.{k}": v for k, v in self.combiner_state.items()}
        if self.smart is not None:
            tensors.update({f"smart.{k}": v for k, v in self.smart.state_dict().items()})
        return {"batch_counts": self.batch_counts, "counts_epoch": self.counts_epoch}, tensors

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.batch_counts, self.counts_epoch = dict(state["batch_counts"]), int(state["counts_epoch"])
        self.combiner_state = {k[len("combiner."):]: v.to(self.device) for k, v in tensors.items() if k.startswith("combiner.")}
        if self.smart is not None:
            self.smart.load_state_dict({k[len("smart."):]: v for k, v in tensors.items() if k.startswith("smart.")})


def train(cfg: Config, out_dir: str | Path, data_dir=None, resume: bool = False,
          overwrite: bool = False, progress: bool = True) -> dict:
    """Train ``cfg`` into ``out_dir``; returns metrics.json's content."""
    out_dir = Path(out_dir)
    last_ckpt, best_ckpt = out_dir / "checkpoints" / "last", out_dir / "checkpoints" / "best"
    if out_dir.exists() and any(out_dir.iterdir()) and not (resume or overwrite):
        raise FileExistsError(f"{out_dir}: run folder is not empty; pass resume=True (--resume) or overwrite=True (--overwrite)")
    if overwrite and not resume and out_dir.exists():
        shutil.rmtree(out_dir)
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)
    autocast(t.amp, device)  # fails early on fp16 without CUDA
    seed_everything(t.seed)

    tokenizer = load_tokenizer(cfg.backbone)
    data_counts: dict = {}
    data = prepare_data(cfg, tokenizer, data_dir, counts=data_counts)
    data["dev"] = {task: data["dev"][task] for task in t.tasks}
    data_counts["dev"] = {task: len(split) for task, split in data["dev"].items()}
    if t.method == "random":
        return random_run(cfg, tokenizer, data, out_dir, data_dir, data_counts)
    pad_id = tokenizer.pad_token_id
    model = build_model(cfg, with_pals=False)
    if t.init_from:
        load_model_weights(Path(t.init_from.format(seed=t.seed)) / "checkpoints" / "best", model)
    if cfg.model.pals != "none":
        add_task_pals(model, cfg)
    model.to(device)
    resuming = resume and checkpoint_exists(last_ckpt)
    if t.pretrain_heads and not resuming:
        history = pretrain_heads(model, {k: data["train"][k] for k in t.tasks}, data["dev"], seed=t.seed,
                                 batch_size={k: t.batch_size[k] for k in t.tasks}, device=device, amp=t.amp,
                                 pad_id=pad_id, eval_batch_size=t.eval_batch_size, bucketing=cfg.data.bucketing,
                                 cache_dir=Path(cfg.data.cache_dir) / "features", progress=progress, **t.pretrain_args)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_csv(out_dir / "pretrain_history.csv",
                  pd.concat([pd.DataFrame(rows).assign(task=task) for task, rows in history.items()]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    streams = {task: BatchStream(data["train"][task], t.batch_size[task], t.seed, pad_id, cfg.data.bucketing)
               for task in t.tasks}
    sizes = {task: len(data["train"][task]) for task in t.tasks}
    sampler = TaskSampler(t.sampler, sizes, t.epochs, t.seed)
    stepper = Stepper(cfg, model, optimizer, scaler, streams, sampler, sizes, device)

    state = {"update": 0, "best_score": -math.inf, "best_update": 0, "bad_evals": 0, "stopped_early": False,
             "examples": 0, "tokens": 0, "train_seconds": 0.0, "history": []}
    if resuming:
        state, extra = load_checkpoint(last_ckpt, model, optimizer)
        sampler.load_state_dict(state["sampler"])
        for task, stream in streams.items():
            stream.load_state_dict(state["streams"][task])
        scaler.load_state_dict(state["scaler"])
        stepper.load_state(state["stepper"], extra)
        _restore_rng(extra, state)
    elif resume and (out_dir / "metrics.json").exists():
        raise FileExistsError(f"{out_dir}: the run is complete (metrics.json exists); nothing to resume")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")

    per_epoch = updates_per_epoch(t)
    total = t.epochs * per_epoch
    eval_every = t.eval_every or per_epoch
    bar = tqdm(total=total, initial=state["update"], disable=not progress, desc=cfg.experiment, mininterval=5)
    best_dev = None  # (metrics, predictions, timing) of the best evaluation, reused by finish_run
    if t.init_from and not resuming:  # the starting point competes for "best": PALs must earn their place
        best_dev = _evaluate_and_checkpoint(cfg, model, optimizer, scaler, sampler, streams, stepper, data["dev"], pad_id,
                                 device, state, 0, out_dir, last_ckpt, best_ckpt)
    model.train()
    while state["update"] < total and not state["stopped_early"]:
        started = time.perf_counter()
        epoch = state["update"] // per_epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state["update"], t)
        examples, tokens = stepper.step(state["update"], epoch)
        state["examples"] += examples
        state["tokens"] += tokens
        state["update"] += 1
        state["train_seconds"] += time.perf_counter() - started
        bar.update(1)
        if state["update"] % eval_every == 0 or state["update"] == total:
            best_dev = _evaluate_and_checkpoint(cfg, model, optimizer, scaler, sampler, streams, stepper, data["dev"],
                                                pad_id, device, state, epoch, out_dir, last_ckpt, best_ckpt) or best_dev
    bar.close()
    return finish_run(cfg, model, tokenizer, data, device, state, out_dir, data_dir, data_counts, best_dev)


def selection_score(metrics: dict[str, float]) -> float:
    """What early stopping and the best checkpoint follow: the dev mean (of the trained tasks)."""
    return metrics["mean"] if "mean" in metrics else float(np.mean(list(metrics.values())))


def _evaluate_and_checkpoint(cfg, model, optimizer, scaler, sampler, streams, stepper, dev, pad_id, device, state,
                             epoch, out_dir, last_ckpt, best_ckpt):
    """Evaluate on dev, checkpoint; returns the evaluation if it is the best so far, else None."""
    t = cfg.train
    metrics, predictions, timing = evaluate(model, dev, t.eval_batch_size, pad_id, device, t.amp)
    improved = False
    row = {"update": state["update"], "epoch": epoch, "examples": state["examples"],
           "train_seconds": round(state["train_seconds"], 3), **metrics}
    state["history"].append(row)
    score = selection_score(metrics)
    if score > state["best_score"]:
        state.update(best_score=score, best_update=state["update"], bad_evals=0)
        improved = True
        save_checkpoint(best_ckpt, model, state={"update": state["update"], "metrics": metrics})
    else:
        state["bad_evals"] += 1
        if t.patience is not None and state["bad_evals"] >= t.patience:
            state["stopped_early"] = True
    stepper_state, stepper_tensors = stepper.state()
    state.update(sampler=sampler.state_dict(), streams={k: s.state_dict() for k, s in streams.items()},
                 scaler=scaler.state_dict(), stepper=stepper_state, rng_numpy=_numpy_state(),
                 rng_python=list(random.getstate()))
    save_checkpoint(last_ckpt, model, optimizer, state=state, tensors={**_rng_tensors(), **stepper_tensors})
    write_csv(out_dir / "history.csv", pd.DataFrame(state["history"]))
    return (metrics, predictions, timing) if improved else None


def random_run(cfg: Config, tokenizer, data, out_dir: Path, data_dir, data_counts: dict) -> dict:
    """The random predictor: uniformly drawn labels (a floor every method must clear)."""
    rng = np.random.default_rng(cfg.train.seed)
    splits = {"dev": data["dev"]}
    if cfg.train.predict_test:
        splits["test"] = prepare_data(cfg, tokenizer, data_dir, splits=("test-student",))["test-student"]
    metrics = {"dev": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    for split, encoded in splits.items():
        predictions = {task: TASKS[task].random_predictions(len(s), rng) for task, s in encoded.items()}
        scores = score({t: s for t, s in encoded.items() if s.labels is not None}, predictions)
        if scores:
            metrics[split] = scores
        for task, values in predictions.items():
            write_csv(out_dir / "predictions" / f"{task}-{split}.csv", prediction_frame(encoded[task], values))
    metrics.update(best_update=0, updates=0, stopped_early=False, train_seconds=0.0, data=data_counts,
                   params={"total": 0, "trainable": 0, "shared": 0, "task_specific": {t: 0 for t in TASK_NAMES}},
                   backbone=cfg.backbone.name, profile=cfg.profile, experiment=cfg.experiment, seed=cfg.train.seed)
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def finish_run(cfg: Config, model: MultitaskModel, tokenizer, data, device, state, out_dir: Path, data_dir,
               data_counts: dict, best_dev=None) -> dict:
    """Score the best checkpoint, write predictions and metrics.json, drop what is not kept.

    ``best_dev`` is the best evaluation made during training (None after a resume): the
    same weights' dev predictions, so they are not computed twice."""
    t = cfg.train
    load_model_weights(out_dir / "checkpoints" / "best", model)
    splits = {"dev": data["dev"]}
    if t.predict_test:
        test = prepare_data(cfg, tokenizer, data_dir, splits=("test-student",))["test-student"]
        splits["test"] = {task: split for task, split in test.items() if task in t.tasks}
    metrics = {"dev": {}, "best_update": state["best_update"], "updates": state["update"],
               "stopped_early": state["stopped_early"]}
    adjustment = None
    if t.sst_adjustment:
        adjustment = fit_sst_adjustment(model, data["train"]["sst"], tokenizer.pad_token_id, device, t, out_dir)
        metrics["dev_unadjusted"] = best_dev[0] if best_dev else evaluate(
            model, data["dev"], t.eval_batch_size, tokenizer.pad_token_id, device, t.amp)[0]
    for split, encoded in splits.items():
        if split == "dev" and best_dev is not None and adjustment is None:
            scores, predictions, timing = best_dev
        else:
            scores, predictions, timing = evaluate(model, encoded, t.eval_batch_size, tokenizer.pad_token_id, device,
                                                   t.amp, adjustment)
        if scores:
            metrics[split] = scores
        metrics.setdefault("eval_examples_per_second", round(timing["examples_per_second"], 2))
        for task, values in predictions.items():
            write_csv(out_dir / "predictions" / f"{task}-{split}.csv", prediction_frame(encoded[task], values))
    seconds = max(state["train_seconds"], 1e-9)
    metrics.update(train_seconds=round(state["train_seconds"], 2),
                   train_examples_per_second=round(state["examples"] / seconds, 2),
                   train_tokens_per_second=round(state["tokens"] / seconds, 2),
                   params=parameter_counts(model), data=data_counts,
                   backbone=cfg.backbone.name, profile=cfg.profile, experiment=cfg.experiment, seed=t.seed)
    write_json(out_dir / "metrics.json", metrics)
    shutil.rmtree(out_dir / "checkpoints" / "last", ignore_errors=True)
    if not t.keep_checkpoint:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return metrics


def fit_sst_adjustment(model, train_sst: EncodedSplit, pad_id: int, device, t: TrainConfig, out_dir: Path):
    """The 5x5 SST adjustment matrix, fitted on the frozen model's training-set probabilities
    and saved beside the run (``sst_adjustment.safetensors``) for evaluate and predict."""
    probs = sst_probabilities(model, train_sst, t.eval_batch_size, pad_id, device, t.amp)
    matrix = fit_adjustment(probs, torch.tensor(np.asarray(train_sst.labels, dtype=np.int64)))
    save_adjustment(out_dir / ADJUSTMENT_FILE, matrix, {"fitted_on": "sst train", "examples": len(train_sst)})
    return matrix
