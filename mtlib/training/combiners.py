"""Gradient combiners: how the per-task gradients of the shared parameters become one.

Every combiner takes the (T, P) matrix of per-task gradients (:mod:`mtlib.training.gradients`)
and follows one contract for the training loop (its name, knobs and whether it needs the
tasks' gradients apart are its settings', in mtlib.settings):

* ``init_state(num_tasks, num_segments) -> state``: a dict of tensors (safetensors-ready);
* ``combine(grads, state, generator, segments, out=None) -> (combined (P,), new state)``,
  the result written into ``out`` when given; randomness only from ``generator``;
* ``project(grads, state, generator, segments) -> (rows (T, P), new state)``: the per-task
  gradients before the sum (for inspection and tests).

PCGrad and GradVac run in coefficient space: every step of either adds a multiple of an
ORIGINAL task gradient g_j to g_i', so each g_i' stays a linear combination
g_i' = sum_k A[i, k] g_k, and every dot product they need is a quadratic form of the Gram
matrix G = g g^T. After one Gram matrix (O(T^2 P)) the algorithms are T x T algebra, and
the result is one (T x P) product. The inputs are never modified.
"""
from __future__ import annotations

import torch

from mtlib.training.gradients import Segments, combine_rows, gram, segment_lengths


def _others_in_random_order(i: int, num_tasks: int, generator: torch.Generator) -> list[int]:
    others = [j for j in range(num_tasks) if j != i]
    return [others[k] for k in torch.randperm(len(others), generator=generator).tolist()]


class Sum:
    """Plain multitask learning: g = sum_i g_i. No state."""

    def init_state(self, num_tasks: int, num_segments: int = 1) -> dict[str, torch.Tensor]:
        return {}

    def project(self, grads, state, generator, segments=None):
        return grads.clone(), {}

    def combine(self, grads: torch.Tensor, state: dict[str, torch.Tensor], generator: torch.Generator,
                segments: Segments | None = None, out: torch.Tensor | None = None):
        return (torch.sum(grads, 0, out=out) if out is not None else grads.sum(0)), {}


