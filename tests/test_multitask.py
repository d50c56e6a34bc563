import numpy as np
import pandas as pd
import pytest
import torch

from mtlib.model.backbone import load_tokenizer
from mtlib.data.encode import collate, encode_split
from mtlib.model.multitask import build_model, parameter_counts
from tests.helpers import smoke_config

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


def test_mean_pooling_averages_the_real_tokens_only():
    from mtlib.model.multitask import POOLINGS

    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    pooled = POOLINGS["mean"](hidden, mask)
    torch.testing.assert_close(pooled[0], hidden[0].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1, :2].mean(0))
    torch.testing.assert_close(POOLINGS["cls"](hidden, mask), hidden[:, 0])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooled_sentence_vector_does_not_depend_on_padding(tmp_path, pooling):
    cfg = smoke_config(tmp_path, "base_model", f"model.pooling={pooling}")
    model = build_model(cfg).eval()
    tokenizer = load_tokenizer(cfg.backbone)
    frame = pd.DataFrame({"id": ["a", "b"], "sentence": ["good film indeed", "bad"], "sentiment": [3, 1]})
    split = encode_split(tokenizer, frame, "sst", "sentence", 32)
    with torch.no_grad():
        alone = model.features(collate(split, np.array([1]), tokenizer.pad_token_id)).pooled
        padded = model.features(collate(split, np.array([0, 1]), tokenizer.pad_token_id)).pooled[1:]
        hidden = model.encoder(**collate(split, np.array([1]), tokenizer.pad_token_id).inputs[0]).last_hidden_state
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=0)
    expected = hidden[:, 0] if pooling == "cls" else hidden.mean(1)
    torch.testing.assert_close(alone, expected, atol=1e-6, rtol=0)
