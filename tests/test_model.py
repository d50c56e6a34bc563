import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from mtlib.model.backbone import load_tokenizer
from mtlib.config import HeadConfig
from mtlib.data.encode import collate, encode_split
from mtlib.model.heads import Features, build_head
from mtlib.model.multitask import build_model, parameter_counts
from tests.helpers import smoke_config

HEAD = HeadConfig(kind="linear", hidden_layers=0, hidden_size=None, activation="relu", dropout=0.0,
                  rnn_size=8, with_cls=False)


def features(batch=3, length=5, size=16, parts=1):
    tokens = [torch.randn(batch, length, size) for _ in range(parts)]
    masks = [torch.ones(batch, length, dtype=torch.long) for _ in range(parts)]
    return Features(torch.cat([t[:, 0] for t in tokens], -1), tokens, masks)


@pytest.mark.parametrize("kind", ["linear", "mlp", "rnn", "lstm"])
@pytest.mark.parametrize("parts", [1, 2])
def test_head_output_shapes(kind, parts):
    head = build_head(dataclasses.replace(HEAD, kind=kind, hidden_layers=1, with_cls=True), 16, parts, 5)
    assert head(features(parts=parts)).shape == (3, 5)


def test_mlp_has_the_requested_hidden_layers():
    head = build_head(dataclasses.replace(HEAD, kind="mlp", hidden_layers=2, hidden_size=7), 16, 1, 5)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 7), (7, 7), (7, 5)]
    assert len([m for m in build_head(HEAD, 16, 1, 5).modules() if isinstance(m, torch.nn.Linear)]) == 1


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_head_ignores_padding(kind):
    torch.manual_seed(0)
    head = build_head(dataclasses.replace(HEAD, kind=kind), 16, 1, 1).eval()
    f = features(batch=2, length=4)
    padded = Features(f.cls, [torch.cat([f.tokens[0], torch.randn(2, 3, 16)], 1)],
                      [torch.cat([f.masks[0], torch.zeros(2, 3, dtype=torch.long)], 1)])
    assert torch.allclose(head(f), head(padded), atol=1e-6)


def test_unknown_head_lists_valid_names():
    with pytest.raises(ValueError, match="unknown head 'cnn'.*linear"):
        build_head(dataclasses.replace(HEAD, kind="cnn"), 16, 1, 1)


def test_model_outputs_and_parameter_counts(tmp_path):
    cfg = smoke_config(tmp_path)
    model = build_model(cfg).eval()
    tokenizer = load_tokenizer(cfg.backbone)
    frame = pd.DataFrame({"id": ["a", "b"], "sentence": ["good film", "bad"], "sentiment": [3, 1]})
    batch = collate(encode_split(tokenizer, frame, "sst", "sentence", 32), np.array([0, 1]), tokenizer.pad_token_id)
    assert model(batch).shape == (2, 5)
    assert model.loss(batch).ndim == 0
    counts = parameter_counts(model)
    hidden = model.encoder.config.hidden_size
    assert counts["task_specific"] == {"sst": hidden * 5 + 5, "para": hidden + 1, "sts": hidden + 1}
    assert counts["total"] == counts["shared"] + sum(counts["task_specific"].values())
    assert counts["trainable"] == counts["total"]


def test_embedding_mode_concatenates_two_cls_vectors(tmp_path):
    cfg = smoke_config(tmp_path, "base_model", "model.pair_mode=embedding")
    model = build_model(cfg).eval()
    hidden = model.encoder.config.hidden_size
    assert model.heads["para"].net[-1].in_features == 2 * hidden
    assert model.heads["sst"].net[-1].in_features == hidden


def test_same_seed_same_heads(tmp_path):
    a, b = build_model(smoke_config(tmp_path)), build_model(smoke_config(tmp_path))
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
