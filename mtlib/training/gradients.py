"""The per-task gradient matrix: where multitask gradient methods get their input.

A combiner (:mod:`mtlib.training.combiners`) works on a matrix ``grads`` of shape (T, P):
one row per task, each the flattened gradient of that task's loss with respect to the P
shared parameters. This module is the plumbing around it: the parameters' ``.grad`` as views
of its rows (:func:`point_grads`), per-layer slices (:func:`param_segments`, GradVac per layer)
and the two operations every coefficient-space method needs (:func:`gram`, :func:`combine_rows`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

Segments = Sequence[tuple[int, int]]


def point_grads(params: Iterable[nn.Parameter], flat: torch.Tensor) -> None:
    """Make every parameter's ``.grad`` a view of its slice of ``flat`` (P,), in the
    parameters' order.

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
    for p, chunk in zip(params, flat.split([p.numel() for p in params])):
        if p.dtype != flat.dtype or p.device != flat.device:
            raise ValueError(f"parameter of {p.dtype} on {p.device} cannot take a gradient view of "
                             f"{flat.dtype} on {flat.device}")
        p.grad = chunk.view(p.shape)


_LAYER = re.compile(r"(.*?(?:^|\.)layers?\.\d+\.)")
_EMBEDDINGS = re.compile(r"(.*?(?:^|\.)embeddings\.)")


def _group_key(name: str) -> str:
    """The group of a parameter name under the "layer" rule of :func:`param_segments`."""
    for pattern in (_LAYER, _EMBEDDINGS):
        match = pattern.match(name)
        if match:
            return match.group(1)
    return name.rpartition(".")[0] + "." if "." in name else name


def param_segments(named_params: Iterable[tuple[str, nn.Parameter]], per_layer: bool) -> list[tuple[int, int]]:
    """Split the flat gradient of ``named_params`` into contiguous (start, end) slices
    (``train.granularity``, mtlib.settings.GRANULARITIES).

    Not ``per_layer`` ("whole"): one segment, (0, P).

    ``per_layer`` ("layer"): parameters are grouped by name:

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
    if not per_layer:
        return [(0, total)]
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


def segment_lengths(segments: Segments | None, size: int) -> list[int]:
    """The lengths of ``segments``, checked to cover 0..size in order without gaps."""
    segments = [(0, size)] if segments is None else list(segments)
    ends = [0] + [end for _, end in segments]
    if [start for start, _ in segments] != ends[:-1] or ends[-1] != size:
        raise ValueError(f"segments must cover 0..{size} in order without gaps, got {segments}")
    return [end - start for start, end in segments]


# Columns per block of the CPU Gram computation: T rows of 2 MiB stay in cache while the
# T(T+1)/2 dot products read them, so the matrix comes from memory once.
_GRAM_BLOCK = 1 << 19


def gram(grads: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Per-segment Gram matrices G[k] = g[k] g[k]^T: (S, T, T) in float64 for the T x T algebra.

    On a GPU, one matrix product per segment. On a CPU, blocks of columns and a dot product
    per pair of rows, summed in float64: a (T, P) x (P, T) sgemm packs its operands, and for
    3 x 22.6M it took 59 ms against 15 ms this way (2-core EPYC, benchmarks/bench_combiners.py).
    """
    if grads.device.type != "cpu":
        return torch.stack([chunk @ chunk.T for chunk in grads.split(lengths, dim=1)]).double()
    num_tasks = grads.shape[0]
    rows, cols = torch.triu_indices(num_tasks, num_tasks).tolist()
    result = torch.zeros(len(lengths), num_tasks, num_tasks, dtype=torch.float64)
    for k, segment in enumerate(grads.split(lengths, dim=1)):
        upper = torch.zeros(len(rows), dtype=torch.float64)
        for block in segment.split(_GRAM_BLOCK, dim=1):
            upper += torch.stack([torch.dot(block[i], block[j]) for i, j in zip(rows, cols)])
        result[k, rows, cols] = upper
        result[k, cols, rows] = upper
    return result


def combine_rows(coefficients: torch.Tensor, grads: torch.Tensor, lengths: list[int],
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """Per segment k, the rows ``coefficients[k] @ g[k]``: (S, R, T), (T, P) -> (R, P),
    written segment by segment into ``out`` (R, P) (a new tensor when None)."""
    if out is None:
        out = grads.new_empty(coefficients.shape[1], grads.shape[1])
    for c, chunk, rows in zip(coefficients, grads.split(lengths, dim=1), out.split(lengths, dim=1)):
        torch.mm(c.to(grads), chunk, out=rows)
    return out
