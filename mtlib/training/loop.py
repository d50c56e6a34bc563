"""Training one experiment: data -> model -> updates -> evaluation -> run folder.

:func:`train` checks the config, prepares the data once (:func:`build_experiment`), claims
the run folder (mtlib.training.runs.claim), then hands over to the run's method (``METHODS``):
fine-tuning, heads on the frozen encoder, a trained run scored again, or the random
predictor; each writes one :class:`~mtlib.record.RunRecord` (metrics.json).

The report's protocol: the heads are first trained on the frozen encoder (``train.pretrain_heads``),
then fine-tuning (:func:`build_training`) alternates updates and evaluations on the VALIDATION
split held out of train (each checkpointed, so ``resume`` continues exactly); the best
validation score picks the checkpoint, and dev is scored once, at that checkpoint (:func:`finish_run`).
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
from mtlib.data.prepare import prepare_counted, prepare_data
from mtlib.io import write_csv
from mtlib.model.backbone import check_max_length, load_tokenizer
from mtlib.model.multitask import MultitaskModel, add_task_pals, build_model, parameter_counts
from mtlib.record import TRAINED_ORDER, RunRecord, installed_versions, score_that_counts
from mtlib.tasks import TASK_NAMES, TASKS
from mtlib.training.adjust import fit_adjustment, save_adjustment, sst_probabilities
from mtlib.training.checkpoint import checkpoint_exists, load_checkpoint, load_model_weights, save_checkpoint
from mtlib.training.evaluate import evaluate, prediction_frame, score
from mtlib.training.precision import amp_reason, describe_machine, grad_scaler, resolve_amp, resolve_device
from mtlib.training.pretrain import (HeadPretraining, encoder_fingerprint, evaluate_heads, feature_sources,
                                     kept_scores, needs_tokens, pretrain_heads, pretraining_sample)
from mtlib.training import runs
from mtlib.training.runs import RunFolder, RunState
from mtlib.training.samplers import TaskSampler
from mtlib.training.stepper import Stepper, adamw
from mtlib.training.plans import evaluation_interval, total_updates, updates_per_epoch


@dataclass(frozen=True)
class Experiment:
    """One run, assembled before its folder is touched: the config as run (``train.amp`` resolved
    for this machine) and the data, prepared ONCE: ``{"train"/"validation"/"dev" (and "test", when
    the profile predicts the test-student files): {task: split}}``, all but train cut to the trained tasks."""

    cfg: Config
    folder: RunFolder
    tokenizer: object
    device: torch.device
    data: dict[str, dict[str, EncodedSplit]]
    counts: dict[str, dict[str, int]]  # training rows after each preparation step; validation and dev rows
    updates: int = 0          # the optimiser updates fine-tuning makes (mtlib.training.plans.total_updates)
    start_examples: int = 0   # a continuation (train.init_from): examples its start had seen (runs.start_examples)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def eval_args(self) -> tuple:
        """How every split is scored: (eval batch size, pad id, device, precision)."""
        return self.cfg.train.eval_batch_size, self.pad_id, self.device, self.cfg.train.amp

    @property
    def scored(self) -> dict[str, dict[str, EncodedSplit]]:
        """The splits scored once at the end: dev, and test where predicted."""
        return {split: self.data[split] for split in ("dev", "test") if split in self.data}

    def write_predictions(self, split: str, encoded: dict[str, EncodedSplit], predictions: dict,
                          confidences: dict | None = None) -> None:
        for task, values in predictions.items():
            write_csv(self.folder.predictions(task, split),
                      prediction_frame(encoded[task], values, (confidences or {}).get(task)))


def learning_rate(update: int, cfg: TrainConfig, total: int | None = None) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or linear decay to 0 at update
    ``total`` (default: epochs x updates per epoch)."""
    total = cfg.epochs * updates_per_epoch(cfg) if total is None else total
    if update < cfg.warmup_steps:
        return cfg.lr * (update + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * max(0.0, (total - update) / max(1, total - cfg.warmup_steps))


def as_run(cfg: Config) -> tuple[Config, torch.device]:
    """``cfg`` checked (its methods, the backbone's limits, the device) with ``train.amp``
    resolved for this machine, as the run records it; and the device."""
    check_max_length(cfg.backbone)
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = resolve_device(t.device)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, amp=resolve_amp(t.amp, device)))
    print(f"{cfg.experiment} seed {t.seed}: {amp_reason(t.amp, cfg.train.amp, device)}", flush=True)
    return cfg, device


