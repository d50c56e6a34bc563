"""Tests of mtlib.training.combiners: hand-computed toy cases and properties of the pure functions."""
import math

import pytest
import torch
from torch import nn

from mtlib.training.combiners import (
    COMBINERS,
    compromise_adjusted,
    compromise_beta,
    compromise_group,
    compromise_weights,
    flat_grad,
    point_grads,
    get_combiner,
    gradvac,
    gradvac_init,
    gradvac_project,
    param_segments,
    pcgrad,
    pcgrad_project,
    reference_code_weights,
    sum_grads,
)
from mtlib.training.samplers import annealed


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


def test_flat_grad_layout_gives_zeros_where_no_gradient():
    model = TinyBert()
    model.embeddings.word_embeddings.weight.requires_grad_(False)  # never gets a grad
    params = list(model.parameters())
    model(torch.tensor([1, 2, 3])).backward()
    flat = flat_grad(params)
    assert flat.shape == (sum(p.numel() for p in params),) and flat.dtype == torch.float32
    # named_parameters lists the module's own `scale` first, then the embeddings
    assert flat[1 : 1 + model.embeddings.word_embeddings.weight.numel()].eq(0).all()


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
@pytest.mark.parametrize("granularity", ["whole", "layer"])
def test_combiners_write_into_out_exactly_what_they_return(name, granularity):
    model = TinyBert()
    named = list(model.named_parameters())
    segments = param_segments(named, granularity)
    size = sum(p.numel() for _, p in named)
    grads = torch.randn(3, size, generator=torch.Generator().manual_seed(3))
    combiner = get_combiner(name)
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
    assert param_segments(named, "whole") == [(0, total)]
    segments = param_segments(named, "layer")
    starts = [s for s, _ in segments]
    ends = [e for _, e in segments]
    assert starts[0] == 0 and ends[-1] == total and starts[1:] == ends[:-1]
    # scale (listed first: a module's own parameters come before its children's),
    # embeddings (word 15 + LayerNorm 3 + 3), layer 0 (9 + 3 + 3 + 3), layer 1, pooler.dense (6 + 2)
    assert segments == [(0, 1), (1, 22), (22, 40), (40, 58), (58, 66)]
    with pytest.raises(ValueError):
        param_segments(named, "neuron")


def test_param_segments_layer_rule_on_names():
    def named(*names):
        return [(n, nn.Parameter(torch.zeros(1))) for n in names]

    names = named(
        "bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.bias",
        "bert.encoder.layer.3.attention.self.query.weight", "bert.encoder.layer.3.output.LayerNorm.bias",
        "bert.encoder.layer.10.output.dense.weight", "bert.pooler.dense.weight", "bert.pooler.dense.bias",
        "bias",
    )
    assert param_segments(names, "layer") == [(0, 2), (2, 4), (4, 5), (5, 7), (7, 8)]


# ---------------------------------------------------------------------------- PCGrad


