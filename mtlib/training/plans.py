"""Batch plans: which batches make up one optimiser update, and how each task's loss is weighted.

A batch plan (``train.plan``) is a function of :class:`PlanContext` returning a list of
``(task, weight)`` pairs: one training batch of ``task`` is drawn per pair and its loss is
multiplied by ``weight``. How the per-task gradients are then combined (summed, PCGrad,
GradVac) is the combiner's business (:mod:`mtlib.training.combiners`). What the loop needs
to know about a plan (the micro-batches one update consumes, whether every task has a batch
in every update, its constraints on the config) is in its settings,
:class:`mtlib.settings.PlanSettings`.

The Gradient Compromise (Pritsky, Somerville and Huynh 2023, the report's own method) lives
here whole: its task groups, its loss weights 1 / N_i^beta with the beta schedule, and the
public reference code's variant of the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mtlib.settings import plan_settings
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


def compromise_beta(epoch: int, epochs: int) -> float:
    """beta = 0.2 + 0.8 (e - 1) / (E - 1), e the 1-based epoch of E (Pritsky et al. 2023).

    With E = 1 the fraction is 0/0; the single epoch is the first, so beta = 0.2 (the
    public reference code crashed here, defect 6).
    """
    if epochs < 1 or not 1 <= epoch <= epochs:
        raise ValueError(f"epoch must be in 1..{epochs} (1-based), got {epoch}")
    if epochs == 1:
        return 0.2
    return 0.2 + 0.8 * (epoch - 1) / (epochs - 1)


def compromise_weights(sizes: dict[str, int], epoch: int, epochs: int) -> dict[str, float]:
    """Loss weight of each task, 1 / N_i^beta with N_i its training-set size (the report's rule)."""
    if any(n < 1 for n in sizes.values()):
        raise ValueError(f"training-set sizes must be positive, got {sizes}")
    beta = compromise_beta(epoch, epochs)
    return {task: 1.0 / float(n) ** beta for task, n in sizes.items()}


def compromise_adjusted(probs: dict[str, float], n: int) -> dict[str, float]:
    """Probabilities of the n - T extra batches of a group of n: p_b proportional to
    clip((p n - 1) / (n - T), 0, 1).

    One batch of each task is already in the group, so the extras supply the remaining
    p n - 1 expected batches of each task (the report writes n - 3 for its T = 3 tasks).
    ``probs`` are normalised first. If every adjusted probability is zero the unadjusted
    ones are used; with probabilities summing to 1 and n > T that cannot happen (some
    p_i >= 1/T > 1/n), so it is only a guard against dividing by zero.
    """
    num_tasks = len(probs)
    if n <= num_tasks:
        raise ValueError(f"a group with extra batches needs n > {num_tasks} tasks, got n = {n}")
    p = torch.tensor(list(probs.values()), dtype=torch.float64)
    if (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"task probabilities must be non-negative with a positive sum, got {probs}")
    p = p / p.sum()
    adjusted = ((p * n - 1) / (n - num_tasks)).clamp(0, 1)
    if adjusted.sum() <= 0:
        adjusted = p
    return dict(zip(probs, (adjusted / adjusted.sum()).tolist()))


def compromise_group(probs: dict[str, float], n: int, generator: torch.Generator) -> list[str]:
    """The tasks of the n batches of one Gradient Compromise update, in shuffled order.

    One batch of each task plus n - T drawn with replacement from
    :func:`compromise_adjusted`, shuffled with ``generator``. Requires n >= T.
    """
    tasks = list(probs)
    if n < len(tasks):
        raise ValueError(f"a group must hold at least one batch of each of the {len(tasks)} tasks, got n = {n}")
    group = list(tasks)
    if n > len(tasks):
        adjusted = compromise_adjusted(probs, n)
        weights = torch.tensor([adjusted[t] for t in tasks], dtype=torch.float64)
        draws = torch.multinomial(weights, n - len(tasks), replacement=True, generator=generator)
        group += [tasks[k] for k in draws.tolist()]
    return [group[k] for k in torch.randperm(n, generator=generator).tolist()]


def reference_code_weights(batch_counts: dict[str, int], alpha: float) -> dict[str, float]:
    """The public reference code's loss weights 1 / max(c_i, 1)^alpha, c_i task i's batches so far
    this epoch (:func:`compromise_reference`); NOT the report's rule, :func:`compromise_weights`."""
    return {task: 1.0 / float(max(c, 1)) ** alpha for task, c in batch_counts.items()}


def sampled(ctx: PlanContext) -> list[tuple[str, float]]:
    """k micro-batches whose tasks the sampler draws; their losses averaged (weight 1/k)."""
    return [(ctx.sampler.draw(ctx.epoch), 1.0 / ctx.accumulation) for _ in range(ctx.accumulation)]


def each_task(ctx: PlanContext) -> list[tuple[str, float]]:
    """k micro-batches of EVERY task, so each task has a gradient to combine (PCGrad, GradVac)."""
    return [(task, 1.0 / ctx.accumulation) for task in ctx.sizes for _ in range(ctx.accumulation)]


def _compromise_tasks(ctx: PlanContext) -> list[str]:
    return compromise_group(annealed(ctx.sizes, ctx.epoch, ctx.epochs), ctx.group_size, ctx.generator)


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


def compromise_then_sampled(ctx: PlanContext) -> list[tuple[str, float]]:
    """The report's own suggestion: Gradient Compromise while it learns fastest, then the
    configured sampler (annealed in the study). Epochs 1..ceil(E/2): :func:`compromise`;
    after: n micro-batches whose tasks the sampler draws, losses averaged, so every update
    consumes n batches in both phases. A task the sampler did not draw in an update has a
    zero gradient row, which the combiners leave alone (GradVac: the cosine is undefined)."""
    if ctx.epoch <= (ctx.epochs + 1) // 2:
        return compromise(ctx)
    return [(ctx.sampler.draw(ctx.epoch), 1.0 / ctx.group_size) for _ in range(ctx.group_size)]


PLANS = {  # train.plan -> the plan; its batches and constraints: mtlib.settings.PlanSettings
    "sampled": sampled,
    "each_task": each_task,
    "compromise": compromise,
    "compromise_reference": compromise_reference,
    "compromise_then_sampled": compromise_then_sampled,
}


def updates_per_epoch(t) -> int:
    """Updates per epoch, so that every batch plan sees ``batches_per_epoch`` batches."""
    return max(1, round(t.batches_per_epoch / plan_settings(t).batches))


def evaluation_interval(t) -> int:
    """Updates between validation evaluations: ``eval_every`` micro-batches rounded to whole
    updates (at least one), so runs under different batch plans are scored at about the same
    numbers of examples seen; once per epoch when ``eval_every`` is None."""
    if t.eval_every is None:
        return updates_per_epoch(t)
    return max(1, round(t.eval_every / plan_settings(t).batches))



def matched_micro_batches(match, t, sizes: dict[str, int]) -> int:
    """The micro-batches of its one task that a multitask run would draw under ``match``
    (``train.match_examples``, mtlib.settings.MatchSettings): ``match.sampler`` over
    ``match.tasks`` on the training-set ``sizes`` (as this run prepared them), replayed draw
    by draw as :func:`sampled` draws them, for this run's epochs, updates per epoch,
    accumulation and seed. A sampler's draws depend only on its seed and their number, so
    this is the count that run drew, seed by seed."""
    sampler = TaskSampler(match.sampler, {task: sizes[task] for task in match.tasks}, t.epochs, t.seed)
    per_epoch = updates_per_epoch(t)
    return sum(sampler.draw(update // per_epoch + 1) == match.task
               for update in range(t.epochs * per_epoch) for _ in range(t.accumulation))


def total_updates(t, sizes: dict[str, int], match=None) -> int:
    """The optimiser updates a run makes: ``epochs`` x :func:`updates_per_epoch`, or with
    ``match`` (a one-task run's MatchSettings) the updates that hold
    :func:`matched_micro_batches` of its task, rounded up to whole updates (at least one)."""
    if match is None:
        return t.epochs * updates_per_epoch(t)
    return max(1, math.ceil(matched_micro_batches(match, t, sizes) / plan_settings(t).batches))
