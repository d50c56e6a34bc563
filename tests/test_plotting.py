"""mtlib.study.plotting: learning curves over seeds, drawn and written as PNG."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtlib.study import plotting
from tests.helpers import assert_png, histories, history


def test_learning_curve_means_seeds_and_interpolates():
    long = histories({"a": [history([10, 20, 30], [0.2, 0.4, 0.6]), history([10, 20, 30], [0.4, 0.6, 0.8])],
                      "b": [history([10, 30], [0.1, 0.5]), history([20], [0.9])]})
    curve = plotting.learning_curve(long, metric="sst/acc")
    a = curve[curve["experiment"] == "a"]
    assert np.allclose(a["mean"], [0.3, 0.5, 0.7]) and np.allclose(a["std"], np.sqrt(0.02))
    b = curve[curve["experiment"] == "b"].set_index("examples")
    assert b.loc[20.0, "n"] == 2 and b.loc[20.0, "mean"] == pytest.approx((0.3 + 0.9) / 2)
    assert b.loc[30.0, "n"] == 1 and b.loc[30.0, "mean"] == pytest.approx(0.5) and np.isnan(b.loc[30.0, "std"])


def test_learning_curves_one_line_per_experiment(tmp_path):
    long = pd.concat([history([32, 64, 96], [0.3, 0.4, 0.5]).assign(experiment=e, seed=s)
                      for e in ("base_model", "pcgrad", "gradvac") for s in (1, 2)])
    fig = plotting.plot_learning_curves(long, tmp_path / "curves.png", labels={"pcgrad": "PCGrad"})
    assert_png(tmp_path / "curves.png")
    (ax,) = fig.axes
    assert len(ax.lines) == 3 and len(ax.collections) == 3  # a line and a band each
    assert any("PCGrad" in t.get_text() for t in ax.get_legend().get_texts())
