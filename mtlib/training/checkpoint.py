"""Checkpoints as safetensors + JSON (never pickle), written atomically.

A checkpoint folder holds ``model.safetensors`` (the state dict), optionally
``optimizer.safetensors`` (the optimiser's tensors, flattened), ``extra.safetensors``
(other tensors: RNG states, combiner state) and ``state.json`` (everything else: counters,
optimiser hyper-parameters, sampler and stream positions, history, and the fingerprint of
the config the checkpoint was made with).

Reading checks before it loads: a file that is not a readable checkpoint, a checkpoint made
with another config, or weights whose names or shapes do not fit the model all raise a
one-line :class:`CheckpointError` naming the file.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtlib.errors import CheckpointError
from mtlib.io import atomic_dir, resolve_dir

HINT = "train the run again, or resume from an intact copy"


@contextlib.contextmanager
def reading(path: str | Path):
    """Turn the errors of reading a checkpoint file into one CheckpointError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing ({HINT})") from None
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, CheckpointError):
            raise
        what = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint file: {what} ({HINT})") from None


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    flat = {f"{index}.{key}": value for index, state in sd["state"].items() for key, value in state.items()}
    tensors = {name: value.contiguous() for name, value in flat.items() if torch.is_tensor(value)}
    scalars = {name: value for name, value in flat.items() if not torch.is_tensor(value)}
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None,
                    state: dict | None = None, tensors: dict | None = None, config: str | None = None) -> None:
    """``config``: the fingerprint of the run's config (mtlib.training.runs.fingerprint)."""
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        meta = {"config": config, "state": state or {}}
        if optimizer is not None:
            opt_tensors, meta["optimizer"] = _optimizer_to_flat(optimizer)
            save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        if tensors:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "extra.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))


def checkpoint_exists(path: str | Path) -> bool:
    return resolve_dir(path) is not None


def _folder(path: str | Path) -> Path:
    folder = resolve_dir(path)
    if folder is None:
        raise CheckpointError(f"{path}: no checkpoint ({HINT})")
    return folder


def _read_meta(folder: Path, config: str | None) -> dict:
    """state.json, after checking that the checkpoint was made with the config ``config``
    (a fingerprint; checkpoints written before fingerprints existed are not checked)."""
    with reading(folder / "state.json"):
        meta = json.loads((folder / "state.json").read_text())
        if not isinstance(meta, dict):
            raise ValueError("expected a JSON object")
    saved = meta.get("config")
    if config is not None and saved is not None and saved != config:
        raise CheckpointError(f"{folder}: made with a different config (fingerprint {saved}) than the run's "
                              f"config.yaml ({config}) (the run folder was altered; train it again)")
    return meta


def _check_fits(path: Path, weights: dict, model: torch.nn.Module) -> None:
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in weights]
    problems += [f"unexpected {k}" for k in weights if k not in expected]
    problems += [f"{k} is {tuple(v.shape)}, the model's is {tuple(expected[k].shape)}"
                 for k, v in weights.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(f"{path}: weights do not fit the model the config describes: "
                              f"{'; '.join(problems[:3])}{more} (was config.yaml edited or the checkpoint copied "
                              "from another run?)")


def load_model_weights(path: str | Path, model: torch.nn.Module, strict: bool = True,
                       config: str | None = None) -> None:
    """Load a checkpoint's weights into ``model``; with ``config`` (a fingerprint), only a
    checkpoint made with that config."""
    folder = _folder(path)
    if config is not None and (folder / "state.json").exists():
        _read_meta(folder, config)
    file = folder / "model.safetensors"
    with reading(file):
        weights = load_file(str(file))
    if strict:
        _check_fits(file, weights, model)
    model.load_state_dict(weights, strict=strict)


def load_checkpoint(path: str | Path, model: torch.nn.Module, optimizer=None,
                    config: str | None = None) -> tuple[dict, dict]:
    """Restore model (and optimiser) in place; returns ``(state, extra tensors)``."""
    folder = _folder(path)
    meta = _read_meta(folder, config)
    load_model_weights(folder, model)
    with reading(folder / "optimizer.safetensors"):
        if optimizer is not None:
            _optimizer_from_flat(optimizer, load_file(str(folder / "optimizer.safetensors")), meta["optimizer"])
    extra = {}
    if (folder / "extra.safetensors").exists():
        with reading(folder / "extra.safetensors"):
            extra = load_file(str(folder / "extra.safetensors"))
    return meta["state"], extra
