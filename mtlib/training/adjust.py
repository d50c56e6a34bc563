"""The SST adjustment matrix: a learned K x K matrix W between the frozen model's class
probabilities and the argmax (the report's last row of Table 2; K = 5 for SST).

    prediction = argmax_k (p W)_k,   p = softmax(model logits)   (N, K)

W is fitted on the TRAINING set's probabilities, the model frozen, by minimising the
cross-entropy of the logits p W, plus an optional L2 pull towards its start:

    L(W) = CE(p W, y) + l2 * ||W - W0||_F^2,   W0 = c I.

The start W0 = c I predicts exactly the model's own argmax for any c > 0; c is the single
scale that minimises CE(c p, y) (a one-parameter fit, like temperature scaling), so the
fit begins at the model's decisions at a sensible logit scale, not at near-uniform logits
(with c = 1, p W spans at most 1). L is convex in W; full-batch L-BFGS (float64) minimises
it. Nothing in the fit is random: the same probabilities give the same W.

Caveat: training-set probabilities come from a model fitted to those rows, so they are
more confident and more often right than dev ones; a W fitted on them may not transfer
(the report's dev score fell from .524 to .521 with it).

The reference code never saved W and then crashed (defect 7): :func:`save_adjustment`
writes it atomically as safetensors, with ``meta`` as JSON in the file's header.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from mtlib.data.encode import EncodedSplit, eval_batches
from mtlib.training.precision import autocast
from mtlib.io import atomic_path
from mtlib.tasks import TASKS

MAX_SCALE = 100.0  # c's bound: on perfectly separated probabilities CE(c p) falls forever


def _lbfgs(parameter: torch.Tensor, loss_fn, steps: int) -> None:
    optimizer = torch.optim.LBFGS([parameter], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimizer.step(closure)


def scaled_identity(probs: torch.Tensor, labels: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """c I with c in (0, MAX_SCALE] minimising CE(c p, y); its argmax is the model's."""
    p, y = probs.double(), labels.long()
    log_c = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _lbfgs(log_c, lambda: F.cross_entropy(p * log_c.clamp(max=np.log(MAX_SCALE)).exp(), y), steps)
    c = float(log_c.detach().clamp(max=np.log(MAX_SCALE)).exp())
    return c * torch.eye(p.shape[1])


def fit_adjustment(probs: torch.Tensor, labels: torch.Tensor, steps: int = 100, l2: float = 1e-3,
                   scale: float | None = None) -> torch.Tensor:
    """W (K, K) minimising CE(p W, y) + l2 ||W - W0||^2 from W0 = c I (see the module docstring).

    ``probs`` (N, K) rows of class probabilities, ``labels`` (N,) in 0..K-1; ``steps``:
    L-BFGS iterations (0 returns W0); ``scale``: c, or None to fit it."""
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"expected probs (N, K) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    start = scaled_identity(probs, labels) if scale is None else scale * torch.eye(probs.shape[1])
    p, y, w0 = probs.double(), labels.long(), start.double()
    w = w0.clone().requires_grad_(True)
    if steps > 0:
        _lbfgs(w, lambda: F.cross_entropy(p @ w, y) + l2 * (w - w0).pow(2).sum(), steps)
    return w.detach().float()


def apply_adjustment(probs: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """Predicted labels (N,): argmax of p W."""
    return (probs.float() @ W.float()).argmax(-1)


def save_adjustment(path: str | Path, W: torch.Tensor, meta: dict) -> None:
    """``W`` as safetensors (key ``W``), ``meta`` as JSON in the header; atomic."""
    with atomic_path(path) as tmp:
        save_file({"W": W.detach().float().contiguous()}, str(tmp), metadata={"meta": json.dumps(meta)})


def load_adjustment(path: str | Path) -> tuple[torch.Tensor, dict]:
    with safe_open(str(path), framework="pt") as f:
        W, header = f.get_tensor("W"), f.metadata() or {}
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"{path}: the adjustment matrix must be square, got {tuple(W.shape)}")
    return W, json.loads(header.get("meta", "{}"))


@torch.no_grad()
def sst_probabilities(model, split: EncodedSplit, batch_size: int, pad_id: int, device: torch.device,
                      amp: str = "none") -> torch.Tensor:
    """(N, K) softmax of the model's logits for every row of ``split``, in row order (eval mode)."""
    if TASKS[split.task].num_outputs < 2:
        raise ValueError(f"sst_probabilities needs the sst split or another task with classes, got {split.task!r} "
                         "(its outputs are not classes)")
    was_training = model.training
    model.eval()
    probs = None
    for batch in eval_batches(split, batch_size, pad_id):
        with autocast(amp, device):
            logits = model(batch.to(device))
        if probs is None:
            probs = torch.zeros(len(split), logits.shape[-1])
        probs[torch.as_tensor(batch.index)] = logits.float().softmax(-1).cpu()
    model.train(was_training)
    return probs
