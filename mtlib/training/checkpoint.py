"""Checkpoints as safetensors + JSON (never pickle), written atomically.

A checkpoint folder holds ``model.safetensors`` (the state dict), optionally
``optimizer.safetensors`` (the optimiser's tensors, flattened), ``extra.safetensors``
(other tensors: RNG states, combiner state) and ``state.json`` (everything else: counters,
optimiser hyper-parameters, sampler and stream positions, history).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mtlib.io import atomic_dir, resolve_dir


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None,
                    state: dict | None = None, tensors: dict | None = None) -> None:
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        meta = {"state": state or {}}
        if optimizer is not None:
            opt_tensors, meta["optimizer"] = _optimizer_to_flat(optimizer)
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        if tensors:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "extra.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))


def checkpoint_exists(path: str | Path) -> bool:
    return resolve_dir(path) is not None


def load_model_weights(path: str | Path, model: torch.nn.Module, strict: bool = True) -> None:
    folder = resolve_dir(path)
    if folder is None:
        raise FileNotFoundError(f"{path}: no checkpoint")
    weights = load_file(str(folder / "model.safetensors"))
    model.load_state_dict(weights, strict=strict)


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None) -> tuple[dict, dict]:
    """Restore model (and optimiser) in place; returns ``(state, extra tensors)``."""
    folder = resolve_dir(path)
    if folder is None:
        raise FileNotFoundError(f"{path}: no checkpoint")
    load_model_weights(folder, model)
    meta = json.loads((folder / "state.json").read_text())
    if optimizer is not None:
        _optimizer_from_flat(optimizer, load_file(str(folder / "optimizer.safetensors")), meta["optimizer"])
    extra = load_file(str(folder / "extra.safetensors")) if (folder / "extra.safetensors").exists() else {}
    return meta["state"], extra