def build_experiment(cfg: Config, device: torch.device, out_dir: str | Path, data_dir=None) -> Experiment:
    """The run's tokenizer and data (``cfg`` as :func:`as_run` returns it), seeded first."""
    t = cfg.train
    seeds.seed_everything(t.seed)
    tokenizer = load_tokenizer(cfg.backbone)
    splits = ("train", "validation", "dev", "test-student") if t.predict_test else ("train", "validation", "dev")
    prepared, counts = prepare_counted(cfg, tokenizer, data_dir, splits)
    data = {"train": prepared["train"]}
    for split, name in (("validation", "validation"), ("dev", "dev"), ("test-student", "test")):
        if split in prepared:
            data[name] = {task: encoded for task, encoded in prepared[split].items() if task in t.tasks}
    counts.update({split: {task: len(encoded) for task, encoded in data[split].items()}
                   for split in ("validation", "dev")})
    sizes = {task: len(encoded) for task, encoded in data["train"].items()}
    return Experiment(cfg, RunFolder(Path(out_dir)), tokenizer, device, data, counts,
                      total_updates(t, sizes, cfg.methods.match))


def train(cfg: Config, out_dir: str | Path, data_dir=None, resume: bool = False,
          overwrite: bool = False, progress: bool = True) -> dict:
    """Train ``cfg`` into ``out_dir``; returns metrics.json's content. The config, the backbone's limits
    (from its config file), the device and the data are all checked before the run folder is touched."""
    method = METHODS[cfg.methods.method]
    cfg, device = as_run(cfg)
    runs.check_folder(Path(out_dir), cfg, resume, overwrite)  # again under the lock; here it fails fast
    experiment = build_experiment(cfg, device, out_dir, data_dir)
    options = {"resume": resume, "progress": progress}
    with runs.claim(Path(out_dir), cfg, resume, overwrite):
        return method.run(experiment, **{name: options[name] for name in method.options})


def finetune(experiment: Experiment, resume: bool, progress: bool) -> dict:
    """Build the model (heads pretrained first if asked), then update and evaluate until done."""
    cfg, t = experiment.cfg, experiment.cfg.train
    if t.init_from:  # a continuation: its curve goes on from its start's
        experiment = dataclasses.replace(experiment, start_examples=runs.start_examples(t))
    resuming = resume and checkpoint_exists(experiment.folder.last)
    pretrain = cfg.methods.pretrain.selection is not None and not resuming
    stepper = build_training(experiment, pretrain, progress)
    if resume and not resuming and experiment.folder.metrics.exists():
        raise FileExistsError(f"{experiment.folder.path}: the run is complete (metrics.json exists); nothing to resume")
    state = _restore(stepper, experiment) if resuming else RunState()
    per_epoch = updates_per_epoch(t)
    total, eval_every = experiment.updates, evaluation_interval(t)
    bar = tqdm(total=total, initial=state.update, disable=not progress, desc=cfg.experiment, mininterval=5)
    stepper.model.train()
    while state.update < total and not state.stopped_early:
        started, epoch = time.perf_counter(), state.update // per_epoch + 1
        for group in stepper.optimizer.param_groups:
            group["lr"] = learning_rate(state.update, t, total)
        examples, tokens = stepper.step(state.update, epoch)
        state.examples, state.tokens, state.update = state.examples + examples, state.tokens + tokens, state.update + 1
        state.train_seconds += time.perf_counter() - started
        bar.update(1)
        if state.update % eval_every == 0 or state.update == total:
            _evaluate_and_checkpoint(experiment, stepper, state, epoch)
    bar.close()
    return finish_run(experiment, stepper.model, state)


