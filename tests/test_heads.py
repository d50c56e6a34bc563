"""Task heads: shapes, hidden layers, padding, the [CLS] path of recurrent heads, the cosine head."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from mtlib.config import HeadConfig
from mtlib.model.heads import Features, build_head

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
    padded = Features(f.pooled, [torch.cat([f.tokens[0], torch.randn(2, 3, 16)], 1)],
                      [torch.cat([f.masks[0], torch.zeros(2, 3, dtype=torch.long)], 1)])
    assert torch.allclose(head(f), head(padded), atol=1e-6)


def test_unknown_head_lists_valid_names():
    with pytest.raises(ValueError, match="unknown head 'cnn'.*linear"):
        build_head(dataclasses.replace(HEAD, kind="cnn"), 16, 1, 1)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_recurrent_head_with_cls_never_reads_position_0(kind):
    """The report's "+ [CLS]": the RNN reads the sentence tokens; [CLS] reaches the MLP directly."""
    torch.manual_seed(0)
    head = build_head(dataclasses.replace(HEAD, kind=kind, with_cls=True), 16, 1, 1).eval()
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
    head = build_head(dataclasses.replace(HEAD, kind=kind, with_cls=False), 16, 1, 1).eval()
    f = features(batch=2, length=4)
    changed = [f.tokens[0].clone()]
    changed[0][:, 0] += 10.0
    assert not torch.equal(head(f), head(Features(f.pooled, changed, f.masks)))


def test_cosine_head_scales_the_cosine_of_the_two_sentence_vectors():
    head = build_head(dataclasses.replace(HEAD, kind="cosine"), 16, 2, 1)
    u, v = torch.randn(4, 16), torch.randn(4, 16)
    out = head(Features(torch.cat([u, v], -1), [], []))
    assert out.shape == (4, 1)
    torch.testing.assert_close(out[:, 0], 5.0 * F.cosine_similarity(u, v, dim=-1))
    assert sum(p.numel() for p in head.parameters()) == 2
    out.sum().backward()
    assert head.scale.grad is not None and head.bias.grad is not None


@pytest.mark.parametrize("parts, outputs", [(1, 1), (2, 5)])
def test_cosine_head_needs_a_pair_in_embedding_mode(parts, outputs):
    with pytest.raises(ValueError, match="embedding mode"):
        build_head(dataclasses.replace(HEAD, kind="cosine"), 16, parts, outputs)
