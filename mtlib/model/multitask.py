"""The multitask model: one shared encoder, one head per task."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from mtlib.config import Config
from mtlib.data.encode import Batch
from mtlib.model.backbone import load_encoder
from mtlib.model.heads import Features, build_head
from mtlib.model.pal import add_pals, freeze_all_but_pals
from mtlib.tasks import TASK_NAMES, TASKS


def cls_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The [CLS] state: (B, T, H) -> (B, H)."""
    return hidden[:, 0]


def mean_pooling(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' states ([CLS] and [SEP] included, padding not), as
    sentence-transformers pools all-MiniLM-L6-v2: (B, T, H), (B, T) -> (B, H)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)                   # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


POOLINGS = {"cls": cls_pooling, "mean": mean_pooling}


class MultitaskModel(nn.Module):
    """``encoder`` (a transformers BertModel), ``heads[task]``, and optionally a
    :class:`mtlib.model.pal.PalBank` whose task-specific layers are routed by the batch's task."""

    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], pooling: str = "cls"):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.pals: nn.Module | None = None  # set by add_task_pals
        self.pool = POOLINGS[pooling]

    def word_embeddings(self, batch: Batch) -> list[torch.Tensor]:
        """Per part (B, T, H): the input word embeddings (what SMART perturbs)."""
        return [self.encoder.get_input_embeddings()(part["input_ids"]) for part in batch.inputs]

    def features(self, batch: Batch, inputs_embeds: list[torch.Tensor] | None = None) -> Features:
        hidden = []
        with self.pals.route(batch.task) if self.pals is not None else contextlib.nullcontext():
            for k, part in enumerate(batch.inputs):
                if inputs_embeds is None:
                    out = self.encoder(**part)
                else:
                    out = self.encoder(inputs_embeds=inputs_embeds[k], attention_mask=part["attention_mask"],
                                       token_type_ids=part["token_type_ids"])
                hidden.append(out.last_hidden_state)  # (B, T, H)
        masks = [part["attention_mask"] for part in batch.inputs]
        pooled = torch.cat([self.pool(h, m) for h, m in zip(hidden, masks)], dim=-1)  # (B, parts * H)
        return Features(pooled, hidden, masks)

    def forward(self, batch: Batch, inputs_embeds: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, 5) logits for sst; (B,) logits for para; (B,) scores for sts."""
        out = self.heads[batch.task](self.features(batch, inputs_embeds))
        return out.squeeze(-1) if out.shape[-1] == 1 else out

    def loss(self, batch: Batch, output: torch.Tensor | None = None) -> torch.Tensor:
        """The task's loss of ``output`` (default: this model's output for ``batch``); the one
        loss of training: the Stepper passes the output it keeps for SMART."""
        return TASKS[batch.task].loss(self(batch) if output is None else output, batch.labels)


def build_model(cfg: Config, encoder: nn.Module | None = None, with_pals: bool = True) -> MultitaskModel:
    """The model a config describes; heads (and PALs) are initialised from the training seed.

    ``with_pals=False`` leaves PALs out even when the config has them, for loading weights
    trained without them first (PALs added after fine-tuning, see :func:`add_task_pals`).
    """
    encoder = encoder if encoder is not None else load_encoder(cfg.backbone, seed=cfg.train.seed)
    size = encoder.config.hidden_size
    torch.manual_seed(cfg.train.seed)
    heads = {task: build_head(cfg.methods.heads[task], size) for task in TASK_NAMES}
    model = MultitaskModel(encoder, heads, pooling=cfg.model.pooling)
    if with_pals and cfg.methods.pals is not None:
        add_task_pals(model, cfg)
    return model


def add_task_pals(model: MultitaskModel, cfg: Config) -> None:
    """Attach one no-influence PAL per task; with ``pals: after``, freeze everything else."""
    model.pals = add_pals(model.encoder, list(TASK_NAMES), cfg.methods.pals, seed=cfg.train.seed)
    if cfg.methods.pals.after:
        freeze_all_but_pals(model, model.pals)


def parameter_counts(model: MultitaskModel) -> dict:
    """Total, trainable and task-specific parameters (per task: its head and its PALs if any) — sharing is
    the point."""
    def count(params):
        return sum(p.numel() for p in params)

    pals = model.pals.pals if model.pals is not None else {}
    return {
        "total": count(model.parameters()),
        "trainable": count(p for p in model.parameters() if p.requires_grad),
        "shared": count(model.encoder.parameters()),
        "task_specific": {task: count(head.parameters()) + (count(pals[task].parameters()) if task in pals else 0)
                          for task, head in model.heads.items()},
    }
