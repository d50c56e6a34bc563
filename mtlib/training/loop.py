"""Training one experiment: data -> model -> updates -> evaluation -> run folder.

:func:`train` reads top to bottom: check the backbone's limits, prepare the data, claim the run folder
(mtlib.training.runs.claim), then hand over to the run's method (``METHODS``): fine-tuning,
heads on the frozen encoder, or the random predictor.

Every run follows the report's protocol: the heads are first trained on the frozen encoder
(``train.pretrain_heads``: joint or individual; mtlib.training.pretrain), then fine-tuning
builds the :class:`~mtlib.training.stepper.Stepper` and alternates updates and evaluations on
the VALIDATION split held out of train (each checkpointed, so ``resume`` continues exactly);
the best validation score picks the checkpoint, and dev is scored once, at that checkpoint
(:func:`finish_run`).
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mtlib import seeds
from mtlib.config import Config, TrainConfig
from mtlib.data.encode import BatchStream, EncodedSplit
from mtlib.data.prepare import prepare_data
from mtlib.io import write_csv, write_json
from mtlib.model.backbone import check_max_length, load_tokenizer
from mtlib.model.multitask import MultitaskModel, add_task_pals, build_model, parameter_counts
from mtlib.tasks import TASK_NAMES, TASKS, metric_key
from mtlib.training.adjust import fit_adjustment, save_adjustment, sst_probabilities
from mtlib.training.checkpoint import checkpoint_exists, load_checkpoint, load_model_weights, save_checkpoint
from mtlib.training.evaluate import evaluate, prediction_frame, score
from mtlib.training.precision import amp_reason, grad_scaler, resolve_amp, resolve_device
from mtlib.training.pretrain import (encoder_fingerprint, evaluate_heads, feature_sources, needs_tokens,
                                     pretrain_heads, pretraining_sample)
from mtlib.training.provenance import describe_machine
from mtlib.training import runs
from mtlib.training.runs import RunFolder, RunState, write_history
from mtlib.training.samplers import TaskSampler
from mtlib.training.stepper import Stepper, adamw
from mtlib.training.updates import evaluation_interval, updates_per_epoch


@dataclass
class Run:
    """Everything one training run holds between its updates."""

    cfg: Config
    folder: RunFolder
    data: dict[str, dict[str, EncodedSplit]]  # {"train"/"dev": {task: split}}
    tokenizer: object
    device: torch.device
    amp: str                                   # the precision resolved for this machine (cfg.train.amp)
    model: MultitaskModel | None = None
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    sampler: TaskSampler | None = None
    streams: dict[str, BatchStream] | None = None
    stepper: Stepper | None = None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id


def learning_rate(update: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or linear decay to 0."""
    total = cfg.epochs * updates_per_epoch(cfg)
    if update < cfg.warmup_steps:
        return cfg.lr * (update + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * max(0.0, (total - update) / max(1, total - cfg.warmup_steps))


def selection_score(metrics: dict[str, float]) -> float:
    """What early stopping and the best checkpoint follow: the validation mean (of the trained tasks)."""
    return metrics["mean"] if "mean" in metrics else float(np.mean(list(metrics.values())))


def train(cfg: Config, out_dir: str | Path, data_dir=None, resume: bool = False,
          overwrite: bool = False, progress: bool = True) -> dict:
    """Train ``cfg`` into ``out_dir``; returns metrics.json's content.

    The config (its methods' settings, when it loaded), the backbone's limits (from its
    config file, so before any data), the device and the data are all checked before the
    run folder is touched; the folder is then held for the whole run (:func:`runs.claim`)."""
    method = METHODS[cfg.methods.method].run
    check_max_length(cfg.backbone)
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, amp=resolve_amp(t.amp, device)))  # as run
    print(f"{cfg.experiment} seed {t.seed}: {amp_reason(t.amp, cfg.train.amp, device)}", flush=True)
    t = cfg.train
    runs.check_folder(Path(out_dir), cfg, resume, overwrite)  # again under the lock; here it fails fast
    seeds.seed_everything(t.seed)
    tokenizer = load_tokenizer(cfg.backbone)
    counts: dict = {}
    data = prepare_data(cfg, tokenizer, data_dir, counts=counts)
    for split in ("validation", "dev"):
        data[split] = {task: data[split][task] for task in t.tasks}
        counts[split] = {task: len(encoded) for task, encoded in data[split].items()}
    with runs.claim(Path(out_dir), cfg, resume, overwrite) as folder:
        run = Run(cfg, folder, data, tokenizer, device, t.amp)
        return method(run, resume, data_dir, counts, progress)


