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
                  amp: str = "none", adjustment: torch.Tensor | None = None,
                  confidence: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predicted labels (STS: clamped scores) for every row of ``split``, in row order;
    through a class adjustment matrix when one is given (mtlib.training.adjust). With
    ``confidence``, also the model's probability of each predicted class
    (mtlib.tasks.Task.confidence; NaN for STS): (predictions, confidences).

    Inference mode (no autograd bookkeeping at all) and ONE autocast context around every
    batch: autocast keeps its low-precision copies of the weights while the context is open,
    instead of casting every weight again for every batch. Neither changes a prediction."""
    was_training = model.training
    model.eval()
    predictions, confidences = np.zeros(len(split), dtype=float), np.full(len(split), np.nan)
    task = TASKS[split.task]
    with torch.inference_mode():
        with autocast(amp, device):
            outputs = [(batch.index, model(batch.to(device))) for batch in eval_batches(split, batch_size, pad_id)]
        for index, output in outputs:  # outside autocast: the adjustment's product stays in fp32
            if adjustment is not None:
                probs = output.float().softmax(-1)
                predictions[index] = apply_adjustment(probs, adjustment.to(probs.device)).cpu().numpy()
            else:
                predictions[index] = task.predict(output)
            if confidence:
                confidences[index] = task.confidence(output, predictions[index])
    model.train(was_training)
    return (predictions, confidences) if confidence else predictions


def score(splits: dict[str, EncodedSplit], predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """``{'sst/acc': .., 'para/acc': .., 'sts/pearson': .., 'mean': ..}`` of the labelled splits."""
    labelled = [t for t, split in splits.items() if split.labels is not None]
    metrics = {metric_key(t): TASKS[t].score(predictions[t], splits[t].labels) for t in labelled}
    if set(labelled) == set(TASKS):
        metrics["mean"] = float(np.mean(list(metrics.values())))
    return metrics


def evaluate(model, splits: dict[str, EncodedSplit], batch_size: int, pad_id: int, device: torch.device,
             amp: str = "none", adjustments: dict[str, torch.Tensor] | None = None,
             ) -> tuple[dict[str, float], dict[str, np.ndarray], float, dict[str, np.ndarray]]:
    """Predict every split, score the labelled ones; also returns the examples predicted per
    second and each prediction's confidence (:func:`predict_split`), per task."""
    start = time.perf_counter()
    both = {task: predict_split(model, split, batch_size, pad_id, device, amp, (adjustments or {}).get(task), True)
            for task, split in splits.items()}
    predictions = {task: values for task, (values, _) in both.items()}
    seconds, examples = time.perf_counter() - start, sum(len(split) for split in splits.values())
    confidences = {task: values for task, (_, values) in both.items()}
    return score(splits, predictions), predictions, examples / max(seconds, 1e-9), confidences


#: The predictions file's column with the model's probability of the class it predicted
#: (classification runs that score a model; absent for STS, the random predictor and
#: files written before it existed).
CONFIDENCE = "probability"


def prediction_frame(split: EncodedSplit, predictions: np.ndarray, confidences: np.ndarray | None = None) -> pd.DataFrame:
    """A predictions file: id and the label column, then :data:`CONFIDENCE` for a
    classification task when ``confidences`` are given."""
    spec = TASKS[split.task]
    values = predictions.astype(int) if spec.integer_labels else np.round(predictions, 4)
    frame = pd.DataFrame({"id": split.ids, spec.label_column: values})
    if confidences is not None and spec.integer_labels:
        frame[CONFIDENCE] = np.round(np.asarray(confidences, float), 4)
    return frame
