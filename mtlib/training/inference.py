"""Using a finished run: re-score its best checkpoint, or predict any file in the course layout."""
from __future__ import annotations

import json

from dataclasses import replace
from pathlib import Path

from mtlib.model.backbone import load_tokenizer
from mtlib.training.adjust import load_adjustment
from mtlib.training.checkpoint import load_model_weights
from mtlib.config import PerTask
from mtlib.data.files import read_task_file
from mtlib.data.encode import encode_split
from mtlib.training.evaluate import evaluate, prediction_frame
from mtlib.io import write_csv, write_json
from mtlib.model.multitask import build_model
from mtlib.tasks import TASKS
from mtlib.data.prepare import prepare_data
from mtlib.training.precision import resolve_device
from mtlib.training.runs import ADJUSTMENT_FILE, read_run_config


def _trained_nothing(run_dir: Path) -> bool:
    metrics = run_dir / "metrics.json"
    return metrics.exists() and json.loads(metrics.read_text()).get("updates") == 0


def load_run(run_dir: str | Path, device: str | None = None):
    """``(config, model with the best weights, tokenizer, device, class adjustments {task: W} or None)``.

    A run that trained nothing (``train.method: posthoc``) has no weights of its own: it
    uses those of the run it started from (``train.init_from``)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    best = run_dir / "checkpoints" / "best"
    if not (best / "model.safetensors").exists() and cfg.train.init_from and _trained_nothing(run_dir):
        best = Path(cfg.train.init_from.format(seed=cfg.train.seed)) / "checkpoints" / "best"
    if not (best / "model.safetensors").exists():
        raise FileNotFoundError(f"{best}: no checkpoint (was the run trained with train.keep_checkpoint=false?)")
    device = resolve_device(device or cfg.train.device)
    model = build_model(cfg)
    load_model_weights(best, model)
    adjustments = None
    if (run_dir / ADJUSTMENT_FILE).exists():
        adjustments = {"sst": load_adjustment(run_dir / ADJUSTMENT_FILE)[0]}
    return cfg, model.to(device).eval(), load_tokenizer(cfg.backbone), device, adjustments


def evaluate_run(run_dir: str | Path, data_dir=None, full_dev: bool = False) -> dict:
    """Re-score the best checkpoint on dev (the run's dev sample, or all of dev) and write
    test-student predictions; results go to ``<run>/evaluation/``."""
    run_dir = Path(run_dir)
    cfg, model, tokenizer, device, adjustments = load_run(run_dir)
    if full_dev:
        cfg = replace(cfg, data=replace(cfg.data, dev_size=PerTask(None, None, None)))
    data = prepare_data(cfg, tokenizer, data_dir, splits=("dev", "test-student"))
    out = run_dir / "evaluation"
    results = {}
    for split, name in (("dev", "dev"), ("test-student", "test")):
        scores, predictions, _ = evaluate(model, data[split], cfg.train.eval_batch_size, tokenizer.pad_token_id,
                                          device, cfg.train.amp, adjustments)
        if scores:
            results[name] = scores
        for task, values in predictions.items():
            write_csv(out / f"{task}-{name}.csv", prediction_frame(data[split][task], values))
    write_json(out / "metrics.json", results)
    return results


def predict_file(run_dir: str | Path, task: str, input_path: str | Path, output_path: str | Path) -> dict:
    """Predict every row of ``input_path``; returns the metric when the file has labels."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    frame = read_task_file(input_path, task)  # validated before any model is loaded
    cfg, model, tokenizer, device, adjustments = load_run(run_dir)
    split = encode_split(tokenizer, frame, task, cfg.model.pair_mode, cfg.backbone.max_length)
    scores, predictions, _ = evaluate(model, {task: split}, cfg.train.eval_batch_size, tokenizer.pad_token_id,
                                      device, cfg.train.amp, adjustments)
    write_csv(output_path, prediction_frame(split, predictions[task]))
    return scores
