"""Training one experiment: data -> model -> updates -> dev evaluation -> run folder.

A run folder holds ``config.yaml`` (the resolved config), ``history.csv`` (one row per
dev evaluation), ``metrics.json``, ``predictions/<task>-<split>.csv`` and
``checkpoints/best`` (weights of the best dev mean) — plus ``checkpoints/last`` (the
full training state, for ``resume``) until the run completes.
"""
from __future__ import annotations

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

from mtlib.backbone import load_tokenizer
from mtlib.checkpoint import checkpoint_exists, load_checkpoint, load_model_weights, save_checkpoint
from mtlib.config import TASK_NAMES, Config, TrainConfig, config_from_dict
from mtlib.data import file_name, find_data_dir, load_split
from mtlib.encode import BatchStream, EncodedSplit, encode_split
from mtlib.evaluate import autocast, evaluate, prediction_frame
from mtlib.io import write_csv, write_json, write_text
from mtlib.model import MultitaskModel, build_model, parameter_counts
from mtlib.samplers import TaskSampler

DEV_SAMPLE_SEED = 0  # the dev subsample is fixed: every run is scored on the same rows


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def learning_rate(update: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or linear decay to 0."""
    total = cfg.epochs * cfg.steps_per_epoch
    if update < cfg.warmup_steps:
        return cfg.lr * (update + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * max(0.0, (total - update) / max(1, total - cfg.warmup_steps))


def prepare_data(cfg: Config, tokenizer, data_dir=None, splits=("train", "dev")) -> dict[str, dict[str, EncodedSplit]]:
    """``{split: {task: EncodedSplit}}``: validated, subsampled as the profile says, tokenised."""
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
            out[split][task] = encode_split(tokenizer, frame, task, cfg.model.pair_mode, cfg.backbone.max_length,
                                            cfg.data.cache_dir, cfg.backbone.name)
    return out


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
    seed_everything(t.seed)

    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer, data_dir)
    pad_id = tokenizer.pad_token_id
    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    streams = {task: BatchStream(data["train"][task], t.batch_size[task], t.seed, pad_id, cfg.data.bucketing)
               for task in TASK_NAMES}
    sizes = {task: len(data["train"][task]) for task in TASK_NAMES}
    sampler = TaskSampler(t.sampler, sizes, t.epochs, t.seed)

    state = {"update": 0, "best_mean": -math.inf, "best_update": 0, "bad_evals": 0, "stopped_early": False,
             "examples": 0, "tokens": 0, "train_seconds": 0.0, "history": []}
    if resume and checkpoint_exists(last_ckpt):
        state, extra = load_checkpoint(last_ckpt, model, optimizer)
        sampler.load_state_dict(state["sampler"])
        for task, stream in streams.items():
            stream.load_state_dict(state["streams"][task])
        scaler.load_state_dict(state["scaler"])
        _restore_rng(extra, state)
    elif resume and (out_dir / "metrics.json").exists():
        raise FileExistsError(f"{out_dir}: the run is complete (metrics.json exists); nothing to resume")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")

    total = t.epochs * t.steps_per_epoch
    eval_every = t.eval_every or t.steps_per_epoch
    bar = tqdm(total=total, initial=state["update"], disable=not progress, desc=cfg.experiment, mininterval=5)
    model.train()
    while state["update"] < total and not state["stopped_early"]:
        started = time.perf_counter()
        epoch = state["update"] // t.steps_per_epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state["update"], t)
        for _ in range(t.accumulation):  # k DIFFERENT micro-batches: each draw advances a stream
            batch = streams[sampler.draw(epoch)].next().to(device)
            with autocast(t.amp, device):
                loss = model.loss(batch) / t.accumulation
            scaler.scale(loss).backward()
            state["examples"] += len(batch)
            state["tokens"] += batch.real_tokens()
        if t.max_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state["update"] += 1
        state["train_seconds"] += time.perf_counter() - started
        bar.update(1)
        if state["update"] % eval_every == 0 or state["update"] == total:
            _evaluate_and_checkpoint(cfg, model, optimizer, scaler, sampler, streams, data["dev"], pad_id, device,
                                     state, epoch, out_dir, last_ckpt, best_ckpt)
    bar.close()
    return finish_run(cfg, model, tokenizer, data, device, state, out_dir, data_dir)


def _evaluate_and_checkpoint(cfg, model, optimizer, scaler, sampler, streams, dev, pad_id, device, state, epoch,
                             out_dir, last_ckpt, best_ckpt) -> None:
    t = cfg.train
    metrics, _, timing = evaluate(model, dev, t.eval_batch_size, pad_id, device, t.amp)
    row = {"update": state["update"], "epoch": epoch, "examples": state["examples"],
           "train_seconds": round(state["train_seconds"], 3), **metrics}
    state["history"].append(row)
    if metrics["mean"] > state["best_mean"]:
        state.update(best_mean=metrics["mean"], best_update=state["update"], bad_evals=0)
        save_checkpoint(best_ckpt, model, state={"update": state["update"], "metrics": metrics})
    else:
        state["bad_evals"] += 1
        if t.patience is not None and state["bad_evals"] >= t.patience:
            state["stopped_early"] = True
    state.update(sampler=sampler.state_dict(), streams={k: s.state_dict() for k, s in streams.items()},
                 scaler=scaler.state_dict(), rng_numpy=_numpy_state(), rng_python=list(random.getstate()))
    save_checkpoint(last_ckpt, model, optimizer, state=state, tensors=_rng_tensors())
    write_csv(out_dir / "history.csv", pd.DataFrame(state["history"]))


def finish_run(cfg: Config, model: MultitaskModel, tokenizer, data, device, state, out_dir: Path, data_dir) -> dict:
    """Score the best checkpoint, write predictions and metrics.json, drop what is not kept."""
    t = cfg.train
    load_model_weights(out_dir / "checkpoints" / "best", model)
    splits = {"dev": data["dev"]}
    if t.predict_test:
        splits["test"] = prepare_data(cfg, tokenizer, data_dir, splits=("test-student",))["test-student"]
    metrics = {"dev": {}, "best_update": state["best_update"], "updates": state["update"],
               "stopped_early": state["stopped_early"]}
    for split, encoded in splits.items():
        scores, predictions, timing = evaluate(model, encoded, t.eval_batch_size, tokenizer.pad_token_id, device, t.amp)
        if scores:
            metrics[split] = scores
        metrics.setdefault("eval_examples_per_second", round(timing["examples_per_second"], 2))
        for task, values in predictions.items():
            write_csv(out_dir / "predictions" / f"{task}-{split}.csv", prediction_frame(encoded[task], values))
    seconds = max(state["train_seconds"], 1e-9)
    metrics.update(train_seconds=round(state["train_seconds"], 2),
                   train_examples_per_second=round(state["examples"] / seconds, 2),
                   train_tokens_per_second=round(state["tokens"] / seconds, 2),
                   params=parameter_counts(model),
                   backbone=cfg.backbone.name, profile=cfg.profile, experiment=cfg.experiment, seed=t.seed)
    write_json(out_dir / "metrics.json", metrics)
    shutil.rmtree(out_dir / "checkpoints" / "last", ignore_errors=True)
    if not t.keep_checkpoint:
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return metrics
