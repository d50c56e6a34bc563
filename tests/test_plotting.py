"""mtlib.study.plotting: learning curves over seeds, drawn and written as PNG."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtlib.study import plotting
from tests.helpers import assert_png, histories, history


def test_learning_curve_means_seeds_and_interpolates():
    long = histories({"a": [history([10, 20, 30], [0.2, 0.4, 0.6]), history([10, 20, 30], [0.4, 0.6, 0.8])],
                      "b": [history([10, 30], [0.1, 0.5]), history([20, 40], [0.9, 0.9])]})
    curve = plotting.learning_curve(long, metric="sst/acc")
    a = curve[curve["experiment"] == "a"]
    assert np.allclose(a["mean"], [0.3, 0.5, 0.7]) and np.allclose(a["std"], np.sqrt(0.02))
    b = curve[curve["experiment"] == "b"].set_index("examples")
    assert list(b.index) == [20.0, 30.0]  # the range both seeds cover: 10 and 40 are one seed's alone
    assert (b["n"] == 2).all() and b.loc[20.0, "mean"] == pytest.approx((0.3 + 0.9) / 2)


def test_seeds_average_on_a_common_grid_without_end_spikes():
    """Two seeds that rise slowly, one 0.2 above the other, evaluated at shifted points: on
    the union grid the mean would jump to the upper seed alone at its last point (310)."""
    xs = np.arange(0, 301, 100)
    long = histories({"a": [history(xs, 0.5 + xs / 10_000), history(xs + 10, 0.7 + (xs + 10) / 10_000)]})
    curve = plotting.learning_curve(long, metric="sst/acc")
    assert curve["examples"].min() == 10 and curve["examples"].max() == 300
    assert (curve["n"] == 2).all()
    assert np.allclose(curve["mean"], 0.6 + curve["examples"] / 10_000, atol=0.002)
    assert np.abs(np.diff(curve["mean"])).max() < 0.02


def text_boxes(fig):
    """(text, display box) of every title, footer, axis label, legend entry and annotation."""
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    texts = [*fig.texts, *(t for t in (fig._suptitle, fig._supxlabel) if t is not None)]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += ax.get_legend().get_texts() if ax.get_legend() else []
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in texts]


def assert_inside(fig):
    for text, box in text_boxes(fig):
        assert box.x0 >= -0.5 and box.x1 <= fig.bbox.width + 0.5, f"{text!r} leaves the figure: {box}"
        assert box.y0 >= -0.5 and box.y1 <= fig.bbox.height + 0.5, f"{text!r} leaves the figure: {box}"


def test_a_title_longer_than_the_figure_is_wrapped_to_fit(tmp_path):
    long = histories({"a": [history([10, 20], [0.2, 0.4])]})
    title = "Validation mean against training examples seen, at twice the profile's budget, " * 2
    fig = plotting.plot_learning_curves(long, tmp_path / "curves.png", title=title)
    assert_inside(fig)
    (ax,) = fig.axes
    assert ax.get_title().count("\n") >= 1 and " ".join(ax.get_title().split()) == " ".join(title.split())


def test_a_figure_names_its_run(tmp_path):
    long = histories({"base_model": [history([10, 20], [0.2, 0.4])] * 3, "pcgrad": [history([10, 20], [0.3, 0.5])]})
    fig = plotting.plot_learning_curves(long, tmp_path / "curves.png", run=plotting.run_caption(long, "cpu"))
    assert fig.get_supxlabel() == "profile cpu · seeds 0–2 · experiments base_model, pcgrad"
    assert plotting.plot_learning_curves(long, tmp_path / "c2.png").get_supxlabel().startswith("seeds 0–2")
    assert plotting.run_caption(long.assign(seed=[1, 1, 2, 2, 4, 4, 5, 5]), "cpu", many=1) == \
        "profile cpu · seeds 1, 2, 4, 5 · 2 experiments"


def test_learning_curves_one_line_per_experiment(tmp_path):
    long = pd.concat([history([32, 64, 96], [0.3, 0.4, 0.5]).assign(experiment=e, seed=s)
                      for e in ("base_model", "pcgrad", "gradvac") for s in (1, 2)])
    fig = plotting.plot_learning_curves(long, tmp_path / "curves.png", labels={"pcgrad": "PCGrad"})
    assert_png(tmp_path / "curves.png")
    (ax,) = fig.axes
    assert len(ax.lines) == 3 and len(ax.collections) == 3  # a line and a band each
    assert any("PCGrad" in t.get_text() for t in ax.get_legend().get_texts())
