"""What the frozen encoder already knows: heads trained on its features, scored on validation.

Before any fine-tuning, the study measures what a head alone gets from the pretrained
encoder, for each way of reading it: which sentence vector (``model.pooling``: the [CLS]
state or the mean of the tokens), how a pair is encoded (one sequence, or two passes whose
vectors are concatenated) and which head reads a pair (a linear layer, or a scaled cosine).
These are cheap (the encoder runs once per split, its features cached) and decide the
defaults a profile uses, on the validation split, never on dev.
"""
from __future__ import annotations

import pandas as pd

from mtlib.config import Config, with_overrides
from mtlib.data.prepare import prepare_data
from mtlib.model.backbone import load_tokenizer
from mtlib.model.multitask import build_model
from mtlib.record import score_that_counts
from mtlib.training.precision import resolve_amp, resolve_device
from mtlib.training.pretrain import HeadPretraining, kept_scores, pretrain_heads


def frozen_scores(cfg: Config, data_dir=None) -> dict:
    """Pretrain ``cfg``'s heads on the frozen encoder (its pooling, pair mode, heads and
    ``train.pretrain_heads`` selection) and return the validation metric of each task at the
    kept epoch, their mean, and the kept epochs."""
    t = cfg.train
    device = resolve_device(t.device)
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer, data_dir, splits=("train", "validation"))
    model = build_model(cfg).to(device)
    how = HeadPretraining.for_run(cfg, device, resolve_amp(t.amp, device), tokenizer.pad_token_id,
                                  cfg.methods.pretrain.selection or "individual")
    history = pretrain_heads(model, {k: data["train"][k] for k in t.tasks}, data["validation"], how)
    scores, epochs = kept_scores(history)
    return {**scores, "mean": score_that_counts(scores), "epochs": epochs}


def compare(cfg: Config, variants: dict[str, list[str]], data_dir=None) -> pd.DataFrame:
    """:func:`frozen_scores` of ``cfg`` under each variant's overrides: one row per variant."""
    rows = []
    for name, overrides in variants.items():
        scores = frozen_scores(with_overrides(cfg, overrides), data_dir)
        epochs = scores.pop("epochs")
        rows.append({"variant": name, **scores, "kept epochs": ", ".join(f"{t} {e}" for t, e in epochs.items())})
    return pd.DataFrame(rows).set_index("variant")