def build_training(experiment: Experiment, pretrain: bool, progress: bool) -> Stepper:
    """The Stepper and all it updates and draws on: the model (from ``init_from`` when set,
    PALs added, heads pretrained when asked), its optimiser, the batch streams, the sampler."""
    cfg, t, device = experiment.cfg, experiment.cfg.train, experiment.device
    model = build_model(cfg, with_pals=False)
    if t.init_from:
        load_model_weights(runs.init_checkpoint(t), model)
    if cfg.methods.pals is not None:
        add_task_pals(model, cfg)
    if cfg.methods.frozen_encoder:
        model.encoder.requires_grad_(False)
    for task in set(TASK_NAMES) - set(t.tasks):  # a head no batch reaches never trains: not counted as trainable
        model.heads[task].requires_grad_(False)
    model = model.to(device)
    if pretrain:
        _pretrain_heads(experiment, model, progress)
    optimizer, scaler = adamw(model, t), grad_scaler(t.amp, device)
    train_data = experiment.data["train"]
    streams = {task: BatchStream(train_data[task], t.batch_size[task], t.seed, experiment.pad_id, cfg.data.bucketing)
               for task in t.tasks}
    sizes = {task: len(train_data[task]) for task in t.tasks}
    sampler = TaskSampler(t.sampler, sizes, t.epochs, t.seed)
    return Stepper(cfg, model, optimizer, scaler, streams, sampler, sizes, device, t.amp, total=experiment.updates)


def _features_dir(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir) / "features"


def _pretrain_heads(experiment: Experiment, model: MultitaskModel, progress: bool) -> dict[str, list[dict]]:
    """Pretrain the heads (train.pretrain_heads) and keep their history beside the run."""
    how = HeadPretraining.for_run(experiment.cfg, experiment.device, experiment.cfg.train.amp, experiment.pad_id,
                                  experiment.cfg.methods.pretrain.selection, progress)
    history = pretrain_heads(model, {k: experiment.data["train"][k] for k in experiment.cfg.train.tasks},
                             experiment.data["validation"], how)
    write_csv(experiment.folder.path / "pretrain_history.csv",
              pd.concat([pd.DataFrame(rows).assign(task=task) for task, rows in history.items()]))
    return history


def _restore(stepper: Stepper, experiment: Experiment) -> RunState:
    """The training state of the last checkpoint, loaded into the run's objects."""
    saved, tensors = load_checkpoint(experiment.folder.last, stepper.model, stepper.optimizer,
                                     config=runs.fingerprint(experiment.cfg))
    stepper.load_state(saved, tensors)
    seeds.restore_rng(saved["rng"], tensors)
    return RunState(**saved["run"])


def _evaluate_and_checkpoint(experiment: Experiment, stepper: Stepper, state: RunState, epoch: int) -> None:
    """Score the validation split, keep the weights if they are the best so far, checkpoint."""
    t, fingerprint, folder = experiment.cfg.train, runs.fingerprint(experiment.cfg), experiment.folder
    metrics, *_ = evaluate(stepper.model, experiment.data["validation"], *experiment.eval_args)
    start = {"start_examples": experiment.start_examples} if experiment.start_examples else {}
    state.history.append({"update": state.update, "epoch": epoch, "examples": state.examples,
                          "train_seconds": round(state.train_seconds, 3), **start, **metrics})
    if score_that_counts(metrics) > state.best_score:
        state.best_score, state.best_update, state.bad_evals = score_that_counts(metrics), state.update, 0
        save_checkpoint(folder.best, stepper.model, state={"update": state.update, "metrics": metrics},
                        config=fingerprint)
    else:
        state.bad_evals += 1
        state.stopped_early = t.patience is not None and state.bad_evals >= t.patience
    stepper_state, stepper_tensors = stepper.state()
    rng_state, rng_tensors = seeds.rng_state()
    save_checkpoint(folder.last, stepper.model, stepper.optimizer,
                    state={"run": dataclasses.asdict(state), **stepper_state, "rng": rng_state},
                    tensors={**rng_tensors, **stepper_tensors}, config=fingerprint)
    write_csv(folder.history, pd.DataFrame(state.history))


