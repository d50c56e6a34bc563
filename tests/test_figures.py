"""mtlib.study.figures: each plot writes a PNG from small synthetic data and draws what it should."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtlib.study import figures
from mtlib.study.report import REPORT_TABLE2, summarise

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def history(examples, values):
    values = np.asarray(values, dtype=float)
    return pd.DataFrame({"update": np.arange(1, len(values) + 1), "epoch": np.arange(1, len(values) + 1),
                         "examples": examples, "train_seconds": np.arange(len(values)) * 2.0,
                         "sst/acc": values, "para/acc": values + 0.2, "sts/pearson": values + 0.1,
                         "mean": values + 0.1})


@pytest.fixture(scope="module")
def summary():
    rng = np.random.default_rng(0)
    rows = []
    for experiment, level, heads in (("base_model", 0.6, 5383), ("mlp", 0.65, 600_000), ("single", 0.5, 2000)):
        for seed in (1, 2, 3) if experiment != "single" else (1,):
            sst, para, sts = level + rng.normal(0, 0.01, 3)
            rows.append({"experiment": experiment, "seed": seed, "sst": sst, "para": para, "sts": sts,
                         "mean": (sst + para + sts) / 3, "params_total": 10**6 + heads,
                         "params_trainable": 10**6 + heads, "params_task_specific": heads,
                         "train_seconds": 10.0, "backbone": "minilm", "profile": "cpu"})
    table_rows = {"base_model": {"label": "BaseModel: BERT + sentence concat", "parent": None},
                  "mlp": {"label": "+ 1 hidden layer", "parent": "base_model"}}
    return summarise(pd.DataFrame(rows), table_rows)


def test_class_distributions(tmp_path):
    rng = np.random.default_rng(0)
    labels = {"sst": rng.integers(0, 5, 200), "para": rng.integers(0, 2, 300), "sts": rng.uniform(0, 5, 100)}
    labels["sst"][:5] = 3  # class 3 for sure; class counts must still cover all five
    fig = figures.plot_class_distributions(labels, tmp_path / "classes.png")
    assert_png(tmp_path / "classes.png")
    sst, para, sts = fig.axes
    assert [p.get_height() for p in sst.patches] == list(np.bincount(labels["sst"], minlength=5))
    assert len(para.patches) == 2 and sum(p.get_height() for p in para.patches) == 300
    assert len(sts.patches) == 20 and sum(p.get_height() for p in sts.patches) == 100
    with pytest.raises(KeyError, match="sentiment"):
        figures.plot_class_distributions({"sentiment": [1]}, tmp_path / "x.png")


def test_token_lengths_mark_the_percentile(tmp_path):
    lengths = {"sst": np.arange(1, 101), "para": np.arange(10, 60)}
    fig = figures.plot_token_lengths(lengths, tmp_path / "lengths.png")
    assert_png(tmp_path / "lengths.png")
    assert len(fig.axes) == 2
    for ax, values in zip(fig.axes, lengths.values()):
        (line,) = ax.lines
        assert line.get_xdata()[0] == pytest.approx(np.percentile(values, 98))


def test_augmentation_counts_before_and_after(tmp_path):
    before = {"sst": np.array([0] * 10 + [1] * 40 + [2] * 20 + [3] * 40 + [4] * 15), "para": {0: 60, 1: 40}}
    after = {"sst": {c: 40 for c in range(5)}, "para": {0: 60, 1: 60}}
    fig = figures.plot_augmentation_counts(before, after, tmp_path / "augment.png")
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
    fig = figures.plot_sampler_probabilities(probabilities, tmp_path / "samplers.png")
    assert_png(tmp_path / "samplers.png")
    assert len(fig.axes) == 2 and [len(ax.lines) for ax in fig.axes] == [3, 3]
    para = fig.axes[1].lines[1]
    assert list(para.get_xdata()) == [1, 2, 3] and list(para.get_ydata()) == [0.8, 0.6, 0.4]


def test_learning_curve_means_seeds_and_interpolates():
    histories = {"a": [history([10, 20, 30], [0.2, 0.4, 0.6]), history([10, 20, 30], [0.4, 0.6, 0.8])],
                 "b": [history([10, 30], [0.1, 0.5]), history([20], [0.9])]}
    curve = figures.learning_curve(histories, metric="sst/acc")
    a = curve[curve["experiment"] == "a"]
    assert np.allclose(a["mean"], [0.3, 0.5, 0.7]) and np.allclose(a["std"], np.sqrt(0.02))
    b = curve[curve["experiment"] == "b"].set_index("examples")
    assert b.loc[20.0, "n"] == 2 and b.loc[20.0, "mean"] == pytest.approx((0.3 + 0.9) / 2)
    assert b.loc[30.0, "n"] == 1 and b.loc[30.0, "mean"] == pytest.approx(0.5) and np.isnan(b.loc[30.0, "std"])


def test_learning_curves_one_line_per_experiment(tmp_path):
    long = pd.concat([history([32, 64, 96], [0.3, 0.4, 0.5]).assign(experiment=e, seed=s)
                      for e in ("base_model", "pcgrad", "gradvac") for s in (1, 2)])
    fig = figures.plot_learning_curves(long, tmp_path / "curves.png", labels={"pcgrad": "PCGrad"})
    assert_png(tmp_path / "curves.png")
    (ax,) = fig.axes
    assert len(ax.lines) == 3 and len(ax.collections) == 3  # a line and a band each
    assert any("PCGrad" in t.get_text() for t in ax.get_legend().get_texts())


def test_compromise_against_annealed(tmp_path):
    histories = {"gradient_compromise": [history([10, 20], [0.5, 0.6]), history([10, 20], [0.4, 0.7])],
                 "annealed": [history([10, 20], [0.2, 0.5])], "other": [history([10], [0.1])]}
    fig = figures.plot_compromise_vs_annealed(histories, tmp_path / "figure5.png")
    assert_png(tmp_path / "figure5.png")
    assert len(fig.axes) == 3 and all(len(ax.lines) == 2 for ax in fig.axes)
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [0.45, 0.65])
    with pytest.raises(KeyError, match="annealed"):
        figures.plot_compromise_vs_annealed({"gradient_compromise": histories["annealed"]}, tmp_path / "x.png")


def test_confusion_matrix_is_row_normalised_and_annotated(tmp_path):
    labels = [0, 0, 0, 0, 1, 1, 2, 3, 3, 4]
    predictions = [0, 0, 1, 2, 1, 1, 2, 4, 3, 4]
    matrix = figures.confusion_matrix(labels, predictions)
    assert np.allclose(matrix.sum(axis=1), 1)
    assert matrix[0].tolist() == [0.5, 0.25, 0.25, 0, 0] and matrix[3].tolist() == [0, 0, 0, 0.5, 0.5]
    assert figures.confusion_matrix([0], [0], 3)[1].tolist() == [0, 0, 0]  # no example of class 1: no NaN
    fig = figures.plot_confusion_matrix(labels, predictions, tmp_path / "confusion.png")
    assert_png(tmp_path / "confusion.png")
    ax = fig.axes[0]
    assert np.allclose(np.asarray(ax.collections[0].get_array()).reshape(5, 5), matrix)
    assert [t.get_text() for t in ax.texts][:5] == ["0.50", "0.25", "0.25", "0.00", "0.00"]


def test_report_comparison_puts_the_report_beside_each_experiment(tmp_path, summary):
    fig = figures.plot_report_comparison(summary, tmp_path / "comparison.png")
    assert_png(tmp_path / "comparison.png")
    axes = fig.axes
    assert len(axes) == 4
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["base_model", "mlp", "single"]
    report_points = axes[3].collections[-1].get_offsets()
    assert len(report_points) == 2  # "single" has no report row
    assert report_points[1][0] == pytest.approx(REPORT_TABLE2["+ 1 hidden layer"][3])
    assert "MiniLM" in fig.get_suptitle()


def test_score_against_task_specific_parameters(tmp_path, summary):
    fig = figures.plot_score_vs_parameters(summary, tmp_path / "params.png")
    assert_png(tmp_path / "params.png")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    points = ax.collections[0].get_offsets()
    assert len(points) == 3 and sorted(points[:, 0]) == [2000, 5383, 600_000]


def test_no_pyplot_figures_are_left_open(tmp_path, summary):
    import matplotlib.pyplot as plt
    before = plt.get_fignums()
    figures.plot_report_comparison(summary, tmp_path / "a.png")
    assert plt.get_fignums() == before
