"""Task samplers: which task's batch comes next.

A sampler is a pure function ``(sizes, epoch, epochs) -> {task: probability}`` where
``sizes`` maps each task to its training-set size, ``epoch`` is 1-based and ``epochs`` is
the total number of epochs. Drawing from those probabilities happens in
:class:`TaskSampler`, whose only state is a seed and a counter, so it resumes exactly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mtlib import seeds


def _normalise(weights: dict[str, float]) -> dict[str, float]:
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"task weights must have a positive sum, got {weights}")
    return {task: float(w) / total for task, w in weights.items()}


def uniform(sizes: dict[str, int], epoch: int, epochs: int) -> dict[str, float]:
    """The report's baseline "random" sampler: every task equally likely."""
    return _normalise({task: 1.0 for task in sizes})


def proportional(sizes: dict[str, int], epoch: int, epochs: int) -> dict[str, float]:
    """P(i) = N_i / sum_j N_j."""
    return _normalise({task: float(n) for task, n in sizes.items()})


def temperature(sizes: dict[str, int], epoch: int, epochs: int, alpha: float = 0.5) -> dict[str, float]:
    """P(i) proportional to N_i^alpha; alpha = 0.5 is the square-root sampler."""
    return _normalise({task: float(n) ** alpha for task, n in sizes.items()})


def square_root(sizes: dict[str, int], epoch: int, epochs: int) -> dict[str, float]:
    """P(i) proportional to sqrt(N_i)."""
    return temperature(sizes, epoch, epochs, alpha=0.5)


def annealed_alpha(epoch: int, epochs: int) -> float:
    """alpha = 1 - 0.8 (e - 1) / (E - 1) (Stickland and Murray 2019), with alpha = 1 when E = 1."""
    if epochs < 1 or not 1 <= epoch <= epochs:
        raise ValueError(f"epoch must be in 1..{epochs} (1-based), got {epoch}")
    if epochs == 1:
        return 1.0
    return 1.0 - 0.8 * (epoch - 1) / (epochs - 1)


def annealed(sizes: dict[str, int], epoch: int, epochs: int) -> dict[str, float]:
    """Annealed sampling: P(i) proportional to N_i^alpha(e), from proportional towards uniform."""
    return temperature(sizes, epoch, epochs, alpha=annealed_alpha(epoch, epochs))


@dataclass(frozen=True)
class Sampler:
    probabilities: Callable[[dict[str, int], int, int], dict[str, float]]  # (sizes, epoch, epochs)
    cyclic: bool = False  # visit the tasks in turn instead of drawing from the probabilities


SAMPLERS = {  # train.sampler; its names are checked against mtlib.settings.SAMPLERS
    "random": Sampler(uniform),
    "round_robin": Sampler(uniform, cyclic=True),  # the tasks in turn: over a cycle, each 1/T
    "proportional": Sampler(proportional),
    "square_root": Sampler(square_root),
    "annealed": Sampler(annealed),
}


class TaskSampler:
    """Draws the task of each micro-batch.

    Draw number ``n`` uses a generator seeded with ``(seed, n)``, so the sequence depends on
    nothing but the seed and the counter: saving ``state_dict()`` and loading it resumes
    the identical sequence.
    """

    def __init__(self, name: str, sizes: dict[str, int], epochs: int, seed: int):
        self.sampler = SAMPLERS[name]
        self.tasks = list(sizes)
        self.sizes = dict(sizes)
        self.epochs = epochs
        self.seed = seed
        self.draws = 0

    def draw(self, epoch: int) -> str:
        n = self.draws
        self.draws += 1
        if self.sampler.cyclic:
            return self.tasks[n % len(self.tasks)]
        probs = self.sampler.probabilities(self.sizes, epoch, self.epochs)
        weights = torch.tensor([probs[t] for t in self.tasks], dtype=torch.float64)
        generator = seeds.generator(seeds.counter_seed(self.seed, n))
        return self.tasks[int(torch.multinomial(weights, 1, generator=generator))]

    def state_dict(self) -> dict:
        return {"draws": self.draws}

    def load_state_dict(self, state: dict) -> None:
        self.draws = int(state["draws"])