def test_pcgrad_equals_hand_computed_projection():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    # g1.g2 = -1: g1' = g1 - (-1 / ||g2||^2) g2 = (1, 0) + 0.5 (-1, 1) = (0.5, 0.5)
    #             g2' = g2 - (-1 / ||g1||^2) g1 = (-1, 1) + (1, 0) = (0, 1)
    assert torch.allclose(pcgrad_project(grads, gen()), torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert torch.allclose(pcgrad(grads, gen()), torch.tensor([0.5, 1.5]))


def test_pcgrad_divides_by_the_norm_of_the_other_gradient():
    # ||g1||^2 = 4, ||g2||^2 = 1, g1.g2 = -1.2: g1' = g1 + (1.2 / 1) g2 = (1.28, 0.96) and
    # g2' = g2 + (1.2 / 4) g1 = (0, 0.8). The report's ||g_i||^2 would give g1' = g1 + 0.3 g2.
    grads = torch.tensor([[2.0, 0.0], [-0.6, 0.8]])
    assert torch.allclose(pcgrad_project(grads, gen()), torch.tensor([[1.28, 0.96], [0.0, 0.8]]))


def test_pcgrad_leaves_non_conflicting_gradients_unchanged():
    grads = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert torch.equal(pcgrad(grads, gen()), sum_grads(grads))


def test_pcgrad_guards_zero_gradients():
    grads = torch.tensor([[1.0, -1.0], [0.0, 0.0]])
    out = pcgrad(grads, gen())
    assert torch.isfinite(out).all() and torch.equal(out, torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("dim", [3, 10])
@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_two_tasks_never_conflict_after_projection(dim, seed):
    grads = torch.randn(2, dim, generator=gen(100 + seed), dtype=torch.float64)
    g1, g2 = pcgrad_project(grads, gen(seed))
    assert g1 @ g2 >= -1e-6 and g1 @ grads[1] >= -1e-6 and g2 @ grads[0] >= -1e-6


@pytest.mark.parametrize("dim", [3, 10])
@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_three_tasks_documented_properties(dim, seed):
    # With 3+ tasks a later projection can undo an earlier one; what always holds is that
    # no norm grows and each g_i' agrees with (at least) the last task it was checked against.
    grads = torch.randn(3, dim, generator=gen(200 + seed), dtype=torch.float64)
    projected = pcgrad_project(grads, gen(seed))
    for i in range(3):
        assert projected[i].norm() <= grads[i].norm() + 1e-9
        assert max(float(projected[i] @ grads[j]) for j in range(3) if j != i) >= -1e-9


def test_pcgrad_is_deterministic_and_order_matters_only_through_the_generator():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 2.0], [-1.0, -2.0]])
    for seed in range(5):
        assert torch.equal(pcgrad(grads, gen(seed)), pcgrad(grads, gen(seed)))
    outcomes = {tuple(pcgrad(grads, gen(seed)).tolist()) for seed in range(20)}
    assert len(outcomes) > 1  # three tasks: the generator's order changes the result
    two = grads[:2]
    assert len({tuple(pcgrad(two, gen(seed)).tolist()) for seed in range(20)}) == 1  # one order only


# ---------------------------------------------------------------------------- GradVac


def test_gradvac_lifts_cosine_to_target_2d():
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos = 0
    ema = torch.full((1, 2, 2), 0.5)
    # w = ||g1|| (0.5 sqrt(1 - 0) - 0) / (||g2|| sqrt(1 - 0.25)) = 1 / sqrt(3)
    out, new_ema = gradvac(grads, ema, beta=0.1, generator=gen())
    s = 1 / math.sqrt(3)
    assert torch.allclose(out, torch.tensor([1 + s, 1 + s]))
    assert cos(torch.tensor([1.0, s]), grads[1]) == pytest.approx(0.5)
    # phi_hat <- 0.9 * 0.5 + 0.1 * 0 on both off-diagonal entries
    assert torch.allclose(new_ema, torch.tensor([[[0.5, 0.45], [0.45, 0.5]]]))
    assert torch.equal(ema, torch.full((1, 2, 2), 0.5))  # input not mutated


def test_gradvac_lifts_cosine_to_target_3d():
    grads = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])  # cos = 0, target 0.6, sqrt(1 - 0.36) = 0.8
    # g1' = g1 + 1 * 0.6 / (2 * 0.8) g2 = (1, 0, 0.75);  g2' = g2 + 2 * 0.6 / (1 * 0.8) g1 = (1.5, 0, 2)
    ema = torch.full((1, 2, 2), 0.6)
    out, _ = gradvac(grads, ema, beta=0.01, generator=gen())
    assert torch.allclose(out, torch.tensor([2.5, 0.0, 2.75]))
    assert cos(torch.tensor([1.0, 0.0, 0.75]), grads[1]) == pytest.approx(0.6)
    assert cos(torch.tensor([1.5, 0.0, 2.0]), grads[0]) == pytest.approx(0.6)


def test_gradvac_with_zero_target_equals_pcgrad_on_two_tasks():
    grads = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, -2.0]])  # cos = -2/3
    # g1' = (1, 2, 2) + 3 (2/3) / 2 g2 = (1, 2, 0);  g2' = g2 + 2 (2/3) / 3 g1 = (4/9, 8/9, -10/9)
    out, _ = gradvac(grads, gradvac_init(2), beta=0.01, generator=gen())
    assert torch.allclose(out, torch.tensor([13 / 9, 26 / 9, -10 / 9]))
    assert torch.allclose(out, pcgrad(grads, gen()))


