"""mtlib.study.single_task: the title question, multitask against single-task, paired by seed and by dev example."""
import math

import numpy as np
import pandas as pd
import pytest

from mtlib.study import single_task
from mtlib.study.report import collect_runs
from mtlib.study.stats import Replicates
from tests.helpers import PNG_MAGIC
from tests.test_report import write_run

B = 200  # example resamples


def made_up_study(shift: float = 0.02):
    """base_model and single_sst_matched on SST over seeds 1-3 (single_sst_matched also ran seed 4):
    seed effects (0.3 apart) and dev-sample effects (each resample moves every run alike, by up
    to 0.1) far larger than the true Δ ``shift``, which each seed's single-task run trails its
    multitask run by on the dev set and on every resample. single_sst (equal compute) never ran."""
    rng = np.random.default_rng(0)
    seed_effect = {1: 0.3, 2: 0.6, 3: 0.9, 4: 0.1}
    resample_effect = rng.uniform(-0.1, 0.1, B)  # shared by every run: which dev examples were drawn
    runs = [("base_model", s, seed_effect[s]) for s in (1, 2, 3)]
    runs += [("single_sst_matched", s, seed_effect[s] - shift) for s in (1, 2, 3, 4)]
    names = tuple((e, s) for e, s, _ in runs)
    point = np.array([v for *_, v in runs])
    boot = point[None, :] + resample_effect[:, None]
    frame = pd.DataFrame({"experiment": [e for e, *_ in runs], "seed": [s for _, s, _ in runs], "sst": point})
    return frame, Replicates(names, {"sst": point}, {"sst": boot})


def test_the_comparison_is_paired_by_seed_and_by_example_known_answer():
    runs, replicates = made_up_study(0.02)
    table = single_task.compare(runs, replicates, tasks=["sst"]).set_index("budget")
    matched = table.loc[single_task.EQUAL_EXAMPLES]
    # paired: the seed effects and the shared resample effects cancel, leaving exactly +0.02 with no spread;
    # seed 4 (single-task only) is left out
    assert matched["single"] == "single_sst_matched" and matched["n"] == 3
    assert matched["estimate"] == pytest.approx(0.02)
    assert matched["lo"] == pytest.approx(0.02) and matched["hi"] == pytest.approx(0.02) and matched["resolved"]
    assert matched["dev_se"] == pytest.approx(0.0, abs=1e-12)
    assert matched["multitask_score"] == pytest.approx(0.6) and matched["single_score"] == pytest.approx(0.58)
    # unpaired, the same numbers would not resolve anything: the seed spread alone is 0.3
    assert np.std(runs.loc[runs["experiment"] == "base_model", "sst"], ddof=1) == pytest.approx(0.3)
    compute = table.loc[single_task.EQUAL_COMPUTE]
    assert compute["single"] == "single_sst" and compute["n"] == 0 and math.isnan(compute["estimate"])


def test_pairing_by_seed_matters_a_misaligned_seed_changes_the_answer():
    runs, replicates = made_up_study(0.02)
    swapped = runs.copy()
    single = swapped["experiment"] == "single_sst_matched"
    swapped.loc[single, "seed"] = swapped.loc[single, "seed"].map({1: 2, 2: 1, 3: 3, 4: 4})
    names = tuple((e, {1: 2, 2: 1}.get(s, s) if e == "single_sst_matched" else s) for e, s in replicates.runs)
    replicates = Replicates(names, replicates.point, replicates.boot)
    row = single_task.compare(swapped, replicates, tasks=["sst"]).set_index("budget").loc[single_task.EQUAL_EXAMPLES]
    assert row["estimate"] == pytest.approx(0.02)  # the means are the same ...
    assert row["hi"] - row["lo"] > 0.5 and not row["resolved"]  # ... but seed 1 against seed 2 is no pair


def test_parameter_counts_one_shared_encoder_against_three(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path, "base_model", seed, 0.5, 0.6, 0.7, task_specific=(50, 20, 30))
        for task in ("sst", "para", "sts"):
            write_run(tmp_path, f"single_{task}", seed, *(0.5 if t == task else None for t in ("sst", "para", "sts")),
                      task_specific=(50, 20, 30))
    counts = single_task.parameter_counts(collect_runs(tmp_path))
    assert counts == {"multitask": 1000 + 100, "single_task": 3 * 1000 + 100, "tasks": 3}
    text = single_task.comparison_markdown(single_task.compare(collect_runs(tmp_path), made_up_study()[1], tasks=[]),
                                           counts)
    assert "holds 1,100; 3 single-task models (an encoder and a head each) hold 3,100, 2.82 times as many." in text


def test_the_figure_is_written(tmp_path):
    runs, replicates = made_up_study()
    figure = single_task.plot_single_task(single_task.compare(runs, replicates, tasks=["sst"]), tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes().startswith(PNG_MAGIC) and figure.axes[0].get_title()
