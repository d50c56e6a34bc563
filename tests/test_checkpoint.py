"""Checkpoints: safetensors + JSON, a faithful round trip, and refusals that name the file."""
import json

import pytest
import torch

from mtlib.training.checkpoint import (CheckpointError, checkpoint_exists, load_checkpoint, load_model_weights,
                                       save_checkpoint)


def model_and_optimizer(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer


def take_steps(model, optimizer, n=3):
    for i in range(n):
        loss = model(torch.full((5, 4), float(i + 1))).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_round_trip_restores_weights_optimizer_state_and_extras(tmp_path):
    model, optimizer = model_and_optimizer()
    take_steps(model, optimizer)
    extra = {"rng.torch": torch.get_rng_state()}
    save_checkpoint(tmp_path / "ck", model, optimizer, state={"update": 3}, tensors=extra, config="abc")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "extra.safetensors", "model.safetensors", "optimizer.safetensors", "state.json"]  # no pickle
    assert json.loads((tmp_path / "ck" / "state.json").read_text())["state"] == {"update": 3}

    other, other_optimizer = model_and_optimizer(seed=1)
    state, tensors = load_checkpoint(tmp_path / "ck", other, other_optimizer, config="abc")
    assert state == {"update": 3} and torch.equal(tensors["rng.torch"], extra["rng.torch"])
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    take_steps(model, optimizer, 2)  # the restored optimiser continues exactly as the original
    take_steps(other, other_optimizer, 2)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_a_checkpoint_made_with_another_config_is_refused(tmp_path):
    model, _ = model_and_optimizer()
    save_checkpoint(tmp_path / "ck", model, config="one")
    with pytest.raises(CheckpointError, match="different config"):
        load_checkpoint(tmp_path / "ck", model, config="two")
    load_model_weights(tmp_path / "ck", model, config="one")


def test_weights_that_do_not_fit_name_the_file_and_the_first_problems(tmp_path):
    model, _ = model_and_optimizer()
    save_checkpoint(tmp_path / "ck", model)
    wider = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not fit.*0\.weight is \(3, 4\)"):
        load_model_weights(tmp_path / "ck", wider)


def test_missing_and_damaged_checkpoints_are_one_error_naming_the_file(tmp_path):
    model, _ = model_and_optimizer()
    assert not checkpoint_exists(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "ck", model)
    save_checkpoint(tmp_path / "ck", model)
    assert checkpoint_exists(tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model_weights(tmp_path / "ck", model)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, _ = model_and_optimizer()
    save_checkpoint(tmp_path / "ck", model, state={"update": 1})
    before = (tmp_path / "ck" / "model.safetensors").read_bytes()

    class Broken(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "ck", Broken(), state={"update": 2})
    assert (tmp_path / "ck" / "model.safetensors").read_bytes() == before
    assert load_checkpoint(tmp_path / "ck", model)[0] == {"update": 1}