def _pcgrad_coefficients(gram_matrix: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad's A (T, T): g_i' . g_j = (A G)[i, j], ||g_j||^2 = G[j, j]."""
    num_tasks = gram_matrix.shape[0]
    coefficients = torch.eye(num_tasks, dtype=gram_matrix.dtype)
    for i in range(num_tasks):
        for j in _others_in_random_order(i, num_tasks, generator):
            dot = coefficients[i] @ gram_matrix[:, j]
            if dot < 0 and gram_matrix[j, j] > 0:
                coefficients[i, j] -= dot / gram_matrix[j, j]
    return coefficients


class _Coefficients:
    """PCGrad's and GradVac's plumbing: ``_coefficients`` gives A (S, T, T), the new state and
    the segment lengths; the projected rows are A g per segment, the update (1^T A) g."""

    def init_state(self, num_tasks: int, num_segments: int = 1) -> dict[str, torch.Tensor]:
        return {}

    def project(self, grads, state, generator, segments=None):
        coefficients, new_state, lengths = self._coefficients(grads, state, generator, segments)
        return combine_rows(coefficients, grads, lengths), new_state

    def combine(self, grads, state, generator, segments=None, out=None):
        coefficients, new_state, lengths = self._coefficients(grads, state, generator, segments)
        rows = None if out is None else out[None]
        return combine_rows(coefficients.sum(1, keepdim=True), grads, lengths, rows)[0], new_state


class PCGrad(_Coefficients):
    """PCGrad: Yu et al. 2020, "Gradient Surgery for Multi-Task Learning" (NeurIPS), Algorithm 1.

    For each task i, g_i' starts as g_i; for every other task j, in a random order, if
    g_i' . g_j < 0 then

        g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j

    with g_j the ORIGINAL gradient of task j (a zero g_j is skipped); the update is sum_i g_i'.
    Whole-model only: ``segments`` are ignored. No state.

    Properties: ||g_i'|| <= ||g_i||; the last task j that g_i' was checked against satisfies
    g_i' . g_j >= 0; with two conflicting tasks g_1' . g_2' = -g_1.g_2 (1 - cos^2) >= 0, so two
    projected gradients never conflict. With three or more tasks a later projection can undo
    an earlier one, and the result depends on the order.
    """

    def _coefficients(self, grads, state, generator, segments):
        lengths = [grads.shape[1]]
        return _pcgrad_coefficients(gram(grads, lengths)[0].cpu(), generator)[None], {}, lengths


def _gradvac_coefficients(gram_matrix: torch.Tensor, ema: torch.Tensor, beta: float,
                          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """GradVac per segment: Gram (S, T, T) -> A (S, T, T) with g_i'[k] = sum_m A[k, i, m] g_m[k],
    and the new phi_hat (S, T, T)."""
    num_segments, num_tasks, _ = gram_matrix.shape
    new_ema = ema.to(dtype=gram_matrix.dtype, copy=True)
    coefficients = torch.eye(num_tasks, dtype=gram_matrix.dtype).repeat(num_segments, 1, 1)
    eps = torch.finfo(torch.float32).eps
    norms = torch.diagonal(gram_matrix, dim1=1, dim2=2).clamp_min(0).sqrt()  # (S, T)
    for i in range(num_tasks):
        for j in _others_in_random_order(i, num_tasks, generator):
            a_i = coefficients[:, i]                                          # (S, T)
            gram_a = torch.einsum("skm,sm->sk", gram_matrix, a_i)            # (S, T): G a_i
            norm_i = (a_i * gram_a).sum(1).clamp_min(0).sqrt()               # ||g_i'|| per segment
            norm_j = norms[:, j]
            defined = (norm_i > 0) & (norm_j > 0)
            target = ema[:, i, j].to(gram_matrix.dtype)
            phi = gram_a[:, j] / norm_i.clamp_min(eps) / norm_j.clamp_min(eps)
            phi = torch.where(defined, phi.clamp(-1.0, 1.0), target)
            sin_phi, sin_target = (1 - phi**2).sqrt(), (1 - target**2).clamp_min(eps).sqrt()
            w = norm_i / norm_j.clamp_min(eps) * (target * sin_phi - phi * sin_target) / sin_target
            coefficients[:, i, j] += torch.where(defined & (phi < target), w, 0.0)
            new_ema[:, i, j] = (1 - beta) * target + beta * phi
    return coefficients, new_ema


class GradVac(_Coefficients):
    """GradVac: Wang, Tsvetkov, Firat and Cao 2020, "Gradient Vaccine: Investigating and
    Improving Multi-task Optimization in Massively Multilingual Models" (ICLR 2021), Algorithm 1.

    State ``{"ema": phi_hat (S, T, T)}``, zeros at the start. For each task i, g_i' starts as
    g_i; for every other task j, in a random order, and for every segment k (the whole vector,
    or one per layer):

        phi = cos(g_i'[k], g_j[k]),   phi_hat = phi_hat[k, i, j]
        if phi < phi_hat:
            g_i'[k] <- g_i'[k] + w g_j[k],
            w = ||g_i'[k]|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                / (||g_j[k]|| sqrt(1 - phi_hat^2))

    which makes cos(g_i'[k], g_j[k]) = phi_hat exactly; the update is sum_i g_i'. The moving
    average is updated on EVERY visit of the pair, violated or not,
    phi_hat <- (1 - beta) phi_hat + beta phi (the public reference code updated it only when
    violated, so it could only drift down). Where g_i'[k] or g_j[k] is zero the cosine is
    undefined: that segment is left alone and its phi_hat kept. ``beta`` is the average's
    rate, 0.01 in the paper.

    With two tasks each cos(g_i', g_j) ends at least at phi_hat_ij. With three or more, a
    later task's vaccine can move g_i' away from an earlier one; what holds is that g_i'
    meets the target of the last task j it visited.
    """

    def __init__(self, beta: float):
        self.beta = beta  # in (0, 1], checked by mtlib.settings.GradVacSettings

    def init_state(self, num_tasks: int, num_segments: int = 1) -> dict[str, torch.Tensor]:
        return {"ema": torch.zeros(num_segments, num_tasks, num_tasks)}

    def _coefficients(self, grads, state, generator, segments):
        ema, (num_tasks, size) = state["ema"], grads.shape
        lengths = segment_lengths(segments, size)
        if ema.shape != (len(lengths), num_tasks, num_tasks):
            raise ValueError(f"ema must have shape ({len(lengths)}, {num_tasks}, {num_tasks}), got {tuple(ema.shape)}")
        coefficients, new_ema = _gradvac_coefficients(gram(grads, lengths).cpu(), ema.detach().cpu(), self.beta,
                                                      generator)
        return coefficients, {"ema": new_ema.to(device=grads.device, dtype=ema.dtype)}, lengths


COMBINERS = {"sum": Sum, "pcgrad": PCGrad, "gradvac": GradVac}  # names, knobs and checks: mtlib.settings


def build_combiner(settings):
    """The combiner ``settings`` describe (mtlib.settings.COMBINERS: SumSettings, GradVacSettings, ...)."""
    return COMBINERS[settings.name](**vars(settings))