def finetune(run: Run, resume: bool, data_dir, counts: dict, progress: bool) -> dict:
    """Build the model (heads pretrained first if asked), then update and evaluate until done."""
    cfg, t = run.cfg, run.cfg.train
    resuming = resume and checkpoint_exists(run.folder.last)
    _build(run, pretrain=cfg.methods.pretrain.selection is not None and not resuming, progress=progress)
    state = RunState()
    if resuming:
        state = _restore(run)
    elif resume and run.folder.metrics.exists():
        raise FileExistsError(f"{run.folder.path}: the run is complete (metrics.json exists); nothing to resume")
    per_epoch = updates_per_epoch(t)
    total, eval_every = t.epochs * per_epoch, evaluation_interval(t)
    bar = tqdm(total=total, initial=state.update, disable=not progress, desc=cfg.experiment, mininterval=5)
    run.model.train()
    while state.update < total and not state.stopped_early:
        started, epoch = time.perf_counter(), state.update // per_epoch + 1
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate(state.update, t)
        examples, tokens = run.stepper.step(state.update, epoch)
        state.examples, state.tokens, state.update = state.examples + examples, state.tokens + tokens, state.update + 1
        state.train_seconds += time.perf_counter() - started
        bar.update(1)
        if state.update % eval_every == 0 or state.update == total:
            _evaluate_and_checkpoint(run, state, epoch)
    bar.close()
    return finish_run(run, state, data_dir, counts)


def _build(run: Run, pretrain: bool, progress: bool) -> None:
    """The model (from ``init_from`` when set, PALs added, heads pretrained when asked), its
    optimiser, the batch streams, the sampler and the Stepper."""
    cfg, t = run.cfg, run.cfg.train
    model = build_model(cfg, with_pals=False)
    if t.init_from:
        load_model_weights(Path(t.init_from.format(seed=t.seed)) / "checkpoints" / "best", model)
    if cfg.methods.pals is not None:
        add_task_pals(model, cfg)
    run.model = model.to(run.device)
    if pretrain:
        _pretrain_heads(run, progress)
    run.optimizer = adamw(model, t)
    run.scaler = grad_scaler(run.amp, run.device)
    run.streams = {task: BatchStream(run.data["train"][task], t.batch_size[task], t.seed, run.pad_id,
                                     cfg.data.bucketing) for task in t.tasks}
    sizes = {task: len(run.data["train"][task]) for task in t.tasks}
    run.sampler = TaskSampler(t.sampler, sizes, t.epochs, t.seed)
    run.stepper = Stepper(cfg, model, run.optimizer, run.scaler, run.streams, run.sampler, sizes, run.device, run.amp)


def _features_dir(run: Run) -> Path:
    return Path(run.cfg.data.cache_dir) / "features"


def _pretrain_heads(run: Run, progress: bool) -> dict[str, list[dict]]:
    t = run.cfg.train
    history = pretrain_heads(run.model, {k: run.data["train"][k] for k in t.tasks}, run.data["validation"],
                             seed=t.seed, batch_size={k: t.batch_size[k] for k in t.tasks}, device=run.device,
                             amp=run.amp, pad_id=run.pad_id, eval_batch_size=t.eval_batch_size,
                             bucketing=run.cfg.data.bucketing, cache_dir=_features_dir(run), progress=progress,
                             selection=run.cfg.methods.pretrain.selection, **run.cfg.methods.pretrain.knobs())
    run.folder.path.mkdir(parents=True, exist_ok=True)
    write_csv(run.folder.path / "pretrain_history.csv",
              pd.concat([pd.DataFrame(rows).assign(task=task) for task, rows in history.items()]))
    return history


