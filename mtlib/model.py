"""The multitask model: one shared encoder, one head per task."""
from __future__ import annotations

import torch
from torch import nn

from mtlib.backbone import load_encoder
from mtlib.config import TASK_NAMES, Config
from mtlib.encode import Batch
from mtlib.heads import Features, build_head
from mtlib.tasks import TASKS


class MultitaskModel(nn.Module):
    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)

    def features(self, batch: Batch) -> Features:
        hidden = [self.encoder(**part).last_hidden_state for part in batch.inputs]  # per part (B, T, H)
        cls = torch.cat([h[:, 0] for h in hidden], dim=-1)  # (B, parts * H)
        return Features(cls, hidden, [part["attention_mask"] for part in batch.inputs])

    def forward(self, batch: Batch) -> torch.Tensor:
        """(B, 5) logits for sst; (B,) logits for para; (B,) scores for sts."""
        out = self.heads[batch.task](self.features(batch))
        return out.squeeze(-1) if out.shape[-1] == 1 else out

    def loss(self, batch: Batch) -> torch.Tensor:
        return TASKS[batch.task].loss(self(batch), batch.labels)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def task_modules(self, task: str) -> list[nn.Module]:
        """The modules that only ``task`` uses."""
        return [self.heads[task]]


def num_parts(task: str, pair_mode: str) -> int:
    return 2 if TASKS[task].is_pair and pair_mode == "embedding" else 1


def build_model(cfg: Config, encoder: nn.Module | None = None) -> MultitaskModel:
    """The model a config describes; heads are initialised from the training seed."""
    encoder = encoder if encoder is not None else load_encoder(cfg.backbone, seed=cfg.train.seed)
    size = encoder.config.hidden_size
    torch.manual_seed(cfg.train.seed)
    heads = {
        task: build_head(cfg.model.head_for(task), size, num_parts(task, cfg.model.pair_mode), TASKS[task].num_outputs)
        for task in TASK_NAMES
    }
    return MultitaskModel(encoder, heads)


def parameter_counts(model: MultitaskModel) -> dict:
    """Total, trainable and task-specific parameters (per task) — sharing is the point."""
    def count(params, trainable_only=False):
        return sum(p.numel() for p in params if p.requires_grad or not trainable_only)

    return {
        "total": count(model.parameters()),
        "trainable": count(model.parameters(), trainable_only=True),
        "shared": count(model.encoder.parameters()),
        "task_specific": {
            task: sum(count(m.parameters()) for m in model.task_modules(task)) for task in model.heads
        },
    }
