"""Task heads: shapes, hidden layers, padding, the [CLS] path of recurrent heads, the cosine head."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mtlib.config import ConfigError, HeadConfig, load_config
from mtlib.model.heads import HEADS, Features, build_head
from mtlib.settings import HEADS as SETTINGS
from mtlib.settings import CosineHeadSettings
from tests.helpers import ROOT

HEAD = HeadConfig(kind="linear", hidden_layers=0, hidden_size=None, activation="relu", dropout=0.0,
                  rnn_size=8, with_cls=False)
PARAMS = ROOT / "params.yaml"


def build(cfg: HeadConfig, encoder_size: int, parts: int, outputs: int):
    """The head of a HeadConfig, through its kind's settings, as a config builds it."""
    return build_head(SETTINGS[cfg.kind](cfg, parts, outputs), encoder_size)


def features(batch=3, length=5, size=16, parts=1):
    tokens = [torch.randn(batch, length, size) for _ in range(parts)]
    masks = [torch.ones(batch, length, dtype=torch.long) for _ in range(parts)]
    return Features(torch.cat([t[:, 0] for t in tokens], -1), tokens, masks)


@pytest.mark.parametrize("kind", ["linear", "mlp", "rnn", "lstm"])
@pytest.mark.parametrize("parts", [1, 2])
def test_head_output_shapes(kind, parts):
    head = build(dataclasses.replace(HEAD, kind=kind, hidden_layers=1, with_cls=True), 16, parts, 5)
    assert head(features(parts=parts)).shape == (3, 5)


def test_mlp_has_the_requested_hidden_layers():
    head = build(dataclasses.replace(HEAD, kind="mlp", hidden_layers=2, hidden_size=7), 16, 1, 5)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 7), (7, 7), (7, 5)]
    assert len([m for m in build(HEAD, 16, 1, 5).modules() if isinstance(m, torch.nn.Linear)]) == 1


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_head_ignores_padding(kind):
    torch.manual_seed(0)
    head = build(dataclasses.replace(HEAD, kind=kind), 16, 1, 1).eval()
    f = features(batch=2, length=4)
    padded = Features(f.pooled, [torch.cat([f.tokens[0], torch.randn(2, 3, 16)], 1)],
                      [torch.cat([f.masks[0], torch.zeros(2, 3, dtype=torch.long)], 1)])
    assert torch.allclose(head(f), head(padded), atol=1e-6)


def test_every_head_kind_builds_from_its_own_settings_class():
    assert {type(SETTINGS[kind](HEAD, 2, 1)) for kind in SETTINGS} == set(HEADS)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_head_with_cls_never_reads_position_0(kind):
    """The report's "+ [CLS]": the RNN reads the sentence tokens; [CLS] reaches the MLP directly."""
    torch.manual_seed(0)
    head = build(dataclasses.replace(HEAD, kind=kind, with_cls=True), 16, 1, 1).eval()
    f = features(batch=2, length=4)
    changed = [f.tokens[0].clone()]
    changed[0][:, 0] += 10.0  # a different state at position 0, the same sentence vector
    seen = []
    head.rnn.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    assert torch.equal(head(f), head(Features(f.pooled, changed, f.masks)))
    first_step = torch.nn.utils.rnn.pad_packed_sequence(seen[0], batch_first=True)[0][:, 0]
    assert torch.equal(first_step, f.tokens[0][:, 1])  # the RNN starts at position 1
    assert not torch.equal(head(f), head(Features(f.pooled + 1.0, f.tokens, f.masks)))  # [CLS] still counts


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_head_without_cls_reads_every_token(kind):
    torch.manual_seed(0)
    head = build(dataclasses.replace(HEAD, kind=kind, with_cls=False), 16, 1, 1).eval()
    f = features(batch=2, length=4)
    changed = [f.tokens[0].clone()]
    changed[0][:, 0] += 10.0
    assert not torch.equal(head(f), head(Features(f.pooled, changed, f.masks)))


def test_cosine_head_scales_the_cosine_of_the_two_sentence_vectors():
    head = build(dataclasses.replace(HEAD, kind="cosine"), 16, 2, 1)
    u, v = torch.randn(4, 16), torch.randn(4, 16)
    out = head(Features(torch.cat([u, v], -1), [], []))
    assert out.shape == (4, 1)
    torch.testing.assert_close(out[:, 0], 5.0 * F.cosine_similarity(u, v, dim=-1))
    assert sum(p.numel() for p in head.parameters()) == 2
    out.sum().backward()
    assert head.scale.grad is not None and head.bias.grad is not None


@pytest.mark.parametrize("parts, outputs", [(1, 1), (2, 5)])
def test_cosine_head_needs_a_pair_in_embedding_mode(parts, outputs):
    with pytest.raises(ConfigError, match="kind: cosine needs a pair task"):
        CosineHeadSettings(parts, outputs)


@pytest.mark.parametrize("overrides, message", [
    (["model.head.kind=cosine"], r"model.head.kind: cosine needs a pair task \(para, sts\) and model.pair_mode=embedding"),
    (["model.head_overrides={sts: {kind: cosine}}"], r"model.head_overrides.sts.kind: cosine needs"),
    (["model.pair_mode=embedding", "model.head_overrides={sst: {kind: cosine}}"], r"model.head_overrides.sst.kind: cosine"),
    (["model.head.kind=cnn"], r"model.head.kind: 'cnn' is not one of \['cosine', 'linear', 'lstm', 'mlp', 'rnn'\]"),
    (["model.head.activation=nope"], r"model.head.activation: 'nope' is not one of \['gelu', 'relu', 'tanh'\]"),
    (["model.head_overrides={sts: {activation: nope}}"], r"model.head_overrides.sts.activation: 'nope'"),
    (["model.head.dropout=1.5"], r"model.head.dropout: must be a number in \[0, 1\]"),
    (["model.head.kind=mlp", "model.head.hidden_layers=-1"], r"model.head.hidden_layers: must be an integer >= 0"),
    (["model.head.kind=lstm", "model.head.rnn_size=0"], r"model.head.rnn_size: must be an integer >= 1"),
])
def test_head_settings_name_the_full_key_when_the_config_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PARAMS, "base_model", "smoke", overrides=overrides)


def test_a_cosine_head_on_pairs_in_embedding_mode_loads():
    heads = load_config(PARAMS, "embedding_cosine", "smoke").methods.heads
    assert [type(heads[task]).__name__ for task in ("sst", "para", "sts")] == [
        "MlpHeadSettings", "CosineHeadSettings", "CosineHeadSettings"]
