"""mtlib.study.figures (the results and error figures): each plot writes a PNG from small
synthetic data and draws what it should."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtlib.study import analysis, figures
from mtlib.study.report import summarise
from tests.helpers import assert_png, histories, history


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
    base = {"label": "BaseModel: BERT + sentence concat", "sst": 0.465, "para": 0.731, "sts": 0.749, "mean": 0.648}
    hidden = {"label": "+ 1 hidden layer", "sst": 0.504, "para": 0.876, "sts": 0.862, "mean": 0.747}
    table_rows = {"base_model": {"report": base, "parent": None}, "mlp": {"report": hidden, "parent": "base_model"}}
    return summarise(pd.DataFrame(rows), table_rows)


def test_compromise_against_annealed(tmp_path):
    runs = {"gradient_compromise": [history([10, 20], [0.5, 0.6]), history([10, 20], [0.4, 0.7])],
            "annealed": [history([10, 20], [0.2, 0.5])], "other": [history([10], [0.1])]}
    fig = figures.plot_compromise_vs_annealed(histories(runs), tmp_path / "figure5.png")
    assert_png(tmp_path / "figure5.png")
    assert len(fig.axes) == 3 and all(len(ax.lines) == 2 for ax in fig.axes)
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [0.45, 0.65])
    with pytest.raises(KeyError, match="annealed"):
        figures.plot_compromise_vs_annealed(histories({"gradient_compromise": runs["annealed"]}), tmp_path / "x.png")


def test_confusion_matrix_is_row_normalised_and_annotated(tmp_path):
    labels = [0, 0, 0, 0, 1, 1, 2, 3, 3, 4]
    predictions = [0, 0, 1, 2, 1, 1, 2, 4, 3, 4]
    matrix = analysis.confusion_matrix(labels, predictions)
    assert np.allclose(matrix.sum(axis=1), 1)
    assert matrix[0].tolist() == [0.5, 0.25, 0.25, 0, 0] and matrix[3].tolist() == [0, 0, 0, 0.5, 0.5]
    assert analysis.confusion_matrix([0], [0], 3)[1].tolist() == [0, 0, 0]  # no example of class 1: no NaN
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
    assert report_points[1][0] == pytest.approx(0.747)
    assert "MiniLM" in fig.get_suptitle()


def test_score_against_task_specific_parameters(tmp_path, summary):
    fig = figures.plot_score_vs_parameters(summary, tmp_path / "params.png")
    assert_png(tmp_path / "params.png")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    points = ax.collections[0].get_offsets()
    assert len(points) == 3 and sorted(points[:, 0]) == [2000, 5383, 600_000]


def test_crowded_names_do_not_overlap_and_stay_inside(tmp_path):
    """Eleven experiments with long names at nearly the same place (as the study's rows with
    the same heads are): every name is drawn, none overlaps another or leaves the figure."""
    names = ["hidden_gradvac_smart", "hidden_pcgrad", "hidden_compromise", "hidden", "advanced_model",
             "pal_after_adjusted", "pal_after", "base_model", "cosine_pair", "augmented", "mlp_rnn_cls"]
    summary = pd.DataFrame({"experiment": names, "params_task_specific": [5383 + 40 * (i % 3) for i in range(11)],
                            "mean_mean": [0.60 + 0.002 * i for i in range(11)], "mean_ci95": 0.01,
                            "backbone": "minilm", "profile": "cpu"})
    fig = figures.plot_score_vs_parameters(summary, tmp_path / "params.png", run="profile cpu · seeds 1–6")
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert sorted(t.get_text() for t in ax.texts) == sorted(names)
    for i, a in enumerate(boxes):
        assert a.x0 >= 0 and a.y0 >= 0 and a.x1 <= fig.bbox.width and a.y1 <= fig.bbox.height
        assert not any(a.overlaps(b) for b in boxes[i + 1:]), ax.texts[i].get_text()
    assert fig.get_supxlabel() == "profile cpu · seeds 1–6"


def test_the_confusion_matrix_names_its_run(tmp_path):
    fig = figures.plot_confusion_matrix([0, 1, 2, 3, 4], [0, 1, 2, 4, 4], tmp_path / "confusion.png",
                                        run="profile cpu · seed 1 · experiment hidden")
    assert fig.get_supxlabel() == "profile cpu · seed 1 · experiment hidden"


def test_no_pyplot_figures_are_left_open(tmp_path, summary):
    import matplotlib.pyplot as plt
    before = plt.get_fignums()
    figures.plot_report_comparison(summary, tmp_path / "a.png")
    assert plt.get_fignums() == before