def _restore(run: Run) -> RunState:
    """The training state of the last checkpoint, loaded into the run's objects."""
    saved, tensors = load_checkpoint(run.folder.last, run.model, run.optimizer, config=runs.fingerprint(run.cfg))
    run.sampler.load_state_dict(saved["sampler"])
    for task, stream in run.streams.items():
        stream.load_state_dict(saved["streams"][task])
    run.scaler.load_state_dict(saved["scaler"])
    run.stepper.load_state(saved["stepper"], tensors)
    seeds.restore_rng(saved["rng"], tensors)
    return RunState.from_json(saved["run"])


def _evaluate_and_checkpoint(run: Run, state: RunState, epoch: int) -> None:
    """Score the validation split, keep the weights if they are the best so far, checkpoint."""
    t = run.cfg.train
    metrics, _, _ = evaluate(run.model, run.data["validation"], t.eval_batch_size, run.pad_id, run.device, run.amp)
    state.history.append({"update": state.update, "epoch": epoch, "examples": state.examples,
                          "train_seconds": round(state.train_seconds, 3), **metrics})
    if selection_score(metrics) > state.best_score:
        state.best_score, state.best_update, state.bad_evals = selection_score(metrics), state.update, 0
        save_checkpoint(run.folder.best, run.model, state={"update": state.update, "metrics": metrics},
                        config=runs.fingerprint(run.cfg))
    else:
        state.bad_evals += 1
        state.stopped_early = t.patience is not None and state.bad_evals >= t.patience
    stepper_state, stepper_tensors = run.stepper.state()
    rng_state, rng_tensors = seeds.rng_state()
    saved = {"run": state.to_json(), "sampler": run.sampler.state_dict(), "scaler": run.scaler.state_dict(),
             "streams": {k: s.state_dict() for k, s in run.streams.items()}, "stepper": stepper_state,
             "rng": rng_state}
    save_checkpoint(run.folder.last, run.model, run.optimizer, state=saved, tensors={**rng_tensors, **stepper_tensors},
                    config=runs.fingerprint(run.cfg))
    write_history(run.folder, state.history)


def random_predictor(run: Run, resume: bool, data_dir, counts: dict, progress: bool) -> dict:
    """The random predictor: uniformly drawn labels (a floor every method must clear)."""
    cfg = run.cfg
    rng = np.random.default_rng(cfg.train.seed)
    splits = {"dev": run.data["dev"]}
    if cfg.train.predict_test:
        splits["test"] = prepare_data(cfg, run.tokenizer, data_dir, splits=("test-student",))["test-student"]
    metrics = {"dev": {}}
    for split, encoded in splits.items():
        predictions = {task: TASKS[task].random_predictions(len(s), rng) for task, s in encoded.items()}
        scores = score({t: s for t, s in encoded.items() if s.labels is not None}, predictions)
        if scores:
            metrics[split] = scores
        for task, values in predictions.items():
            write_csv(run.folder.predictions(task, split), prediction_frame(encoded[task], values))
    metrics.update(best_update=0, updates=0, stopped_early=False, train_seconds=0.0, data=counts,
                   params={"total": 0, "trainable": 0, "shared": 0, "task_specific": {t: 0 for t in TASK_NAMES}},
                   **_identity(run))
    write_json(run.folder.metrics, metrics)
    return metrics


def _identity(run: Run) -> dict:
    cfg = run.cfg
    return {"backbone": cfg.backbone.name, "profile": cfg.profile, "experiment": cfg.experiment,
            "seed": cfg.train.seed, "machine": describe_machine(run.device)}


