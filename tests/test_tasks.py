"""The task registry: each task's loss, prediction rule and metric on hand-computed cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtlib.tasks import TASK_NAMES, TASKS, accuracy, metric_key, pearson


def test_the_one_task_order_and_metric_keys():
    assert TASK_NAMES == ("sst", "para", "sts")
    assert [metric_key(t) for t in TASK_NAMES] == ["sst/acc", "para/acc", "sts/pearson"]
    assert [TASKS[t].is_pair for t in TASK_NAMES] == [False, True, True]


def test_predictions_follow_each_tasks_rule():
    assert TASKS["sst"].predict(torch.tensor([[0.1, 2.0, 0, 0, 0], [0, 0, 0, 0, 3.0]])).tolist() == [1, 4]
    assert TASKS["para"].predict(torch.tensor([-0.1, 0.0, 0.2])).tolist() == [0, 0, 1]  # a positive logit
    assert TASKS["sts"].predict(torch.tensor([-1.0, 2.5, 7.0])).tolist() == [0.0, 2.5, 5.0]  # clamped to [0, 5]


def test_losses_are_the_standard_ones_computed_in_fp32():
    logits = torch.randn(4, 5, dtype=torch.bfloat16)
    labels = torch.tensor([0, 1, 2, 4])
    loss = TASKS["sst"].loss(logits, labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(F.cross_entropy(logits.float(), labels).item())
    assert TASKS["para"].loss(torch.zeros(2), torch.tensor([0, 1])).item() == pytest.approx(np.log(2))
    assert TASKS["sts"].loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0])).item() == pytest.approx(0.5)


def test_metrics_on_hand_computed_cases():
    assert accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 0.5
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.5])) == pytest.approx(0.997949, abs=1e-6)
    assert pearson(np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0])) == 0.0  # undefined: no correlation


def test_random_predictions_stay_in_the_label_range():
    rng = np.random.default_rng(0)
    sst, sts = TASKS["sst"].random_predictions(1000, rng), TASKS["sts"].random_predictions(1000, rng)
    assert set(sst.tolist()) == {0, 1, 2, 3, 4}
    assert sts.min() >= 0 and sts.max() <= 5 and len(set(sts.tolist())) > 900
