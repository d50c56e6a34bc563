"""Which batches make up one optimiser update, and how each task's loss is weighted.

An update plan is a pure-ish function of :class:`PlanContext` returning a list of
``(task, weight)`` pairs: one training batch of ``task`` is drawn per pair and its loss is
multiplied by ``weight``. How the per-task gradients are then combined (summed, PCGrad,
GradVac) is the combiner's business (``mtlib.training.combiners.COMBINERS``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mtlib.training.combiners import compromise_group, compromise_weights, reference_code_weights
from mtlib.training.samplers import TaskSampler, annealed, annealed_alpha


@dataclass
class PlanContext:
    sampler: TaskSampler           # the configured task sampler (its draws advance its counter)
    epoch: int                     # 1-based
    epochs: int
    sizes: dict[str, int]          # training-set size per task
    accumulation: int              # k in "k micro-batches per update"
    group_size: int                # n, Gradient Compromise's batches per update
    generator: torch.Generator     # seeded per update, so plans resume exactly
    batch_counts: dict[str, int] = field(default_factory=dict)  # this epoch's batches per task so far


def sampled(ctx: PlanContext) -> list[tuple[str, float]]:
    """k micro-batches whose tasks the sampler draws; their losses averaged (weight 1/k)."""
    return [(ctx.sampler.draw(ctx.epoch), 1.0 / ctx.accumulation) for _ in range(ctx.accumulation)]


def each_task(ctx: PlanContext) -> list[tuple[str, float]]:
    """k micro-batches of EVERY task, so each task has a gradient to combine (PCGrad, GradVac)."""
    return [(task, 1.0 / ctx.accumulation) for task in ctx.sizes for _ in range(ctx.accumulation)]


def _compromise_tasks(ctx: PlanContext) -> list[str]:
    probs = annealed(ctx.sizes, ctx.epoch, ctx.epochs)
    return compromise_group(probs, ctx.group_size, ctx.generator)


def compromise(ctx: PlanContext) -> list[tuple[str, float]]:
    """Gradient Compromise as the report states it (its Algorithm 1): a shuffled group of n
    batches, one per task plus n - T drawn from the adjusted annealed probabilities; each
    task's summed loss divided by N_i^beta, beta = 0.2 + 0.8 (e-1)/(E-1)."""
    weights = compromise_weights(ctx.sizes, ctx.epoch, ctx.epochs)
    return [(task, weights[task]) for task in _compromise_tasks(ctx)]


def compromise_reference(ctx: PlanContext) -> list[tuple[str, float]]:
    """The reference CODE's Gradient Compromise, reproduced to show the difference: each
    task's summed loss divided by its running per-epoch batch count to the power alpha
    (the annealed sampler's exponent), not by N_i^beta (STUDY.md, defect 3)."""
    tasks = _compromise_tasks(ctx)
    for task in tasks:
        ctx.batch_counts[task] = ctx.batch_counts.get(task, 0) + 1
    weights = reference_code_weights({t: ctx.batch_counts.get(t, 0) for t in ctx.sizes}, annealed_alpha(ctx.epoch, ctx.epochs))
    return [(task, weights[task]) for task in tasks]


def batches_per_update(t) -> int:
    """Micro-batches one update consumes under ``t`` (a TrainConfig)."""
    if t.update == "sampled":
        return t.accumulation
    if t.update == "each_task":
        return len(t.tasks) * t.accumulation
    return t.group_size


def updates_per_epoch(t) -> int:
    """Updates per epoch, so that every update rule sees ``batches_per_epoch`` batches."""
    return max(1, round(t.batches_per_epoch / batches_per_update(t)))


UPDATES = {
    "sampled": sampled,
    "each_task": each_task,
    "compromise": compromise,
    "compromise_reference": compromise_reference,
}
