"""Using a finished run: re-score its best checkpoint, or predict any file in the course layout."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from mtlib.config import PerTask
from mtlib.data.encode import encode_split
from mtlib.data.files import iter_task_file
from mtlib.data.prepare import prepare_data
from mtlib.io import atomic_path, check_output, write_csv
from mtlib.model.backbone import check_max_length, load_tokenizer
from mtlib.model.multitask import build_model
from mtlib.record import RunRecord
from mtlib.tasks import TASKS, metric_key
from mtlib.training import runs
from mtlib.training.adjust import load_adjustment
from mtlib.training.checkpoint import CheckpointError, load_model_weights, reading
from mtlib.training.evaluate import evaluate, predict_split, prediction_frame
from mtlib.training.precision import resolve_device
from mtlib.training.runs import ADJUSTMENT_FILE, read_run_config

CHUNK_ROWS = 10_000  # rows predicted at a time: memory does not grow with the input file


def load_run(run_dir: str | Path, device: str | None = None):
    """``(config, model with the best weights, tokenizer, device, class adjustments {task: W} or None)``.

    A run that trained nothing (``train.method: posthoc``) has no weights of its own: it
    uses those of the run it started from (``train.init_from``)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    check_max_length(cfg.backbone)
    best = run_dir / "checkpoints" / "best"
    own = (best / "model.safetensors").exists()
    metrics = run_dir / "metrics.json"
    if not own and cfg.train.init_from and metrics.exists() and RunRecord.read(metrics).updates == 0:
        best = runs.init_checkpoint(cfg.train)
    if not (best / "model.safetensors").exists():
        raise CheckpointError(f"{best}: no checkpoint (was the run trained with train.keep_checkpoint=false?)")
    device = resolve_device(device or cfg.train.device)
    model = build_model(cfg)
    # borrowed weights were made with the other run's config: only their names and shapes are checked
    load_model_weights(best, model, config=runs.fingerprint(cfg) if own else None)
    adjustments = None
    if (run_dir / ADJUSTMENT_FILE).exists():
        with reading(run_dir / ADJUSTMENT_FILE):
            adjustments = {"sst": load_adjustment(run_dir / ADJUSTMENT_FILE)[0]}
    return cfg, model.to(device).eval(), load_tokenizer(cfg.backbone), device, adjustments


def evaluate_run(run_dir: str | Path, data_dir=None, full_dev: bool = False,
                 cache_dir: str | Path | None = None) -> dict:
    """Re-score the best checkpoint on dev (the run's dev sample, or all of dev) and write
    test-student predictions; results go to ``<run>/evaluation/``, with the run folder
    locked. Tokenised data is cached in ``cache_dir`` (default: not cached), never where
    the run's config.yaml says: a run folder does not decide where a command writes."""
    run_dir = Path(run_dir)
    read_run_config(run_dir)  # a folder that holds no run is refused before anything is locked or written
    with runs.lock(run_dir):
        cfg, model, tokenizer, device, adjustments = load_run(run_dir)
        cfg = replace(cfg, data=replace(cfg.data, cache_dir=cache_dir))
        if full_dev:
            cfg = replace(cfg, data=replace(cfg.data, dev_size=PerTask(None, None, None)))
        data = prepare_data(cfg, tokenizer, data_dir, splits=("dev", "test-student"))
        out = run_dir / "evaluation"
        results = {}
        for split, name in (("dev", "dev"), ("test-student", "test")):
            scores, predictions, _, confidences = evaluate(model, data[split], cfg.train.eval_batch_size,
                                                           tokenizer.pad_token_id, device, cfg.train.amp, adjustments)
            if scores:
                results[name] = scores
            for task, values in predictions.items():
                write_csv(out / f"{task}-{name}.csv", prediction_frame(data[split][task], values,
                                                                        confidences[task] if name == "dev" else None))
        return RunRecord(**results).write(out / "metrics.json")  # the record's dev and test, nothing else


def predict_file(run_dir: str | Path, task: str, input_path: str | Path, output_path: str | Path,
                 chunk_rows: int | None = None) -> dict:
    """Predict every row of ``input_path`` into ``output_path`` (CSV: id and the predicted
    label, written atomically); returns the metric when the file has labels.

    The whole input is validated before any model is loaded, then read again and predicted
    ``chunk_rows`` rows at a time (default CHUNK_ROWS): memory holds one chunk, whatever the
    file's size."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    chunk_rows = chunk_rows or CHUNK_ROWS
    check_output(output_path, inputs=[input_path])
    for _ in iter_task_file(input_path, task, chunk_rows=chunk_rows):
        pass
    cfg, model, tokenizer, device, adjustments = load_run(run_dir)
    batch_size, pad_id, adjustment = cfg.train.eval_batch_size, tokenizer.pad_token_id, (adjustments or {}).get(task)
    predicted, labels = [], []
    with atomic_path(output_path) as tmp, tmp.open("w", newline="") as out:
        for k, frame in enumerate(iter_task_file(input_path, task, chunk_rows=chunk_rows, warn=False)):
            split = encode_split(tokenizer, frame, task, cfg.model.pair_mode, cfg.backbone.max_length)
            values = predict_split(model, split, batch_size, pad_id, device, cfg.train.amp, adjustment)
            prediction_frame(split, values).to_csv(out, index=False, header=k == 0)
            if split.labels is not None:
                predicted.append(values)
                labels.append(split.labels)
    if not labels:
        return {}
    return {metric_key(task): TASKS[task].score(np.concatenate(predicted), np.concatenate(labels))}