def _write_record(experiment: Experiment, model: MultitaskModel | None, scores: dict,
                  state: RunState | None = None) -> dict:
    """Write metrics.json: ``scores`` (the record's score fields) and what the run was. A run
    that made no update (``state`` None: heads, posthoc; random: no model either) records
    zero updates in the fields' order; a fine-tuned one its counters, in TRAINED_ORDER."""
    cfg = experiment.cfg
    params = ({"total": 0, "trainable": 0, "shared": 0, "task_specific": {t: 0 for t in TASK_NAMES}}
              if model is None else parameter_counts(model))
    if state is None:
        counters = {"best_update": 0, "updates": 0, "stopped_early": False, "train_seconds": 0.0}
    else:
        best = next(row for row in state.history if row["update"] == state.best_update)
        seconds = max(state.train_seconds, 1e-9)
        counters = {"validation": {k: v for k, v in best.items() if "/" in k or k == "mean"},
                    "best_update": state.best_update, "updates": state.update, "stopped_early": state.stopped_early,
                    "train_seconds": round(state.train_seconds, 2),
                    "train_examples_per_second": round(state.examples / seconds, 2),
                    "train_tokens_per_second": round(state.tokens / seconds, 2)}
    record = RunRecord(**scores, **counters, data=experiment.counts, params=params,
                       precision=None if model is None else cfg.train.amp, backbone=cfg.backbone.name,
                       profile=cfg.profile, experiment=cfg.experiment, seed=cfg.train.seed,
                       machine=describe_machine(experiment.device), packages=installed_versions())
    return record.write(experiment.folder.metrics, None if state is None else TRAINED_ORDER)


def _score_each(experiment: Experiment, predict: Callable[[dict[str, EncodedSplit]], tuple[dict, dict]]) -> dict:
    """Score dev (and test) once and write the predictions; ``predict(encoded)`` returns a
    split's (scores of its labelled tasks, {task: predictions})."""
    fields = {"dev": {}}
    for split, encoded in experiment.scored.items():
        scores, predictions = predict(encoded)
        if scores:
            fields[split] = scores
        experiment.write_predictions(split, encoded, predictions)
    return fields


def random_predictor(experiment: Experiment) -> dict:
    """The random predictor: uniformly drawn labels (a floor every method must clear)."""
    rng = np.random.default_rng(experiment.cfg.train.seed)

    def predict(encoded):
        predictions = {task: TASKS[task].random_predictions(len(s), rng) for task, s in encoded.items()}
        return score(encoded, predictions), predictions

    return _write_record(experiment, None, _score_each(experiment, predict))


def finish_run(experiment: Experiment, model: MultitaskModel, state: RunState) -> dict:
    """Score dev ONCE with the weights the validation split selected; write predictions and
    metrics.json; drop what is not kept."""
    load_model_weights(experiment.folder.best, model)
    content = _write_record(experiment, model, _score_splits(experiment, model), state)
    shutil.rmtree(experiment.folder.last, ignore_errors=True)
    if not experiment.cfg.train.keep_checkpoint:
        shutil.rmtree(experiment.folder.path / "checkpoints", ignore_errors=True)
    return content


def _score_splits(experiment: Experiment, model: MultitaskModel) -> dict:
    """Score dev (and test) once and write the predictions; returns the record's score fields.
    With ``train.sst_adjustment`` sst is predicted a second time, through the adjustment
    matrix; the scores without it go to ``<split>_unadjusted``."""
    adjustments = {"sst": fit_sst_adjustment(experiment, model)} if experiment.cfg.train.sst_adjustment else None
    fields, args = {"dev": {}}, experiment.eval_args
    for split, encoded in experiment.scored.items():
        scores, predictions, examples_per_second, confidences = evaluate(model, encoded, *args)
        if adjustments:
            adjusted = {task: encoded[task] for task in adjustments if task in encoded}
            _, again, _, sure = evaluate(model, adjusted, *args, adjustments)
            predictions.update(again)
            confidences.update(sure)
            if scores:
                fields[f"{split}_unadjusted"] = scores
                scores = score(encoded, predictions)
        if scores:
            fields[split] = scores
        fields.setdefault("eval_examples_per_second", round(examples_per_second, 2))
        # the confidences go to dev's files only (the error analysis reads them); test files keep the course's format
        experiment.write_predictions(split, encoded, predictions, confidences if split == "dev" else None)
    return fields


