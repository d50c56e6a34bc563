"""Scoring: predictions for a split, metrics, prediction files."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from mtlib.data.encode import EncodedSplit, eval_batches
from mtlib.training.adjust import apply_adjustment
from mtlib.training.precision import autocast
from mtlib.tasks import TASKS, metric_key


def predict_split(model, split: EncodedSplit, batch_size: int, pad_id: int, device: torch.device,
                  amp: str = "none", adjustment: torch.Tensor | None = None) -> np.ndarray:
    """Predicted labels (STS: clamped scores) for every row of ``split``, in row order;
    through a class adjustment matrix when one is given (mtlib.training.adjust).

    Inference mode (no autograd bookkeeping at all) and ONE autocast context around every
    batch: autocast keeps its low-precision copies of the weights while the context is open,
    instead of casting every weight again for every batch. Neither changes a prediction."""
    was_training = model.training
    model.eval()
    predictions = np.zeros(len(split), dtype=float)
    with torch.inference_mode():
        with autocast(amp, device):
            outputs = [(batch.index, model(batch.to(device))) for batch in eval_batches(split, batch_size, pad_id)]
        for index, output in outputs:  # outside autocast: the adjustment's product stays in fp32
            if adjustment is not None:
                probs = output.float().softmax(-1)
                predictions[index] = apply_adjustment(probs, adjustment.to(probs.device)).cpu().numpy()
            else:
                predictions[index] = TASKS[split.task].predict(output)
    model.train(was_training)
    return predictions


def score(splits: dict[str, EncodedSplit], predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """``{'sst/acc': .., 'para/acc': .., 'sts/pearson': .., 'mean': ..}`` of the labelled splits."""
    labelled = [t for t, split in splits.items() if split.labels is not None]
    metrics = {metric_key(t): TASKS[t].score(predictions[t], splits[t].labels) for t in labelled}
    if set(labelled) == set(TASKS):
        metrics["mean"] = float(np.mean(list(metrics.values())))
    return metrics


def evaluate(model, splits: dict[str, EncodedSplit], batch_size: int, pad_id: int, device: torch.device,
             amp: str = "none", adjustments: dict[str, torch.Tensor] | None = None,
             ) -> tuple[dict[str, float], dict[str, np.ndarray], float]:
    """Predict every split, score the labelled ones; also returns the examples predicted per second."""
    start = time.perf_counter()
    predictions = {task: predict_split(model, split, batch_size, pad_id, device, amp, (adjustments or {}).get(task))
                   for task, split in splits.items()}
    seconds, examples = time.perf_counter() - start, sum(len(split) for split in splits.values())
    return score(splits, predictions), predictions, examples / max(seconds, 1e-9)


def prediction_frame(split: EncodedSplit, predictions: np.ndarray) -> pd.DataFrame:
    spec = TASKS[split.task]
    values = predictions.astype(int) if spec.integer_labels else np.round(predictions, 4)
    return pd.DataFrame({"id": split.ids, spec.label_column: values})