def finish_run(run: Run, state: RunState, data_dir, counts: dict) -> dict:
    """Score dev ONCE with the weights the validation split selected; write predictions and
    metrics.json; drop what is not kept."""
    cfg, t, folder = run.cfg, run.cfg.train, run.folder
    load_model_weights(folder.best, run.model)
    adjustments = {"sst": fit_sst_adjustment(run)} if t.sst_adjustment else None
    best = next(row for row in state.history if row["update"] == state.best_update)
    metrics = {"dev": {}, "validation": {k: v for k, v in best.items() if "/" in k or k == "mean"},
               "best_update": state.best_update, "updates": state.update, "stopped_early": state.stopped_early}
    _score_splits(run, data_dir, adjustments, metrics)
    seconds = max(state.train_seconds, 1e-9)
    metrics.update(train_seconds=round(state.train_seconds, 2),
                   train_examples_per_second=round(state.examples / seconds, 2),
                   train_tokens_per_second=round(state.tokens / seconds, 2),
                   params=parameter_counts(run.model), data=counts, precision=run.amp, **_identity(run))
    write_json(folder.metrics, metrics)
    shutil.rmtree(folder.last, ignore_errors=True)
    if not t.keep_checkpoint:
        shutil.rmtree(folder.path / "checkpoints", ignore_errors=True)
    return metrics


def _score_splits(run: Run, data_dir, adjustments: dict | None, metrics: dict) -> None:
    """Score dev (and test) once, write the predictions, put the scores into ``metrics``.
    With ``adjustments`` ({task: W}) only those tasks are predicted a second time, through
    W; the scores without it go to ``<split>_unadjusted``."""
    t = run.cfg.train
    for split, encoded in _scored_splits(run, data_dir).items():
        scores, predictions, timing = evaluate(run.model, encoded, t.eval_batch_size, run.pad_id, run.device, run.amp)
        if adjustments:
            adjusted = {task: encoded[task] for task in adjustments if task in encoded}
            predictions.update(evaluate(run.model, adjusted, t.eval_batch_size, run.pad_id, run.device, run.amp,
                                        adjustments)[1])
            if scores:
                metrics[f"{split}_unadjusted"] = scores
                scores = score({k: s for k, s in encoded.items() if s.labels is not None},
                               {k: predictions[k] for k, s in encoded.items() if s.labels is not None})
        if scores:
            metrics[split] = scores
        metrics.setdefault("eval_examples_per_second", round(timing["examples_per_second"], 2))
        _write_predictions(run, split, encoded, predictions)


def _scored_splits(run: Run, data_dir) -> dict[str, dict[str, EncodedSplit]]:
    """dev, and the test-student files when the profile predicts them."""
    splits = {"dev": run.data["dev"]}
    if run.cfg.train.predict_test:
        test = prepare_data(run.cfg, run.tokenizer, data_dir, splits=("test-student",))["test-student"]
        splits["test"] = {task: split for task, split in test.items() if task in run.cfg.train.tasks}
    return splits


def _write_predictions(run: Run, split: str, encoded: dict[str, EncodedSplit], predictions: dict) -> None:
    for task, values in predictions.items():
        write_csv(run.folder.predictions(task, split), prediction_frame(encoded[task], values))


def heads_only(run: Run, resume: bool, data_dir, counts: dict, progress: bool) -> dict:
    """Heads trained on the frozen encoder, no fine-tuning: the baseline every fine-tuned row
    must beat. Dev (and test) are scored from cached encoder features."""
    cfg, t = run.cfg, run.cfg.train
    run.model = build_model(cfg).to(run.device)
    history = _pretrain_heads(run, progress)
    kept = {task: next(row for row in rows if row["kept"]) for task, rows in history.items()}
    metrics = {"dev": {}, "validation": {metric_key(task): row[metric_key(task)] for task, row in kept.items()},
               "head_epochs": {task: row["epoch"] for task, row in kept.items()}}
    for split, encoded in _scored_splits(run, data_dir).items():
        scores, predictions = evaluate_heads(run.model, encoded, t.eval_batch_size, run.pad_id, run.device, run.amp,
                                             _features_dir(run))
        if scores:
            metrics[split] = scores
        _write_predictions(run, split, encoded, predictions)
    metrics.update(best_update=0, updates=0, stopped_early=False, train_seconds=0.0, data=counts,
                   params=parameter_counts(run.model), precision=run.amp, **_identity(run))
    write_json(run.folder.metrics, metrics)
    return metrics


