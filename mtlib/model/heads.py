"""Task heads: what turns the shared encoder's output into one task's prediction.

Every head takes :class:`Features` and returns ``(B, num_outputs)``. Each is built from its
settings (mtlib.settings: the head kinds' names, knobs and checks) and the encoder's width
by :func:`build_head`; ``parts`` is 2 for a pair task encoded in embedding-concatenation
mode (two sentence vectors side by side).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mtlib.settings import ACTIVATIONS, CosineHeadSettings, MlpHeadSettings, RecurrentHeadSettings


@dataclass
class Features:
    pooled: torch.Tensor        # (B, parts * H): each part's sentence vector ([CLS] or mean, model.pooling)
    tokens: list[torch.Tensor]  # per part (B, T, H): every token's hidden state
    masks: list[torch.Tensor]   # per part (B, T): 1 on real tokens


def mlp(in_features: int, cfg: MlpHeadSettings, hidden_size: int) -> nn.Sequential:
    """Dropout + linear, with ``cfg.hidden_layers`` (linear, activation, dropout) blocks before it."""
    layers, width = [], in_features
    for _ in range(cfg.hidden_layers):
        layers += [nn.Dropout(cfg.dropout), nn.Linear(width, hidden_size), getattr(nn, ACTIVATIONS[cfg.activation])()]
        width = hidden_size
    return nn.Sequential(*layers, nn.Dropout(cfg.dropout), nn.Linear(width, cfg.outputs))


class PooledHead(nn.Module):
    """The report's baseline (0 hidden layers) and its MLP variant, on the sentence vector(s)."""

    def __init__(self, cfg: MlpHeadSettings, encoder_size: int):
        super().__init__()
        self.net = mlp(encoder_size * cfg.parts, cfg, cfg.hidden_size or encoder_size)

    def forward(self, features: Features) -> torch.Tensor:
        return self.net(features.pooled)


class RecurrentHead(nn.Module):
    """An RNN or LSTM read over the token embeddings; its last state feeds the MLP. Padding
    is skipped by packing the sequences.

    ``with_cls`` (the report's "+ [CLS]"): the RNN reads the sentence tokens only, from
    position 1, and the sentence vector (the [CLS] state under cls pooling) goes straight to
    the MLP beside the RNN's state. Without it the RNN reads every token, [CLS] included."""

    def __init__(self, cfg: RecurrentHeadSettings, encoder_size: int):
        super().__init__()
        self.rnn = getattr(nn, cfg.cell)(encoder_size, cfg.rnn_size, batch_first=True)
        self.with_cls = cfg.with_cls
        width = cfg.parts * (cfg.rnn_size + (encoder_size if cfg.with_cls else 0))
        self.net = mlp(width, cfg, cfg.hidden_size or encoder_size)

    def forward(self, features: Features) -> torch.Tensor:
        states = []
        skip = 1 if self.with_cls else 0
        for tokens, mask in zip(features.tokens, features.masks):
            tokens, mask = tokens[:, skip:], mask[:, skip:]                   # (B, T - skip, H), (B, T - skip)
            lengths = mask.sum(1).cpu().clamp_min(1)  # a sequence of [CLS] alone still gives the RNN one step
            packed = pack_padded_sequence(tokens.float(), lengths, batch_first=True, enforce_sorted=False)
            with torch.autocast(tokens.device.type, enabled=False):  # cuDNN RNNs want one dtype
                _, hidden = self.rnn(packed)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM: (h, c)
            states.append(hidden[-1])  # (B, rnn_size): state after each sequence's last real token
        if self.with_cls:
            states.append(features.pooled.float())
        return self.net(torch.cat(states, dim=-1))


class CosineHead(nn.Module):
    """The cosine similarity of the two sentence vectors of a pair in embedding mode,
    scaled and shifted: out = a cos(u, v) + b, with a and b learned (2 parameters).

    For STS, a scaled cosine is the score (how all-MiniLM-L6-v2 was trained, and the
    report's "cosine similarity" experiments it left out); for paraphrase, the same is the
    logit. Starts at a = 5, b = 0: cosines of 0..1 map onto STS's 0..5 scale."""

    def __init__(self, cfg: CosineHeadSettings, encoder_size: int):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, features: Features) -> torch.Tensor:
        u, v = features.pooled.float().chunk(2, dim=-1)                      # (B, H) each
        return (self.scale * F.cosine_similarity(u, v, dim=-1) + self.bias).unsqueeze(-1)  # (B, 1)


HEADS = {MlpHeadSettings: PooledHead, RecurrentHeadSettings: RecurrentHead, CosineHeadSettings: CosineHead}


def build_head(settings, encoder_size: int) -> nn.Module:
    return HEADS[type(settings)](settings, encoder_size)
