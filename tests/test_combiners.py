"""Tests of mtlib.training.combiners: hand-computed toy cases and properties of PCGrad and GradVac."""
import math

import pytest
import torch

from mtlib.config import ConfigError, load_config
from mtlib.settings import COMBINERS as SETTINGS
from mtlib.settings import GradVacSettings
from mtlib.training.combiners import COMBINERS, GradVac, PCGrad, Sum, build_combiner
from tests.helpers import ROOT

PARAMS = ROOT / "params.yaml"


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


# The algorithms through the combiners' contract, under the names of the equations.
def sum_grads(grads, out=None):
    return Sum().combine(grads, {}, gen(), out=out)[0]


def pcgrad(grads, generator, out=None):
    return PCGrad().combine(grads, {}, generator, out=out)[0]


def pcgrad_project(grads, generator):
    return PCGrad().project(grads, {}, generator)[0]


def gradvac_init(num_tasks, num_segments=1):
    return GradVac(0.01).init_state(num_tasks, num_segments)["ema"]


def gradvac(grads, ema, beta, generator, segments=None, out=None):
    combined, state = GradVac(beta).combine(grads, {"ema": ema}, generator, segments, out)
    return combined, state["ema"]


def gradvac_project(grads, ema, beta, generator, segments=None):
    rows, state = GradVac(beta).project(grads, {"ema": ema}, generator, segments)
    return rows, state["ema"]


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
    combiner = build_combiner(SETTINGS[name]())
    grads = torch.randn(3, 6, generator=gen(3))
    state = combiner.init_state(3, 2)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    combined, new_state = combiner.combine(grads, state, gen(), [(0, 4), (4, 6)])
    assert combined.shape == (6,)
    assert new_state.keys() == state.keys()


def test_registry_entries_match_the_functions_and_take_knobs():
    grads = torch.randn(3, 6, generator=gen(4))
    assert torch.equal(build_combiner(SETTINGS["sum"]()).combine(grads, {}, gen(), None)[0], sum_grads(grads))
    assert torch.equal(build_combiner(SETTINGS["pcgrad"]()).combine(grads, {}, gen(9), None)[0], pcgrad(grads, gen(9)))
    combiner = build_combiner(GradVacSettings(beta=0.3))
    assert combiner.beta == 0.3 and build_combiner(GradVacSettings()).beta == 0.01
    state = combiner.init_state(3, 1)
    out, new_state = combiner.combine(grads, state, gen(9), None)
    expected = gradvac(grads, gradvac_init(3), 0.3, gen(9))
    assert torch.equal(out, expected[0]) and torch.equal(new_state["ema"], expected[1])


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
    """GradVac on whole vectors, directly from Wang et al.'s batch plan (the reference)."""
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


def test_every_combiner_has_settings_of_the_same_name():
    assert sorted(SETTINGS) == sorted(COMBINERS) and all(SETTINGS[name].name == name for name in SETTINGS)


@pytest.mark.parametrize("override, message", [
    ("train.combiner_args={beta: 5}", r"train.combiner_args.beta: must be a number in \(0, 1\], got 5"),
    ("train.combiner_args={beta: 0}", r"train.combiner_args.beta: must be a number in \(0, 1\], got 0"),
    ("train.combiner_args={betta: 0.1}", r"train.combiner_args: unknown key\(s\) \['betta'\]; valid keys: \['beta'\]"),
    ("train.combiner=mgda", r"train.combiner: 'mgda' is not one of \['gradvac', 'pcgrad', 'sum'\]"),
])
def test_combiner_settings_name_the_full_key_when_the_config_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PARAMS, "hidden_gradvac", "smoke", overrides=[override])


def test_a_combiner_that_needs_task_gradients_needs_an_update_that_gives_them():
    with pytest.raises(ConfigError, match=r"train.combiner: 'pcgrad' needs a gradient per task.*"
                                          r"\['compromise', 'compromise_reference', 'compromise_then_sampled', 'each_task'\]"):
        load_config(PARAMS, "base_model", "smoke", overrides=["train.combiner=pcgrad"])
    assert load_config(PARAMS, "base_model", "smoke", overrides=["train.plan=each_task"]).methods.combiner.name == "sum"