@pytest.mark.parametrize("seed", range(5))
def test_gradvac_reaches_random_targets_exactly_two_tasks(seed):
    g = gen(300 + seed)
    grads = torch.randn(2, 10, generator=g, dtype=torch.float64)
    ema = torch.rand(1, 2, 2, generator=g, dtype=torch.float64) * 1.8 - 0.9
    vaccinated, _ = gradvac_project(grads, ema, beta=0.01, generator=gen(seed))
    phi = cos(grads[0], grads[1])
    for i, j in [(0, 1), (1, 0)]:
        target = float(ema[0, i, j])
        if phi < target:
            assert cos(vaccinated[i], grads[j]) == pytest.approx(target, abs=1e-9)
        else:
            assert torch.equal(vaccinated[i], grads[i])


@pytest.mark.parametrize("seed", range(5))
def test_gradvac_three_tasks_meet_the_target_of_the_last_task_visited(seed):
    g = gen(400 + seed)
    grads = torch.randn(3, 10, generator=g, dtype=torch.float64)
    ema = torch.rand(1, 3, 3, generator=g, dtype=torch.float64) * 1.8 - 0.9
    vaccinated, _ = gradvac_project(grads, ema, beta=0.01, generator=gen(seed))
    for i in range(3):
        assert max(cos(vaccinated[i], grads[j]) - float(ema[0, i, j]) for j in range(3) if j != i) >= -1e-9


def test_gradvac_leaves_gradients_unchanged_above_target():
    grads = torch.tensor([[1.0, 0.2, 0.0], [0.8, 0.0, 0.3]])
    out, _ = gradvac(grads, torch.full((1, 2, 2), -0.5), beta=0.01, generator=gen())
    assert torch.equal(out, sum_grads(grads))


def test_gradvac_ema_updates_when_target_not_violated_reference_defect_4():
    # The reference code only updated phi_hat when phi < phi_hat, so it could only drift down.
    grads = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos = 1 / sqrt(2) > target 0
    ema = gradvac_init(2)
    out, new_ema = gradvac(grads, ema, beta=0.5, generator=gen())
    assert torch.equal(out, sum_grads(grads))  # not violated: no change
    expected = 0.5 / math.sqrt(2)
    assert torch.allclose(new_ema, torch.tensor([[[0.0, expected], [expected, 0.0]]]))
    for _ in range(20):
        _, ema = gradvac(grads, ema, beta=0.5, generator=gen())
    assert torch.allclose(ema[0, 0, 1], torch.tensor(1 / math.sqrt(2)), atol=1e-5)  # drifts up, to phi


def test_gradvac_segments_are_independent():
    # segment 0 (coords 0-1) conflicts, segment 1 (coords 2-3) agrees
    grads = torch.tensor([[1.0, 0.0, 1.0, 0.0], [-1.0, 1.0, 1.0, 1.0]])
    segments = [(0, 2), (2, 4)]
    ema = gradvac_init(2, num_segments=2)
    assert ema.shape == (2, 2, 2)
    out, new_ema = gradvac(grads, ema, beta=0.1, generator=gen(), segments=segments)
    # segment 0: the PCGrad hand case, (0.5, 0.5) + (0, 1); segment 1 untouched, (1, 0) + (1, 1)
    assert torch.allclose(out, torch.tensor([0.5, 1.5, 2.0, 1.0]))
    c0, c1 = -1 / math.sqrt(2), 1 / math.sqrt(2)
    assert torch.allclose(new_ema[0], torch.tensor([[0.0, 0.1 * c0], [0.1 * c0, 0.0]]))
    assert torch.allclose(new_ema[1], torch.tensor([[0.0, 0.1 * c1], [0.1 * c1, 0.0]]))
    whole, _ = gradvac(grads, gradvac_init(2), beta=0.1, generator=gen())  # cos over all 4 = 0: no change
    assert torch.equal(whole, sum_grads(grads))
    with pytest.raises(ValueError):
        gradvac(grads, gradvac_init(2), beta=0.1, generator=gen(), segments=segments)
    with pytest.raises(ValueError):
        gradvac(grads, ema, beta=0.1, generator=gen(), segments=[(0, 2), (3, 4)])


