"""mtlib.study.data_figures (the data notebook's figures): each writes a PNG and draws what it should."""
from __future__ import annotations

import numpy as np
import pytest

from mtlib.study import data_figures
from tests.helpers import assert_png


def test_class_distributions(tmp_path):
    rng = np.random.default_rng(0)
    labels = {"sst": rng.integers(0, 5, 200), "para": rng.integers(0, 2, 300), "sts": rng.uniform(0, 5, 100)}
    labels["sst"][:5] = 3  # class 3 for sure; class counts must still cover all five
    fig = data_figures.plot_class_distributions(labels, tmp_path / "classes.png")
    assert_png(tmp_path / "classes.png")
    sst, para, sts = fig.axes
    assert [p.get_height() for p in sst.patches] == list(np.bincount(labels["sst"], minlength=5))
    assert len(para.patches) == 2 and sum(p.get_height() for p in para.patches) == 300
    assert len(sts.patches) == 20 and sum(p.get_height() for p in sts.patches) == 100
    with pytest.raises(KeyError, match="sentiment"):
        data_figures.plot_class_distributions({"sentiment": [1]}, tmp_path / "x.png")


def test_token_lengths_mark_the_percentile(tmp_path):
    lengths = {"sst": np.arange(1, 101), "para": np.arange(10, 60)}
    fig = data_figures.plot_token_lengths(lengths, tmp_path / "lengths.png")
    assert_png(tmp_path / "lengths.png")
    assert len(fig.axes) == 2
    for ax, values in zip(fig.axes, lengths.values()):
        (line,) = ax.lines
        assert line.get_xdata()[0] == pytest.approx(np.percentile(values, 98))


def test_augmentation_counts_before_and_after(tmp_path):
    before = {"sst": np.array([0] * 10 + [1] * 40 + [2] * 20 + [3] * 40 + [4] * 15), "para": {0: 60, 1: 40}}
    after = {"sst": {c: 40 for c in range(5)}, "para": {0: 60, 1: 60}}
    fig = data_figures.plot_augmentation_counts(before, after, tmp_path / "augment.png")
    assert_png(tmp_path / "augment.png")
    sst, para = fig.axes
    assert len(sst.patches) == 10 and len(para.patches) == 4
    assert [p.get_height() for p in sst.patches[:5]] == [10, 40, 20, 40, 15]
    assert [p.get_height() for p in para.patches[2:]] == [60, 60]


def test_sampler_probabilities(tmp_path):
    probabilities = {
        "round_robin": {e: {"sst": 1 / 3, "para": 1 / 3, "sts": 1 / 3} for e in (1, 2, 3)},
        "annealed": {1: {"sst": 0.1, "para": 0.8, "sts": 0.1}, 3: {"sst": 0.3, "para": 0.4, "sts": 0.3},
                     2: {"sst": 0.2, "para": 0.6, "sts": 0.2}},
    }
    fig = data_figures.plot_sampler_probabilities(probabilities, tmp_path / "samplers.png")
    assert_png(tmp_path / "samplers.png")
    assert len(fig.axes) == 2 and [len(ax.lines) for ax in fig.axes] == [3, 3]
    para = fig.axes[1].lines[1]
    assert list(para.get_xdata()) == [1, 2, 3] and list(para.get_ydata()) == [0.8, 0.6, 0.4]
