"""Projected attention layers (PALs) inside a Hugging Face ``BertModel``.

Stickland and Murray 2019, "BERT and PALs: Projected Attention Layers for Efficient
Adaptation in Multi-Task Learning". For task t and layer l,

    PAL_t(h) = V_D^t g_l^t(V_E^t h)

where h is the layer input, V_E^t (hidden -> d) and V_D^t (d -> hidden) are shared by all
layers of task t, and g_l^t is a multi-head self-attention inside the d-dimensional space
with its own queries, keys and values per layer and task (no output matrix: V_D plays
that role). d = num_heads * head_dim (Stickland and Murray: d = 204; the report: 12
heads of dimension 11). Where its output enters the layer (``placement``):

* ``output`` (the default, as in the authors' reference code): beside the feed-forward
  block, at the layer's output LayerNorm: ``LN(FFN(a) + a + PAL_t(h))`` with
  ``a = LN(h + SA(h))``. The paper's shorthand ``LN(h + SA(h) + PAL(h))`` hides this.
* ``attention``: at the attention sub-layer's LayerNorm, ``a = LN(h + SA(h) + PAL_t(h))``,
  so the PAL's output then passes through the feed-forward block.

Nothing of transformers is copied or edited: forward pre-hooks on each ``BertLayer``
(record its input h) and on the sub-module whose LayerNorm takes the sum (``BertOutput``
computes ``LayerNorm(dropout(dense(x)) + input_tensor)`` with ``input_tensor = a``;
``BertSelfOutput`` the same with ``input_tensor = h``) replace ``input_tensor`` by
``input_tensor + PAL_t(h)``. A pre-hook on the ``BertModel`` records the 2-D attention mask
of each forward so the PAL attention ignores padding. The PAL parameters live in a
separate :class:`PalBank`, so the BERT state_dict keys are untouched and an encoder
checkpoint without PALs still loads.

Routing: the task of the batch is set by ``with bank.route(task): bert(...)``. Outside
any route, or for a task without PALs, the hooks change nothing.

Initialisation ("no influence"): V_D = 0 and V_E, queries, keys and values random, so a
freshly added PAL leaves the outputs exactly unchanged yet learns. The report set BOTH
V_E and V_D to zero; then g(V_E h) = 0 and every PAL gradient is zero forever.
"""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from mtlib.settings import PalSettings


