"""The three tasks: their files, columns, losses, predictions and metrics.

``TASKS`` is the one registry of tasks and ``TASK_NAMES`` the one spelling of their order
(sst, para, sts) used everywhere: files, metrics, configs, tables. Each entry carries its
own loss, prediction rule and metric, so nothing elsewhere branches on a task's name.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


# The losses import torch when one is computed, not with the module: the config reads the
# task names, and a settings error must not wait seconds for torch to load.
def _cross_entropy(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F
    return F.cross_entropy(output, labels.long())


def _binary_cross_entropy(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F
    return F.binary_cross_entropy_with_logits(output, labels.float())


def _squared_error(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F
    return F.mse_loss(output, labels.float())


def _argmax(output: torch.Tensor, task: "Task") -> torch.Tensor:
    return output.argmax(-1)


def _positive_logit(output: torch.Tensor, task: "Task") -> torch.Tensor:
    return (output > 0).long()


def _clamped_score(output: torch.Tensor, task: "Task") -> torch.Tensor:
    return output.clamp(task.label_min, task.label_max)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(predictions, float) == np.asarray(labels, float)).mean())


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson r; 0.0 when either side is constant (r is undefined: no correlation)."""
    predictions, labels = np.asarray(predictions, float), np.asarray(labels, float)
    if predictions.std() == 0 or labels.std() == 0:
        return 0.0
    return float(np.corrcoef(predictions, labels)[0, 1])


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
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    predict_fn: Callable[[torch.Tensor, "Task"], torch.Tensor]
    metric_fn: Callable[[np.ndarray, np.ndarray], float]
    balanced: bool                   # EDA class balancing applies (classification with few classes)
    drops_empty_labels: bool = False  # rows with an empty label are dropped with a warning (quora-dev has 2)

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The task's training loss, computed in fp32."""
        return self.loss_fn(output.float(), labels)

    def predict(self, output: torch.Tensor) -> np.ndarray:
        """Labels in the file's own scale (STS: scores clamped to the label range)."""
        return self.predict_fn(output.float(), self).cpu().numpy()

    def confidence(self, output: torch.Tensor, predictions) -> np.ndarray:
        """The model's probability of the class it predicted, per row (softmax for several
        classes, the sigmoid of the logit and its complement for a binary head); NaN for a
        regression task, which has no class. ``predictions``: the predicted classes, which
        may differ from the argmax of ``output`` (a class adjustment, mtlib.training.adjust)."""
        import torch  # with a model's output, not with the module (see the losses above)
        output = output.float()
        if not self.integer_labels:
            return np.full(len(output), np.nan)
        if self.num_outputs == 1:
            positive = torch.sigmoid(output.reshape(-1))
            probs = torch.stack([1 - positive, positive], -1)
        else:
            probs = output.softmax(-1)
        chosen = torch.as_tensor(np.asarray(predictions), dtype=torch.long, device=probs.device)
        return probs.gather(-1, chosen[:, None])[:, 0].cpu().numpy()

    def random_predictions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The random predictor: a uniformly drawn class, or a uniform score in the label range."""
        if self.integer_labels:
            return rng.integers(int(self.label_min), int(self.label_max) + 1, size=n)
        return rng.uniform(self.label_min, self.label_max, size=n)

    def score(self, predictions: np.ndarray, labels: np.ndarray) -> float:
        return self.metric_fn(predictions, labels)


TASKS = {
    "sst": Task("sst", "ids-sst", ("sentence",), "sentiment", 5, "acc", 0, 4, True,
                _cross_entropy, _argmax, accuracy, balanced=True),
    "para": Task("para", "quora", ("sentence1", "sentence2"), "is_duplicate", 1, "acc", 0, 1, True,
                 _binary_cross_entropy, _positive_logit, accuracy, balanced=True, drops_empty_labels=True),
    "sts": Task("sts", "sts", ("sentence1", "sentence2"), "similarity", 1, "pearson", 0, 5, False,
                _squared_error, _clamped_score, pearson, balanced=False),
}
TASK_NAMES = tuple(TASKS)


def metric_key(task: str) -> str:
    return f"{task}/{TASKS[task].metric}"
