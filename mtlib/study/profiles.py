"""README's table of profiles, rendered from params.yaml so the two cannot drift.

:func:`profile_table` renders, for every profile, what ``base <- profile`` gives;
``python -m mtlib.study.readme --write README.md`` puts it between README's profile-table
markers, and tests/test_profiles.py checks README holds exactly that.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from mtlib.config import merge
from mtlib.record import PRECISIONS


def _sizes(sizes: Mapping) -> str:
    return ", ".join(f"{task} {'all' if n is None else f'{n:,}'}" for task, n in sizes.items())


def profile_row(name: str, settings: Mapping, default: bool = False) -> str:
    """One profile as a Markdown table row, from its resolved settings (base <- profile)."""
    backbone, data, train = settings["backbone"], settings["data"], settings["train"]
    model = f"`{backbone['name']}`" + ("" if backbone["pretrained"] else " (random weights)")
    model += f", {settings['model']['pooling']} pooling, {backbone['max_length']} tokens"
    budget = f"{train['epochs']} epochs x {train['batches_per_epoch']:,} micro-batches"
    if train["accumulation"] > 1:
        budget += f", {train['accumulation']} per update"
    budget += f"; heads pretrained up to {train['pretrain_args']['epochs']} epochs"
    precision = {**PRECISIONS, "auto": "auto (bf16 where native)"}.get(train["amp"], train["amp"])
    cells = [f"`{name}`" + (" (default)" if default else ""), model, _sizes(data["train_size"]),
             _sizes(data["validation_size"]), _sizes(data["dev_size"]), budget, f"{precision}, device {train['device']}"]
    return "| " + " | ".join(cells) + " |"


def profile_table(params: Mapping | str | Path = "params.yaml") -> str:
    """README's table of profiles: for each profile of params.yaml, what base <- profile
    gives for the backbone, the training, validation (held out of train) and dev data sizes
    (per task; 'all' for the whole file), the training budget and the precision; the
    top-level ``profile`` is marked default."""
    if not isinstance(params, Mapping):
        params = yaml.safe_load(Path(params).read_text())
    header = ["profile", "backbone", "training examples", "validation examples", "dev examples", "budget",
              "precision"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, override in params["profiles"].items():
        lines.append(profile_row(name, merge(params["base"], override or {}), name == params.get("profile")))
    return "\n".join(lines)