class LowRankAttention(nn.Module):
    """g_l^t: multi-head self-attention in the projected d-dimensional space."""

    def __init__(self, num_heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        d = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, n, T, hd)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d); mask: (B, T), true (or 1) at real tokens, or None for no padding."""
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, n, T, T)
        if mask is not None:
            # The dtype's minimum rather than -inf: a row with no real key stays finite,
            # so V_D = 0 still gives exactly 0 there.
            keep = mask.bool()[:, None, None, :]  # (B, 1, 1, T)
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        probs = self.dropout(scores.softmax(dim=-1))
        out = probs.to(v.dtype) @ v  # (B, n, T, hd)
        return out.transpose(1, 2).flatten(2)  # (B, T, d)


class TaskPal(nn.Module):
    """One task's PALs: V_E and V_D shared across layers, one g_l per layer."""

    def __init__(self, hidden_size: int, num_layers: int, num_heads: int, head_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        d = num_heads * head_dim
        self.V_E = nn.Linear(hidden_size, d, bias=False)
        self.V_D = nn.Linear(d, hidden_size, bias=False)
        self.layers = nn.ModuleList(LowRankAttention(num_heads, head_dim, dropout) for _ in range(num_layers))

    def reset_parameters(self, std: float, generator: torch.Generator) -> None:
        """No-influence start: V_D = 0; V_E and attention weights ~ N(0, std^2); biases 0."""
        nn.init.normal_(self.V_E.weight, std=std, generator=generator)
        nn.init.zeros_(self.V_D.weight)
        for g in self.layers:
            for lin in (g.query, g.key, g.value):
                nn.init.normal_(lin.weight, std=std, generator=generator)
                nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor, layer: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        """PAL_t(h) = V_D g_l(V_E h) for layer index ``layer``; h: (B, T, hidden)."""
        return self.V_D(self.layers[layer](self.V_E(h), mask))


class PalBank(nn.Module):
    """Task -> :class:`TaskPal`, plus the routing state the hooks read.

    Hold it as a submodule of the multitask model (its keys then sit beside, not inside,
    the BERT keys)."""

    def __init__(self, tasks: list[str], hidden_size: int, num_layers: int, num_heads: int,
                 head_dim: int, dropout: float = 0.0, placement: str = "output"):
        super().__init__()
        self.num_layers, self.placement = num_layers, placement
        self._layer_inputs: dict[int, torch.Tensor] = {}
        self.pals = nn.ModuleDict({t: TaskPal(hidden_size, num_layers, num_heads, head_dim, dropout) for t in tasks})
        self.active_task: str | None = None
        self._mask: torch.Tensor | None = None
        self._in_forward = False
        self._handles: list[RemovableHandle] = []

    @contextlib.contextmanager
    def route(self, task: str | None) -> Iterator[None]:
        """Within the block, every BERT forward adds ``task``'s PALs (none for an unknown task)."""
        previous, self.active_task = self.active_task, task
        try:
            yield
        finally:
            self.active_task = previous

    def attach(self, bert: nn.Module) -> None:
        """Install the hooks on ``bert`` (a transformers ``BertModel``)."""
        layers = bert.encoder.layer
        if len(layers) != self.num_layers:
            raise ValueError(f"the bank has PALs for {self.num_layers} layers, the model has {len(layers)}")
        if self._handles:
            raise RuntimeError("this PalBank is already attached; call detach() first")
        self._handles = [bert.register_forward_pre_hook(self._record_mask, with_kwargs=True),
                         bert.register_forward_hook(self._forget_mask, always_call=True)]
        for index, layer in enumerate(layers):
            # Partials of bound methods, not closures, so copy.deepcopy of a model that
            # holds both BERT and the bank rebinds the hooks to the copied bank.
            self._handles.append(layer.register_forward_pre_hook(functools.partial(self._record_input, index),
                                                                 with_kwargs=True))
            target = PLACEMENTS[self.placement](layer)
            self._handles.append(target.register_forward_pre_hook(functools.partial(self._add_pal, index),
                                                                  with_kwargs=True))

    def detach(self) -> None:
        """Remove the hooks; the model runs as if it had no PALs."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _active(self) -> TaskPal | None:
        return self.pals[self.active_task] if self.active_task in self.pals else None

    def _record_mask(self, bert: nn.Module, args: tuple, kwargs: dict) -> None:
        # BertModel.forward(input_ids, attention_mask, ...): the mask may come either way.
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is not None and mask.dim() != 2:
            raise ValueError(f"PALs need a (batch, seq) attention mask, got shape {tuple(mask.shape)}")
        checkpointing = any(getattr(layer, "gradient_checkpointing", False) for layer in bert.encoder.layer)
        if self._active() is not None and checkpointing and bert.training and torch.is_grad_enabled():
            # The recomputation in backward runs after the route has ended.
            raise RuntimeError("PALs do not support gradient checkpointing")
        self._mask, self._in_forward = mask, True

    def _forget_mask(self, bert: nn.Module, args: tuple, output) -> None:
        self._mask, self._in_forward = None, False
        self._layer_inputs.clear()

    def _record_input(self, index: int, layer: nn.Module, args: tuple, kwargs: dict) -> None:
        # BertLayer.forward(hidden_states, attention_mask, ...): h, the layer's input.
        self._layer_inputs[index] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    def _add_pal(self, index: int, sub_output: nn.Module, args: tuple, kwargs: dict):
        pal = self._active()
        if pal is None:
            return None
        if not self._in_forward:
            # Called below BertModel.__call__ (e.g. the encoder alone): no mask was seen.
            raise RuntimeError("run PALs through the BertModel's __call__ so the attention mask is known")
        # BertOutput / BertSelfOutput .forward(hidden_states, input_tensor): add PAL(h) to input_tensor.
        h = self._layer_inputs[index]
        if "input_tensor" in kwargs:
            x = kwargs["input_tensor"]
            return args, {**kwargs, "input_tensor": x + pal(h, index, self._mask).to(x.dtype)}
        x = args[1]
        return (args[0], x + pal(h, index, self._mask).to(x.dtype), *args[2:]), kwargs


# Where a PAL's output is added (methods.pals.placement): the BertLayer sub-module whose LayerNorm takes the sum.
PLACEMENTS = {
    "output": lambda layer: layer.output,              # LN(FFN(a) + a + PAL(h)): the reference code
    "attention": lambda layer: layer.attention.output,  # LN(h + SA(h) + PAL(h)): the paper's shorthand
}


def add_pals(bert: nn.Module, tasks: list[str], pals: PalSettings, seed: int) -> PalBank:
    """Build a no-influence :class:`PalBank` sized from ``bert.config`` and attach it.

    ``pals.dropout`` on the PAL attention probabilities, when None, is the config's
    ``attention_probs_dropout_prob``; the bank starts in ``bert``'s train/eval mode (a
    bank held by the caller's model then follows ``model.train()``); ``seed`` makes the
    initialisation independent of the global RNG.
    Stickland and Murray 2019, "BERT and PALs".
    """
    config = bert.config
    p = config.attention_probs_dropout_prob if pals.dropout is None else pals.dropout
    bank = PalBank(tasks, config.hidden_size, config.num_hidden_layers, pals.num_heads, pals.head_dim, p,
                   pals.placement)
    generator = torch.Generator().manual_seed(seed)
    for pal in bank.pals.values():
        pal.reset_parameters(config.initializer_range, generator)
    reference = next(bert.parameters())
    bank.to(device=reference.device, dtype=reference.dtype).train(bert.training)
    bank.attach(bert)
    return bank


def freeze_all_but_pals(model: nn.Module, bank: PalBank) -> list[nn.Parameter]:
    """Mode "PALs after fine-tuning": only the bank's parameters keep requires_grad.

    ``model`` may or may not contain ``bank``. Returns the trainable parameters (for the
    optimiser). Dropout is untouched: ``model.train()``/``eval()`` stays the caller's call.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    for p in bank.parameters():
        p.requires_grad_(True)
    return list(bank.parameters())
