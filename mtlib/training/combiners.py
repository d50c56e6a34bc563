"""Gradient algebra for multitask learning.

Everything here works on a per-task gradient matrix ``grads`` of shape (T, P): one row per
task, each the flattened gradient of that task's loss with respect to the P shared
parameters. The functions are pure (inputs are never modified) and model-agnostic; any
randomness comes from an explicit ``torch.Generator``.

Four parts:

* plumbing: :func:`flat_grad` copies the parameters' gradients into one flat vector,
  :func:`point_grads` makes their ``.grad`` views of a flat buffer (so backward writes
  straight into a row of the matrix, and a combined vector becomes the gradient without
  a copy), :func:`param_segments` splits the flat vector into per-layer slices;
* combiners: :func:`sum_grads`, :func:`pcgrad`, :func:`gradvac` turn (T, P) into (P,)
  (:func:`pcgrad_project` and :func:`gradvac_project` return the per-task rows before the
  sum);
* ``COMBINERS``: the same three behind one contract for the training loop,
  ``init_state(num_tasks, num_segments) -> state`` and
  ``combine(grads, state, generator, segments, out=None) -> (combined, new_state)``, where
  the state is a dict of tensors (so it can be saved with safetensors) and ``out``, a
  (P,) buffer, receives the result when given;
* Gradient Compromise helpers (Pritsky, Somerville and Huynh 2023): the loss weights
  1 / N_i^beta and the task group of one optimiser update.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

Segments = Sequence[tuple[int, int]]

# ---------------------------------------------------------------------------- plumbing


def flat_grad(params: Iterable[nn.Parameter]) -> torch.Tensor:
    """Concatenate the parameters' ``.grad`` into one float32 vector (P,), a detached copy.

    A parameter without a gradient contributes zeros, so the layout depends only on the
    parameters, never on which of them a task's loss reached.
    """
    parts = [
        p.grad.detach().reshape(-1).float()
        if p.grad is not None
        else torch.zeros(p.numel(), device=p.device)
        for p in params
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


def point_grads(params: Iterable[nn.Parameter], flat: torch.Tensor) -> None:
    """Make every parameter's ``.grad`` a view of its slice of ``flat`` (P,), in
    :func:`flat_grad`'s layout.

    Backward then accumulates in place into ``flat`` (autograd adds into an existing
    ``.grad``), so a task's gradient lands in its row of the (T, P) matrix with no copy, and
    pointing the parameters at a combined vector hands it to the optimiser with no copy
    either. ``flat`` must be contiguous, with the parameters' dtype and device; whatever it
    holds becomes the current gradient.
    """
    params = list(params)
    total = sum(p.numel() for p in params)
    if flat.shape != (total,) or not flat.is_contiguous():
        raise ValueError(f"expected a contiguous flat buffer of shape ({total},), got {tuple(flat.shape)}")
    start = 0
    for p in params:
        if p.dtype != flat.dtype or p.device != flat.device:
            raise ValueError(f"parameter of {p.dtype} on {p.device} cannot take a gradient view of "
                             f"{flat.dtype} on {flat.device}")
        end = start + p.numel()
        p.grad = flat[start:end].view(p.shape)
        start = end


_LAYER = re.compile(r"(.*?(?:^|\.)layers?\.\d+\.)")
_EMBEDDINGS = re.compile(r"(.*?(?:^|\.)embeddings\.)")


def _group_key(name: str) -> str:
    """The group of a parameter name under the "layer" rule of :func:`param_segments`."""
    for pattern in (_LAYER, _EMBEDDINGS):
        match = pattern.match(name)
        if match:
            return match.group(1)
    return name.rpartition(".")[0] + "." if "." in name else name


def param_segments(
    named_params: Iterable[tuple[str, nn.Parameter]], granularity: str
) -> list[tuple[int, int]]:
    """Split the flat gradient of ``named_params`` into contiguous (start, end) slices.

    ``"whole"``: one segment, (0, P).

    ``"layer"``: parameters are grouped by name:

    * a name containing ``layer.<k>.`` (or ``layers.<k>.``) belongs to the group named by
      its prefix up to and including that index, e.g. ``encoder.layer.3.``;
    * otherwise a name containing ``embeddings.`` belongs to the group of its prefix up to
      and including ``embeddings.`` (all of BERT's embeddings are one group);
    * any other parameter belongs to its owning module, e.g. ``pooler.dense.weight`` and
      ``pooler.dense.bias`` form the group ``pooler.dense.``.

    Consecutive parameters of the same group form one segment (a segment has to be one
    slice of the flat vector), so the segments cover 0..P in order without gaps.
    """
    named_params = list(named_params)
    total = sum(p.numel() for _, p in named_params)
    if granularity == "whole":
        return [(0, total)]
    if granularity != "layer":
        raise ValueError(f"unknown granularity {granularity!r}; choose 'whole' or 'layer'")
    segments: list[tuple[int, int]] = []
    previous, start = None, 0
    for name, p in named_params:
        key, end = _group_key(name), start + p.numel()
        if segments and key == previous:
            segments[-1] = (segments[-1][0], end)
        else:
            segments.append((start, end))
        previous, start = key, end
    return segments


def _segment_lengths(segments: Segments | None, size: int) -> list[int]:
    """The lengths of ``segments``, checked to cover 0..size in order without gaps."""
    segments = [(0, size)] if segments is None else list(segments)
    ends = [0] + [end for _, end in segments]
    if [start for start, _ in segments] != ends[:-1] or ends[-1] != size:
        raise ValueError(f"segments must cover 0..{size} in order without gaps, got {segments}")
    return [end - start for start, end in segments]


def _segment_sum(x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Sum a (P,) vector within each segment: (S,)."""
    return torch.stack([chunk.sum() for chunk in x.split(lengths)])


def _others_in_random_order(i: int, num_tasks: int, generator: torch.Generator) -> list[int]:
    others = [j for j in range(num_tasks) if j != i]
    return [others[k] for k in torch.randperm(len(others), generator=generator).tolist()]


# ---------------------------------------------------------------------------- combiners


def sum_grads(grads: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """g = sum_i g_i: plain multitask learning. (T, P) -> (P,), into ``out`` when given."""
    return torch.sum(grads, 0, out=out) if out is not None else grads.sum(0)


# Columns per block of the CPU Gram computation: T rows of 2 MiB stay in cache while the
# T(T+1)/2 dot products read them, so the matrix comes from memory once.
_GRAM_BLOCK = 1 << 19


def _gram(grads: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Per-segment Gram matrices G[k] = g[k] g[k]^T: (S, T, T) in float64 for the T x T algebra.

    On a GPU, one matrix product per segment. On a CPU, blocks of columns and a dot product
    per pair of rows, summed in float64: a (T, P) x (P, T) sgemm packs its operands, and for
    3 x 22.6M it took 59 ms against 15 ms this way (2-core EPYC, benchmarks/bench_combiners.py).
    """
    if grads.device.type != "cpu":
        return torch.stack([chunk @ chunk.T for chunk in grads.split(lengths, dim=1)]).double()
    num_tasks = grads.shape[0]
    rows, cols = torch.triu_indices(num_tasks, num_tasks).tolist()
    gram = torch.zeros(len(lengths), num_tasks, num_tasks, dtype=torch.float64)
    for k, segment in enumerate(grads.split(lengths, dim=1)):
        upper = torch.zeros(len(rows), dtype=torch.float64)
        for block in segment.split(_GRAM_BLOCK, dim=1):
            upper += torch.stack([torch.dot(block[i], block[j]) for i, j in zip(rows, cols)])
        gram[k, rows, cols] = upper
        gram[k, cols, rows] = upper
    return gram


def _combine_rows(coefficients: torch.Tensor, grads: torch.Tensor, lengths: list[int],
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Per segment k, the rows ``coefficients[k] @ g[k]``: (S, R, T), (T, P) -> (R, P),
    written segment by segment into ``out`` (R, P) (a new tensor when None)."""
    if out is None:
        out = grads.new_empty(coefficients.shape[1], grads.shape[1])
    start = 0
    for c, chunk in zip(coefficients, grads.split(lengths, dim=1)):
        end = start + chunk.shape[1]
        torch.mm(c.to(grads), chunk, out=out[:, start:end])
        start = end
    return out


def pcgrad_coefficients(gram: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad in coefficient space: A (T, T) with g_i' = sum_k A[i, k] g_k.

    Every projection adds a multiple of an original g_j to g_i', so g_i' stays a linear
    combination of the original gradients, and every dot product it needs is a row of
    A times the Gram matrix G = g g^T: g_i' . g_j = (A G)[i, j], ||g_j||^2 = G[j, j]. The
    algorithm is therefore T x T algebra after one (T, P) x (P, T) product.
    """
    num_tasks = gram.shape[0]
    coefficients = torch.eye(num_tasks, dtype=gram.dtype)
    for i in range(num_tasks):
        for j in _others_in_random_order(i, num_tasks, generator):
            dot = coefficients[i] @ gram[:, j]
            if dot < 0 and gram[j, j] > 0:
                coefficients[i, j] -= dot / gram[j, j]
    return coefficients


def pcgrad_project(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The projected task gradients g_i' of PCGrad, (T, P) -> (T, P).

    Yu et al. 2020, "Gradient Surgery for Multi-Task Learning" (NeurIPS), Algorithm 1: for
    each task i, g_i' starts as g_i; for every other task j, in a random order drawn from
    ``generator``, if g_i' . g_j < 0 then

        g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j

    with g_j the ORIGINAL gradient of task j. A zero g_j is skipped. Computed in
    coefficient space (:func:`pcgrad_coefficients`), the same algebra with O(T^2 P) work.

    Properties: ||g_i'|| <= ||g_i|| (each step removes a component); the last task j that
    g_i' was checked against satisfies g_i' . g_j >= 0, so every g_i' agrees with at least
    one other task; with two conflicting tasks g_1' . g_2' = -g_1.g_2 (1 - cos^2) >= 0, so
    with two tasks the projected gradients never conflict. With three or more tasks a later projection can
    undo an earlier one, so g_i' . g_j < 0 is possible, and the result depends on the order.
    """
    coefficients = pcgrad_coefficients(_gram(grads, [grads.shape[1]])[0].cpu(), generator)
    return _combine_rows(coefficients[None], grads, [grads.shape[1]])


def pcgrad(grads: torch.Tensor, generator: torch.Generator, out: torch.Tensor | None = None) -> torch.Tensor:
    """PCGrad (Yu et al. 2020): sum_i g_i' of :func:`pcgrad_project`. (T, P) -> (P,), into
    ``out`` when given."""
    coefficients = pcgrad_coefficients(_gram(grads, [grads.shape[1]])[0].cpu(), generator)
    rows = None if out is None else out[None]
    return _combine_rows(coefficients.sum(0)[None, None], grads, [grads.shape[1]], rows)[0]


def gradvac_init(num_tasks: int, num_segments: int = 1) -> torch.Tensor:
    """GradVac's initial cosine targets phi_hat: zeros of shape (S, T, T)."""
    return torch.zeros(num_segments, num_tasks, num_tasks)


def gradvac_coefficients(gram: torch.Tensor, ema: torch.Tensor, beta: float,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """GradVac in coefficient space, per segment: (S, T, T) Gram -> A (S, T, T) with
    g_i'[k] = sum_m A[k, i, m] g_m[k], and the new phi_hat (S, T, T).

    As for PCGrad, each vaccine adds a multiple of an original g_j, so every norm and
    cosine is a quadratic form of the segment's Gram matrix (see :func:`gradvac_project`).
    """
    num_segments, num_tasks, _ = gram.shape
    new_ema = ema.to(dtype=gram.dtype, copy=True)
    coefficients = torch.eye(num_tasks, dtype=gram.dtype).repeat(num_segments, 1, 1)
    eps = torch.finfo(torch.float32).eps
    norms = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(0).sqrt()  # (S, T)
    for i in range(num_tasks):
        for j in _others_in_random_order(i, num_tasks, generator):
            a_i = coefficients[:, i]                                      # (S, T)
            gram_a = torch.einsum("skm,sm->sk", gram, a_i)               # (S, T): G a_i
            norm_i = (a_i * gram_a).sum(1).clamp_min(0).sqrt()           # ||g_i'|| per segment
            norm_j = norms[:, j]
            defined = (norm_i > 0) & (norm_j > 0)
            target = ema[:, i, j].to(gram.dtype)
            phi = gram_a[:, j] / norm_i.clamp_min(eps) / norm_j.clamp_min(eps)
            phi = torch.where(defined, phi.clamp(-1.0, 1.0), target)
            sin_phi, sin_target = (1 - phi**2).sqrt(), (1 - target**2).clamp_min(eps).sqrt()
            w = norm_i / norm_j.clamp_min(eps) * (target * sin_phi - phi * sin_target) / sin_target
            coefficients[:, i, j] += torch.where(defined & (phi < target), w, 0.0)
            new_ema[:, i, j] = (1 - beta) * target + beta * phi
    return coefficients, new_ema


def gradvac_project(
    grads: torch.Tensor,
    ema: torch.Tensor,
    beta: float,
    generator: torch.Generator,
    segments: Segments | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The vaccinated task gradients g_i' of GradVac and the new phi_hat.
    (T, P), (S, T, T) -> (T, P), (S, T, T).

    Wang, Tsvetkov, Firat and Cao 2020, "Gradient Vaccine: Investigating and Improving
    Multi-task Optimization in Massively Multilingual Models" (ICLR 2021), Algorithm 1.
    For each task i, g_i' starts as g_i; for every other task j, in a random order drawn
    from ``generator``, and for every segment k (``segments``: (start, end) slices covering
    0..P, default one for the whole vector):

        phi = cos(g_i'[k], g_j[k]),   phi_hat = phi_hat[k, i, j]
        if phi < phi_hat:
            g_i'[k] <- g_i'[k] + w g_j[k],
            w = ||g_i'[k]|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                / (||g_j[k]|| sqrt(1 - phi_hat^2))

    which makes cos(g_i'[k], g_j[k]) = phi_hat exactly (with u = g_j / ||g_j||, g_i' has
    components ||g_i'|| phi along u and ||g_i'|| sqrt(1 - phi^2) across it; adding w g_j
    turns the first into ||g_i'|| phi_hat sqrt(1 - phi^2) / sqrt(1 - phi_hat^2), and the
    ratio of the two components is then phi_hat / sqrt(1 - phi_hat^2)). The moving average
    is updated on EVERY visit of the pair, violated or not:

        phi_hat[k, i, j] <- (1 - beta) phi_hat[k, i, j] + beta phi

    (the public reference code updated it only when violated, so it could only drift
    down). Where g_i'[k] or g_j[k] is zero the cosine is undefined: that segment is left
    alone and its phi_hat kept. The input ``ema`` is not modified; the new one is on
    ``grads``' device. Computed in coefficient space (:func:`gradvac_coefficients`): one
    Gram matrix per segment, then T x T algebra.

    With two tasks each cos(g_i', g_j) ends at least at phi_hat_ij. With three or more, a
    later task's vaccine can move g_i' away from an earlier one; what holds is that g_i'
    meets the target of the last task j it visited.
    """
    coefficients, new_ema, lengths = _gradvac(grads, ema, beta, generator, segments)
    return _combine_rows(coefficients, grads, lengths), new_ema


def _gradvac(grads, ema, beta, generator, segments):
    num_tasks, size = grads.shape
    lengths = _segment_lengths(segments, size)
    if ema.shape != (len(lengths), num_tasks, num_tasks):
        raise ValueError(f"ema must have shape ({len(lengths)}, {num_tasks}, {num_tasks}), got {tuple(ema.shape)}")
    gram = _gram(grads, lengths).cpu()
    coefficients, new_ema = gradvac_coefficients(gram, ema.detach().cpu(), beta, generator)
    return coefficients, new_ema.to(device=grads.device, dtype=ema.dtype), lengths


def gradvac(
    grads: torch.Tensor,
    ema: torch.Tensor,
    beta: float,
    generator: torch.Generator,
    segments: Segments | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GradVac (Wang et al. 2020, ICLR 2021): (sum_i g_i', new phi_hat) of :func:`gradvac_project`.
    (T, P), (S, T, T) -> (P,), (S, T, T); the first into ``out`` when given.
    """
    coefficients, new_ema, lengths = _gradvac(grads, ema, beta, generator, segments)
    rows = None if out is None else out[None]
    return _combine_rows(coefficients.sum(1, keepdim=True), grads, lengths, rows)[0], new_ema


# ---------------------------------------------------------------------------- registry


class Sum:
    """Plain multitask learning: the task gradients are added. No state."""

    def init_state(self, num_tasks: int, num_segments: int = 1) -> dict[str, torch.Tensor]:
        return {}  # stateless (PCGrad inherits this)

    def combine(
        self, grads: torch.Tensor, state: dict[str, torch.Tensor], generator: torch.Generator,
        segments: Segments | None = None, out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return sum_grads(grads, out), {}


class PCGrad(Sum):
    """PCGrad (Yu et al. 2020) on the whole gradient; ``segments`` are ignored. No state."""

    def combine(
        self, grads: torch.Tensor, state: dict[str, torch.Tensor], generator: torch.Generator,
        segments: Segments | None = None, out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return pcgrad(grads, generator, out), {}


class GradVac:
    """GradVac (Wang et al. 2020, ICLR 2021); state ``{"ema": phi_hat (S, T, T)}``.

    ``beta`` is the moving average's rate, 0.01 in the paper.
    """

    def __init__(self, beta: float = 0.01):
        if not 0 < beta <= 1:
            raise ValueError(f"GradVac beta must be in (0, 1], got {beta}")
        self.beta = beta

    def init_state(self, num_tasks: int, num_segments: int = 1) -> dict[str, torch.Tensor]:
        return {"ema": gradvac_init(num_tasks, num_segments)}

    def combine(
        self, grads: torch.Tensor, state: dict[str, torch.Tensor], generator: torch.Generator,
        segments: Segments | None = None, out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        combined, ema = gradvac(grads, state["ema"], self.beta, generator, segments, out)
        return combined, {"ema": ema}


COMBINERS = {"sum": Sum, "pcgrad": PCGrad, "gradvac": GradVac}


def get_combiner(name: str, **knobs):
    """``COMBINERS[name](**knobs)``; an unknown name raises ValueError with the valid ones."""
    try:
        cls = COMBINERS[name]
    except KeyError:
        raise ValueError(f"unknown combiner {name!r}; choose one of {sorted(COMBINERS)}") from None
    return cls(**knobs)


# ---------------------------------------------------------------------------- Gradient Compromise


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
    """The public reference code's Gradient Compromise loss weights: 1 / max(c_i, 1)^alpha.

    c_i is the running count of task i's batches so far in the epoch and alpha the
    annealed sampler's exponent. This reproduces the code (defect 3 of the study), NOT the
    report, whose rule is :func:`compromise_weights`; it exists only to compare the two.
    """
    return {task: 1.0 / float(max(c, 1)) ** alpha for task, c in batch_counts.items()}
