"""Tests of mtlib.training.gradients: the per-task gradient matrix and its plumbing."""
import pytest
import torch
from torch import nn

from mtlib.training import gradients
from mtlib.settings import COMBINERS as SETTINGS
from mtlib.training.combiners import build_combiner
from mtlib.training.gradients import param_segments, point_grads


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


# ---------------------------------------------------------------------------- plumbing


class TinyBert(nn.Module):
    """Parameter names shaped like BERT's: embeddings, encoder.layer.<k>, pooler, plus a loose one."""

    def __init__(self):
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(5, 3)
        self.embeddings.LayerNorm = nn.LayerNorm(3)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)) for _ in range(2)])
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, ids):
        h = self.embeddings.LayerNorm(self.embeddings.word_embeddings(ids))
        for layer in self.encoder.layer:
            h = layer(h)
        return self.pooler.dense(h).sum() * self.scale


def flat_grad(params):
    return torch.cat([p.grad.detach().reshape(-1).float() for p in params])


def test_point_grads_makes_backward_accumulate_into_the_buffer_row():
    torch.manual_seed(0)
    model = TinyBert()
    params = list(model.parameters())
    ids_a, ids_b = torch.tensor([1, 2, 3]), torch.tensor([4, 0])
    model(ids_a).backward()  # reference gradients, the ordinary way
    expected_a = flat_grad(params)
    model.zero_grad(set_to_none=True)
    model(ids_b).backward()
    expected_b = flat_grad(params)
    model.zero_grad(set_to_none=True)

    buffer = torch.zeros(2, expected_a.numel())
    point_grads(params, buffer[0])
    model(ids_a).backward()
    point_grads(params, buffer[1])
    model(ids_b).backward()
    model(ids_b).backward()  # a second batch of the same task adds to its row
    assert torch.allclose(buffer[0], expected_a, atol=1e-6)
    assert torch.allclose(buffer[1], 2 * expected_b, atol=1e-6)
    # the gradients are views: writing the buffer changes .grad, with no copy in between
    combined = buffer.sum(0)
    point_grads(params, combined)
    assert all(p.grad.data_ptr() >= combined.data_ptr() for p in params)
    combined.mul_(0.5)
    assert torch.allclose(flat_grad(params), 0.5 * (buffer[0] + buffer[1]))


def test_point_grads_rejects_a_buffer_that_does_not_fit():
    params = list(nn.Linear(3, 2).parameters())  # 8 numbers
    with pytest.raises(ValueError, match="shape"):
        point_grads(params, torch.zeros(7))
    with pytest.raises(ValueError, match="contiguous"):
        point_grads(params, torch.zeros(8, 2)[:, 0])
    with pytest.raises(ValueError, match="float64"):
        point_grads(params, torch.zeros(8, dtype=torch.float64))


@pytest.mark.parametrize("name", ["sum", "pcgrad", "gradvac"])
@pytest.mark.parametrize("per_layer", [False, True])
def test_combiners_write_into_out_exactly_what_they_return(name, per_layer):
    model = TinyBert()
    named = list(model.named_parameters())
    segments = param_segments(named, per_layer)
    size = sum(p.numel() for _, p in named)
    grads = torch.randn(3, size, generator=torch.Generator().manual_seed(3))
    combiner = build_combiner(SETTINGS[name]())
    state = combiner.init_state(3, len(segments))
    expected, _ = combiner.combine(grads, state, torch.Generator().manual_seed(1), segments)
    out = torch.full((size,), float("nan"))
    got, _ = combiner.combine(grads, state, torch.Generator().manual_seed(1), segments, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(out, expected)


def test_param_segments_cover_the_vector_and_group_by_layer():
    model = TinyBert()
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    assert param_segments(named, False) == [(0, total)]
    segments = param_segments(named, True)
    starts = [s for s, _ in segments]
    ends = [e for _, e in segments]
    assert starts[0] == 0 and ends[-1] == total and starts[1:] == ends[:-1]
    # scale (listed first: a module's own parameters come before its children's),
    # embeddings (word 15 + LayerNorm 3 + 3), layer 0 (9 + 3 + 3 + 3), layer 1, pooler.dense (6 + 2)
    assert segments == [(0, 1), (1, 22), (22, 40), (40, 58), (58, 66)]


def test_param_segments_layer_rule_on_names():
    def named(*names):
        return [(n, nn.Parameter(torch.zeros(1))) for n in names]

    names = named(
        "bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.bias",
        "bert.encoder.layer.3.attention.self.query.weight", "bert.encoder.layer.3.output.LayerNorm.bias",
        "bert.encoder.layer.10.output.dense.weight", "bert.pooler.dense.weight", "bert.pooler.dense.bias",
        "bias",
    )
    assert param_segments(names, True) == [(0, 2), (2, 4), (4, 5), (5, 7), (7, 8)]


@pytest.mark.parametrize("lengths", [[23], [7, 11, 5], [1, 22]])
def test_blocked_cpu_gram_equals_the_matrix_product(monkeypatch, lengths):
    monkeypatch.setattr(gradients, "_GRAM_BLOCK", 3)  # several blocks per segment, a ragged last one
    grads = torch.randn(3, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.stack([chunk @ chunk.T for chunk in grads.split(lengths, dim=1)])
    got = gradients.gram(grads, lengths)
    assert got.shape == (len(lengths), 3, 3) and got.dtype == torch.float64
    assert torch.allclose(got, expected, atol=1e-12)