def warm_caches(cfg: Config, data_dir=None, tasks=None) -> None:
    """Compute what every seed of ``cfg`` shares, so that runs side by side find it in the
    caches instead of each computing it: the tokenised and EDA-balanced data and, where the
    heads are pretrained on a pretrained encoder, its features for ``tasks`` (default: all
    of the run's; training rows capped as pretraining caps them). Runs with ``cfg``'s thread
    count, so the features are those a run would compute itself."""
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer, data_dir)
    splits, pretrain = METHODS[t.method].feature_splits, cfg.methods.pretrain
    if not splits or pretrain.selection is None or not cfg.backbone.pretrained or t.init_from:
        return
    device = resolve_device(t.device)
    model = build_model(cfg).to(device).eval()
    fingerprint = encoder_fingerprint(model)
    for task in tasks or t.tasks:
        encoded = [data[split][task] for split in splits]
        encoded[0] = pretraining_sample(encoded[0], pretrain.max_examples)
        feature_sources(model, encoded, needs_tokens(model.heads[task]),
                        t.eval_batch_size, tokenizer.pad_token_id, device, resolve_amp(t.amp, device),
                        cache_dir=Path(cfg.data.cache_dir) / "features", fingerprint=fingerprint)


def fit_sst_adjustment(run: Run) -> torch.Tensor:
    """The 5x5 SST adjustment matrix, fitted on the frozen model's training-set probabilities
    and saved beside the run (``sst_adjustment.safetensors``) for evaluate and predict."""
    train_sst, t = run.data["train"]["sst"], run.cfg.train
    probs = sst_probabilities(run.model, train_sst, t.eval_batch_size, run.pad_id, run.device, run.amp)
    matrix = fit_adjustment(probs, torch.tensor(np.asarray(train_sst.labels, dtype=np.int64)))
    save_adjustment(run.folder.adjustment, matrix, {"fitted_on": "sst train", "examples": len(train_sst)})
    return matrix


def posthoc(run: Run, resume: bool, data_dir, counts: dict, progress: bool) -> dict:
    """A trained run (``train.init_from``) scored again without training, through the SST
    adjustment matrix when ``train.sst_adjustment`` is on: what a post-hoc step adds, with
    the weights held fixed."""
    cfg, t = run.cfg, run.cfg.train
    run.model = build_model(cfg).to(run.device)
    load_model_weights(Path(t.init_from.format(seed=t.seed)) / "checkpoints" / "best", run.model)
    adjustments = {"sst": fit_sst_adjustment(run)} if t.sst_adjustment else None
    metrics = {"dev": {}}
    _score_splits(run, data_dir, adjustments, metrics)
    metrics.update(best_update=0, updates=0, stopped_early=False, train_seconds=0.0, data=counts,
                   params=parameter_counts(run.model), precision=run.amp, **_identity(run))
    write_json(run.folder.metrics, metrics)
    return metrics


@dataclass(frozen=True)
class Method:
    run: Callable[..., dict]          # (run, resume, data_dir, counts, progress) -> metrics.json's content
    feature_splits: tuple[str, ...]   # splits it reads frozen-encoder features of, when heads are pretrained


METHODS = {  # train.method; names and constraints: mtlib.settings.METHODS
    "finetune": Method(finetune, ("train", "validation")),
    "heads": Method(heads_only, ("train", "validation", "dev")),
    "posthoc": Method(posthoc, ()),
    "random": Method(random_predictor, ()),
}