def test_gradvac_zero_gradient_is_left_alone():
    grads = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    ema = torch.full((2, 2, 2), 0.3)
    out, new_ema = gradvac(grads, ema, beta=0.5, generator=gen(), segments=[(0, 2), (2, 4)])
    assert torch.isfinite(out).all() and torch.isfinite(new_ema).all()
    assert torch.equal(new_ema[1], ema[1])  # cosine undefined in segment 1: target kept


def test_gradvac_is_deterministic_under_a_seed():
    grads = torch.randn(3, 8, generator=gen(7))
    ema = torch.full((1, 3, 3), 0.2)
    a = gradvac(grads, ema, 0.01, gen(1))
    b = gradvac(grads, ema, 0.01, gen(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(COMBINERS))
def test_combiners_share_one_contract(name):
    combiner = get_combiner(name)
    grads = torch.randn(3, 6, generator=gen(3))
    state = combiner.init_state(3, 2)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    combined, new_state = combiner.combine(grads, state, gen(), [(0, 4), (4, 6)])
    assert combined.shape == (6,)
    assert new_state.keys() == state.keys()


def test_registry_entries_match_the_functions_and_take_knobs():
    grads = torch.randn(3, 6, generator=gen(4))
    assert torch.equal(get_combiner("sum").combine(grads, {}, gen(), None)[0], sum_grads(grads))
    assert torch.equal(get_combiner("pcgrad").combine(grads, {}, gen(9), None)[0], pcgrad(grads, gen(9)))
    combiner = COMBINERS["gradvac"](beta=0.3)
    assert combiner.beta == 0.3 and get_combiner("gradvac").beta == 0.01
    state = combiner.init_state(3, 1)
    out, new_state = combiner.combine(grads, state, gen(9), None)
    expected = gradvac(grads, gradvac_init(3), 0.3, gen(9))
    assert torch.equal(out, expected[0]) and torch.equal(new_state["ema"], expected[1])
    with pytest.raises(ValueError, match="gradvac"):
        get_combiner("mgda")
    with pytest.raises(ValueError):
        get_combiner("gradvac", beta=0.0)


# ---------------------------------------------------------------------------- Gradient Compromise


def test_compromise_beta():
    assert compromise_beta(1, 5) == pytest.approx(0.2)
    assert compromise_beta(3, 5) == pytest.approx(0.6)
    assert compromise_beta(5, 5) == pytest.approx(1.0)
    assert compromise_beta(1, 1) == pytest.approx(0.2)  # E = 1: no 0/0 (reference defect 6)
    with pytest.raises(ValueError):
        compromise_beta(0, 3)


def test_compromise_weights_follow_inverse_size_power():
    sizes = {"sst": 8544, "para": 141506, "sts": 6041}
    first = compromise_weights(sizes, 1, 3)
    assert first == pytest.approx({t: n**-0.2 for t, n in sizes.items()})
    last = compromise_weights(sizes, 3, 3)
    assert last == pytest.approx({t: 1 / n for t, n in sizes.items()})


def test_reference_code_weights_differ_from_the_reports():
    # Reference code: divide by the running batch count^alpha (defect 3); report: by N^beta.
    sizes = {"sst": 8544, "para": 141506, "sts": 6041}
    counts = {"sst": 3, "para": 0, "sts": 5}
    ref = reference_code_weights(counts, alpha=0.6)
    assert ref == pytest.approx({"sst": 3**-0.6, "para": 1.0, "sts": 5**-0.6})
    assert ref != pytest.approx(compromise_weights(sizes, 2, 3))


def test_compromise_adjusted_probabilities():
    adjusted = compromise_adjusted({"sst": 0.1, "para": 0.7, "sts": 0.2}, 16)
    # (p n - 1) / (n - 3): 0.6 / 13, 10.2 / 13, 2.2 / 13 (sum 1, nothing clipped)
    assert adjusted == pytest.approx({"sst": 0.6 / 13, "para": 10.2 / 13, "sts": 2.2 / 13})
    clipped = compromise_adjusted({"sst": 0.02, "para": 0.9, "sts": 0.08}, 16)
    # clip(-0.68/13) = 0, clip(13.4/13) = 1, 0.28/13; renormalised
    assert clipped == pytest.approx({"sst": 0.0, "para": 1 / (1 + 0.28 / 13), "sts": (0.28 / 13) / (1 + 0.28 / 13)})


def test_compromise_group_contains_each_task_and_is_deterministic():
    probs = annealed({"sst": 8544, "para": 141506, "sts": 6041}, 1, 3)
    for seed in range(20):
        group = compromise_group(probs, 16, gen(seed))
        assert len(group) == 16 and set(probs) <= set(group)
        assert group == compromise_group(probs, 16, gen(seed))
    assert sorted(compromise_group(probs, 3, gen())) == sorted(probs)
    with pytest.raises(ValueError):
        compromise_group(probs, 2, gen())


def test_compromise_group_extra_draws_follow_adjusted_probabilities():
    probs = {"sst": 0.1, "para": 0.7, "sts": 0.2}
    n, groups = 16, 2000
    g = gen(11)
    counts = dict.fromkeys(probs, 0)
    for _ in range(groups):
        for task in compromise_group(probs, n, g):
            counts[task] += 1
    extras = (n - 3) * groups
    adjusted = compromise_adjusted(probs, n)
    for task in probs:
        assert (counts[task] - groups) / extras == pytest.approx(adjusted[task], abs=0.01)
    # overall, each task fills the share of the group the sampler asked for
    for task in probs:
        assert counts[task] / (n * groups) == pytest.approx(probs[task], abs=0.01)


# ------------------------------------------- coefficient space equals the vector algorithm


def _vector_pcgrad(grads, generator):
    """PCGrad written directly on vectors, as in the paper's Algorithm 1 (the reference)."""
    projected = grads.clone()
    for i in range(grads.shape[0]):
        others = [j for j in range(grads.shape[0]) if j != i]
        for k in torch.randperm(len(others), generator=generator).tolist():
            j = others[k]
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / (grads[j] @ grads[j]) * grads[j]
    return projected


def _vector_gradvac(grads, ema, beta, generator):
    """GradVac on whole vectors, directly from Wang et al.'s update rule (the reference)."""
    vaccinated, new_ema = grads.clone(), ema.clone()
    for i in range(grads.shape[0]):
        others = [j for j in range(grads.shape[0]) if j != i]
        for k in torch.randperm(len(others), generator=generator).tolist():
            j = others[k]
            g_i, g_j = vaccinated[i], grads[j]
            phi = (g_i @ g_j) / (g_i.norm() * g_j.norm())
            target = ema[0, i, j]
            if phi < target:
                w = g_i.norm() * (target * (1 - phi**2).sqrt() - phi * (1 - target**2).sqrt()) / (
                    g_j.norm() * (1 - target**2).sqrt())
                vaccinated[i] = g_i + w * g_j
            new_ema[0, i, j] = (1 - beta) * target + beta * phi
    return vaccinated, new_ema


@pytest.mark.parametrize("seed", range(5))
def test_coefficient_space_pcgrad_equals_the_vector_algorithm(seed):
    grads = torch.randn(4, 50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = _vector_pcgrad(grads, torch.Generator().manual_seed(seed))
    assert torch.allclose(pcgrad_project(grads, torch.Generator().manual_seed(seed)), expected, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_coefficient_space_gradvac_equals_the_vector_algorithm(seed):
    g = torch.Generator().manual_seed(seed)
    grads = torch.randn(3, 40, generator=g, dtype=torch.float64)
    ema = torch.rand(1, 3, 3, generator=g, dtype=torch.float64) * 0.5
    expected, expected_ema = _vector_gradvac(grads, ema, 0.3, torch.Generator().manual_seed(seed))
    got, got_ema = gradvac_project(grads, ema, 0.3, torch.Generator().manual_seed(seed))
    assert torch.allclose(got, expected, atol=1e-10) and torch.allclose(got_ema, expected_ema, atol=1e-12)


@pytest.mark.parametrize("lengths", [[23], [7, 11, 5], [1, 22]])
def test_blocked_cpu_gram_equals_the_matrix_product(monkeypatch, lengths):
    import mtlib.training.combiners as gradients

    monkeypatch.setattr(gradients, "_GRAM_BLOCK", 3)  # several blocks per segment, a ragged last one
    grads = torch.randn(3, 23, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.stack([chunk @ chunk.T for chunk in grads.split(lengths, dim=1)])
    got = gradients._gram(grads, lengths)
    assert got.shape == (len(lengths), 3, 3) and got.dtype == torch.float64
    assert torch.allclose(got, expected, atol=1e-12)