def heads_only(experiment: Experiment, progress: bool) -> dict:
    """Heads trained on the frozen encoder, no fine-tuning: the baseline every fine-tuned row
    must beat. Dev (and test) are scored from cached encoder features."""
    cfg = experiment.cfg
    model = build_model(cfg).to(experiment.device)
    for name, parameter in model.named_parameters():  # only the heads train: the record counts them alone
        parameter.requires_grad_(name.startswith("heads."))
    history = _pretrain_heads(experiment, model, progress)
    validation, epochs = kept_scores(history)
    scores = _score_each(experiment, lambda encoded: evaluate_heads(model, encoded, *experiment.eval_args,
                                                                    _features_dir(cfg)))
    return _write_record(experiment, model, {**scores, "validation": validation, "head_epochs": epochs})


def warm_caches(cfg: Config, data_dir=None, tasks=None, features: bool = True) -> None:
    """Compute what every seed of ``cfg`` shares, so that runs side by side find it in the caches
    instead of each computing it: the tokenised and EDA-balanced data and, unless ``features`` is
    False, where the heads are pretrained on a pretrained encoder, its features for ``tasks``
    (default: all of the run's; training rows capped as pretraining caps them), with ``cfg``'s
    thread count so that they are those a run would compute itself."""
    t = cfg.train
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer, data_dir)
    splits, pretrain = METHODS[cfg.methods.method].feature_splits, cfg.methods.pretrain
    if not features or not splits or pretrain.selection is None or not cfg.backbone.pretrained or t.init_from:
        return
    device = resolve_device(t.device)
    model = build_model(cfg).to(device).eval()
    fingerprint = encoder_fingerprint(model)
    for task in tasks or t.tasks:
        encoded = [data[split][task] for split in splits]
        encoded[0] = pretraining_sample(encoded[0], pretrain.max_examples)
        feature_sources(model, encoded, needs_tokens(model.heads[task]),
                        t.eval_batch_size, tokenizer.pad_token_id, device, resolve_amp(t.amp, device),
                        cache_dir=_features_dir(cfg), fingerprint=fingerprint)


def fit_sst_adjustment(experiment: Experiment, model: MultitaskModel) -> torch.Tensor:
    """The 5x5 SST adjustment matrix, fitted on the frozen model's training-set probabilities
    and saved beside the run (``sst_adjustment.safetensors``) for evaluate and predict."""
    train_sst = experiment.data["train"]["sst"]
    probs = sst_probabilities(model, train_sst, *experiment.eval_args)
    matrix = fit_adjustment(probs, torch.tensor(np.asarray(train_sst.labels, dtype=np.int64)))
    save_adjustment(experiment.folder.adjustment, matrix, {"fitted_on": "sst train", "examples": len(train_sst)})
    return matrix


def posthoc(experiment: Experiment) -> dict:
    """A trained run (``train.init_from``) scored again without training, through the SST
    adjustment matrix when ``train.sst_adjustment`` is on: what a post-hoc step adds, with
    the weights held fixed."""
    model = build_model(experiment.cfg).to(experiment.device)
    load_model_weights(runs.init_checkpoint(experiment.cfg.train), model)
    return _write_record(experiment, model, _score_splits(experiment, model))


@dataclass(frozen=True)
class Method:
    run: Callable[..., dict]          # (experiment, **options) -> metrics.json's content
    options: tuple[str, ...]          # what it takes of train()'s options: resume, progress
    feature_splits: tuple[str, ...]   # splits it reads frozen-encoder features of, when heads are pretrained


METHODS = {  # train.method; names and constraints: mtlib.settings.METHODS
    "finetune": Method(finetune, ("resume", "progress"), ("train", "validation")),
    "heads": Method(heads_only, ("progress",), ("train", "validation", "dev")),
    "posthoc": Method(posthoc, (), ()),
    "random": Method(random_predictor, (), ()),
}
