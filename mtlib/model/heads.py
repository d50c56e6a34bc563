"""Task heads: what turns the shared encoder's output into one task's prediction.

Every head takes :class:`Features` and returns ``(B, num_outputs)``. The registry ``HEADS``
maps the name used in params.yaml to a constructor
``(cfg: HeadConfig, encoder_size, num_parts, num_outputs) -> nn.Module``; ``num_parts`` is
2 for a pair task encoded in embedding-concatenation mode (two [CLS] vectors side by side).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mtlib.config import HeadConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass
class Features:
    cls: torch.Tensor           # (B, num_parts * H): the [CLS] hidden state of each part
    tokens: list[torch.Tensor]  # per part (B, T, H): every token's hidden state
    masks: list[torch.Tensor]   # per part (B, T): 1 on real tokens


def mlp(in_features: int, cfg: HeadConfig, hidden_size: int, num_outputs: int) -> nn.Sequential:
    """Dropout + linear, with ``cfg.hidden_layers`` (linear, activation, dropout) blocks before it."""
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {cfg.activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers, width = [], in_features
    for _ in range(cfg.hidden_layers):
        layers += [nn.Dropout(cfg.dropout), nn.Linear(width, hidden_size), ACTIVATIONS[cfg.activation]()]
        width = hidden_size
    return nn.Sequential(*layers, nn.Dropout(cfg.dropout), nn.Linear(width, num_outputs))


class ClsHead(nn.Module):
    """The report's baseline (0 hidden layers) and its MLP variant, on the [CLS] embedding."""

    def __init__(self, cfg: HeadConfig, encoder_size: int, num_parts: int, num_outputs: int):
        super().__init__()
        self.net = mlp(encoder_size * num_parts, cfg, cfg.hidden_size or encoder_size, num_outputs)

    def forward(self, features: Features) -> torch.Tensor:
        return self.net(features.cls)


class RecurrentHead(nn.Module):
    """An RNN or LSTM read over the token embeddings; its last state (optionally with
    [CLS]) feeds the MLP. Padding is skipped by packing the sequences."""

    def __init__(self, cfg: HeadConfig, encoder_size: int, num_parts: int, num_outputs: int, cell: type):
        super().__init__()
        self.rnn = cell(encoder_size, cfg.rnn_size, batch_first=True)
        self.with_cls = cfg.with_cls
        width = num_parts * (cfg.rnn_size + (encoder_size if cfg.with_cls else 0))
        self.net = mlp(width, cfg, cfg.hidden_size or encoder_size, num_outputs)

    def forward(self, features: Features) -> torch.Tensor:
        states = []
        for tokens, mask in zip(features.tokens, features.masks):
            lengths = mask.sum(1).cpu()
            packed = pack_padded_sequence(tokens.float(), lengths, batch_first=True, enforce_sorted=False)
            with torch.autocast(tokens.device.type, enabled=False):  # cuDNN RNNs want one dtype
                _, hidden = self.rnn(packed)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM: (h, c)
            states.append(hidden[-1])  # (B, rnn_size): state after each sequence's last real token
        if self.with_cls:
            states.append(features.cls.float())
        return self.net(torch.cat(states, dim=-1))


HEADS = {
    "linear": lambda cfg, h, parts, out: ClsHead(dataclasses.replace(cfg, hidden_layers=0), h, parts, out),
    "mlp": ClsHead,
    "rnn": lambda cfg, h, parts, out: RecurrentHead(cfg, h, parts, out, nn.RNN),
    "lstm": lambda cfg, h, parts, out: RecurrentHead(cfg, h, parts, out, nn.LSTM),
}


def build_head(cfg: HeadConfig, encoder_size: int, num_parts: int, num_outputs: int) -> nn.Module:
    if cfg.kind not in HEADS:
        raise ValueError(f"unknown head {cfg.kind!r}; choose one of {sorted(HEADS)}")
    return HEADS[cfg.kind](cfg, encoder_size, num_parts, num_outputs)
