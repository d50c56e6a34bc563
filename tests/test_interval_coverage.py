"""scripts/interval_coverage.py: the simulation measures coverage, and catches an interval that is wrong."""
import importlib.util
import math
import sys

import numpy as np

from mtlib.study.stats import t_half_width
from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("interval_coverage", ROOT / "scripts" / "interval_coverage.py")
interval_coverage = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = interval_coverage  # dataclasses look their module up there
spec.loader.exec_module(interval_coverage)

STUDIES = 150
TOLERANCE = 4 * math.sqrt(0.95 * 0.05 / STUDIES)  # four simulation standard errors of a 95% coverage


def seeds_only(values, boot, rng):
    """A deliberately wrong interval: the t-interval over seeds, blind to the shared dev sample."""
    half = t_half_width(values)
    return values.mean() - half, values.mean() + half


def test_the_table_interval_covers_near_nominal_and_a_seeds_only_interval_is_caught():
    regime = {"acc": interval_coverage.Accuracy(seed_sd=0.005, own=0.0)}  # the shared dev sample dominates
    methods = {"table": lambda v, b, rng: interval_coverage.table_interval(v, b), "seeds only": seeds_only}
    result = interval_coverage.coverage(regime, STUDIES, k=4, m=300, replicates=100, methods=methods)
    assert abs(result["row", "table"][0] - 0.95) < TOLERANCE
    assert result["row", "seeds only"][0] < 0.95 - TOLERANCE
    assert result["row", "seeds only"][1] < result["row", "table"][1]


def test_the_pearson_truth_is_the_population_r_of_the_simulated_runs():
    task = interval_coverage.Pearson(seed_sd=0.0, s_item=0.5, s_run=(0.5, 1.0))
    rng = np.random.default_rng(0)
    truth = task.truth(rng)
    runs, y = task.simulate(rng, k=2, m=200_000)
    measured = [np.corrcoef(run, y)[0, 1] for run in runs]
    np.testing.assert_allclose(measured, [truth[0]] * 2 + [truth[1]] * 2, atol=0.005)
    assert truth[0] == 1 / math.sqrt(1.5)


def test_a_three_task_regime_is_scored_by_the_mean():
    regime = interval_coverage.REGIMES["mean of acc, acc, r"]
    methods = {"table": lambda v, b, rng: interval_coverage.table_interval(v, b)}
    result = interval_coverage.coverage(regime, 3, k=3, m=200, replicates=20, methods=methods)
    assert set(result) == {("row", "table"), ("delta", "table")}


def test_flags_say_which_side_and_whether_beyond_noise():
    assert interval_coverage.flag(0.95, 1000) == ""
    assert interval_coverage.flag(0.925, 1000) == "short"
    assert interval_coverage.flag(0.90, 1000) == "short!"
    assert interval_coverage.flag(0.99, 1000) == "wide!"
    assert interval_coverage.study_seeds() >= 2
