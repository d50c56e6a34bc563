"""The three tasks: their files, columns, losses, predictions and metrics."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Task:
    name: str
    file_prefix: str                 # <prefix>-train.csv, -dev.csv, -test-student.csv
    text_columns: tuple[str, ...]
    label_column: str
    num_outputs: int                 # width of the head's output
    metric: str                      # key in metrics.json: <name>/<metric>
    label_min: float
    label_max: float
    integer_labels: bool

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (sst), BCE with logits (para), MSE (sts); computed in fp32."""
        output = output.float()
        if self.name == "sst":
            return F.cross_entropy(output, labels.long())
        if self.name == "para":
            return F.binary_cross_entropy_with_logits(output, labels.float())
        return F.mse_loss(output, labels.float())

    def predict(self, output: torch.Tensor) -> np.ndarray:
        """Labels in the file's own scale; STS scores clamped to 0..5."""
        output = output.float()
        if self.name == "sst":
            return output.argmax(-1).cpu().numpy()
        if self.name == "para":
            return (output > 0).long().cpu().numpy()
        return output.clamp(self.label_min, self.label_max).cpu().numpy()

    def random_predictions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The random predictor: a uniformly drawn class, or a uniform score in the label range."""
        if self.integer_labels:
            return rng.integers(int(self.label_min), int(self.label_max) + 1, size=n)
        return rng.uniform(self.label_min, self.label_max, size=n)

    def score(self, predictions: np.ndarray, labels: np.ndarray) -> float:
        predictions, labels = np.asarray(predictions, float), np.asarray(labels, float)
        if self.metric == "acc":
            return float((predictions == labels).mean())
        if predictions.std() == 0 or labels.std() == 0:
            return 0.0  # Pearson r is undefined for a constant; count it as no correlation
        return float(np.corrcoef(predictions, labels)[0, 1])


TASKS = {
    "sst": Task("sst", "ids-sst", ("sentence",), "sentiment", 5, "acc", 0, 4, True),
    "para": Task("para", "quora", ("sentence1", "sentence2"), "is_duplicate", 1, "acc", 0, 1, True),
    "sts": Task("sts", "sts", ("sentence1", "sentence2"), "similarity", 1, "pearson", 0, 5, False),
}


def metric_key(task: str) -> str:
    return f"{task}/{TASKS[task].metric}"
