import math

import pytest

from mtlib.training.samplers import SAMPLERS, TaskSampler, annealed, annealed_alpha

SIZES = {"sst": 8544, "para": 141506, "sts": 6041}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("epoch", [1, 3, 5])
def test_probabilities_sum_to_one(name, epoch):
    probs = SAMPLERS[name].probabilities(SIZES, epoch, 5)
    assert set(probs) == set(SIZES) and math.isclose(sum(probs.values()), 1.0) and min(probs.values()) > 0


def test_annealed_alpha_formula_and_single_epoch():
    assert annealed_alpha(1, 10) == 1.0
    assert annealed_alpha(10, 10) == pytest.approx(0.2)
    assert annealed_alpha(4, 7) == pytest.approx(1 - 0.8 * 3 / 6)
    assert annealed_alpha(1, 1) == 1.0  # E = 1 must not divide by zero
    with pytest.raises(ValueError):
        annealed_alpha(0, 3)


@pytest.mark.parametrize("epoch", [1, 2, 5])
def test_annealed_probabilities_follow_the_formula(epoch):
    alpha = 1 - 0.8 * (epoch - 1) / 4
    total = sum(n ** alpha for n in SIZES.values())
    probs = annealed(SIZES, epoch, 5)
    for task, n in SIZES.items():
        assert probs[task] == pytest.approx(n ** alpha / total)


def test_named_samplers():
    assert SAMPLERS["random"].probabilities(SIZES, 1, 1) == pytest.approx({t: 1 / 3 for t in SIZES})
    prop = SAMPLERS["proportional"].probabilities(SIZES, 1, 1)
    assert prop["para"] == pytest.approx(141506 / sum(SIZES.values()))
    sqrt = SAMPLERS["square_root"].probabilities(SIZES, 1, 1)
    assert sqrt["sst"] / sqrt["sts"] == pytest.approx(math.sqrt(8544 / 6041))
    assert annealed(SIZES, 1, 5) == pytest.approx(prop)  # epoch 1: proportional


def test_draws_are_deterministic_and_resume_exactly():
    a = TaskSampler("annealed", SIZES, 3, seed=5)
    first = [a.draw(1) for _ in range(50)]
    b = TaskSampler("annealed", SIZES, 3, seed=5)
    assert [b.draw(1) for _ in range(50)] == first
    c = TaskSampler("annealed", SIZES, 3, seed=5)
    [c.draw(1) for _ in range(20)]
    d = TaskSampler("annealed", SIZES, 3, seed=5)
    d.load_state_dict(c.state_dict())
    assert [d.draw(1) for _ in range(30)] == first[20:]
    assert [TaskSampler("annealed", SIZES, 3, seed=6).draw(1) for _ in range(50)] != first


def test_draw_frequencies_match_probabilities():
    sampler = TaskSampler("proportional", SIZES, 1, seed=0)
    draws = [sampler.draw(1) for _ in range(4000)]
    assert draws.count("para") / 4000 == pytest.approx(141506 / sum(SIZES.values()), abs=0.03)


def test_round_robin_cycles():
    sampler = TaskSampler("round_robin", SIZES, 1, seed=0)
    assert [sampler.draw(1) for _ in range(6)] == ["sst", "para", "sts"] * 2
