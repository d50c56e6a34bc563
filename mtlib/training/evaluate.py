"""Scoring: predictions for a split, metrics, prediction files."""
from __future__ import annotations

import contextlib
import time

import numpy as np
import pandas as pd
import torch

from mtlib.data.encode import EncodedSplit, eval_batches
from mtlib.tasks import TASKS, metric_key


def autocast(amp: str, device: torch.device):
    """bf16 autocast (CPU or CUDA), fp16 autocast (CUDA, with a GradScaler), or nothing."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device; use bf16 on a CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def predict_split(model, split: EncodedSplit, batch_size: int, pad_id: int, device: torch.device,
                  amp: str = "none", sst_adjustment: torch.Tensor | None = None) -> np.ndarray:
    """Predicted labels (STS: clamped scores) for every row of ``split``, in row order; SST
    through the 5x5 adjustment matrix when one is given (mtlib.training.adjust)."""
    was_training = model.training
    model.eval()
    predictions = np.zeros(len(split), dtype=float)
    for batch in eval_batches(split, batch_size, pad_id):
        with autocast(amp, device):
            output = model(batch.to(device))
        if split.task == "sst" and sst_adjustment is not None:
            from mtlib.training.adjust import apply_adjustment  # (mtlib.training.adjust imports this module)

            probs = output.float().softmax(-1)
            predictions[batch.index] = apply_adjustment(probs, sst_adjustment.to(probs.device)).cpu().numpy()
        else:
            predictions[batch.index] = TASKS[split.task].predict(output)
    model.train(was_training)
    return predictions


def score(splits: dict[str, EncodedSplit], predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """``{'sst/acc': .., 'para/acc': .., 'sts/pearson': .., 'mean': ..}`` for labelled splits."""
    metrics = {metric_key(t): TASKS[t].score(predictions[t], splits[t].labels) for t in splits}
    if set(splits) == set(TASKS):
        metrics["mean"] = float(np.mean(list(metrics.values())))
    return metrics


def evaluate(model, splits: dict[str, EncodedSplit], batch_size: int, pad_id: int, device: torch.device,
             amp: str = "none", sst_adjustment: torch.Tensor | None = None,
             ) -> tuple[dict[str, float], dict[str, np.ndarray], dict]:
    """Predict every split, score the labelled ones; also returns timing."""
    start, examples = time.perf_counter(), 0
    predictions = {}
    for task, split in splits.items():
        predictions[task] = predict_split(model, split, batch_size, pad_id, device, amp, sst_adjustment)
        examples += len(split)
    seconds = time.perf_counter() - start
    labelled = {t: s for t, s in splits.items() if s.labels is not None}
    timing = {"seconds": seconds, "examples_per_second": examples / max(seconds, 1e-9)}
    return score(labelled, {t: predictions[t] for t in labelled}), predictions, timing


def prediction_frame(split: EncodedSplit, predictions: np.ndarray) -> pd.DataFrame:
    spec = TASKS[split.task]
    values = predictions.astype(int) if spec.integer_labels else np.round(predictions, 4)
    return pd.DataFrame({"id": split.ids, spec.label_column: values})
