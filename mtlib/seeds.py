"""Seeds: how every random stream of a run is derived from its one training seed.

Each stream (a task's batch order, the sampler's n-th draw, an update's plan) gets a
generator seeded from ``(seed, what, n)`` alone, so a resumed run sees the streams an
uninterrupted run would have seen, and one stream never shifts another. The global RNGs
(torch, NumPy, Python) drive what the libraries draw (dropout, initialisation); their state
is saved with every checkpoint (:func:`rng_state`, :func:`restore_rng`).
"""
from __future__ import annotations

import random

import numpy as np
import torch

_COUNTER = 1_000_003  # primes: distinct (seed, n) pairs give distinct seeds for any realistic n
_TASK = 7919
_PASS = 104_729


def counter_seed(seed: int, n: int) -> int:
    """The seed of draw (or update) number ``n`` of a stream seeded with ``seed``."""
    return seed * _COUNTER + n


def task_seed(seed: int, task: str) -> int:
    """A task's own seed: its streams depend on (seed, task), not on which tasks run."""
    return seed * _TASK + sum(ord(c) * 31 ** i for i, c in enumerate(task))


def pass_seed(seed: int, task: str, n: int) -> int:
    """The seed of pass ``n`` over a task's training data."""
    return task_seed(seed, task) * _PASS + n


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """The global RNG states: JSON-able (NumPy, Python) and tensors (torch, CUDA)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"numpy": [name, keys.tolist(), pos, has_gauss, cached], "python": list(random.getstate())}, tensors


def restore_rng(state: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Undo :func:`rng_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(tuple(state["numpy"]))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
