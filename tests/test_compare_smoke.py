"""scripts/compare_smoke.py: what the no-behaviour-change check compares, and what it ignores."""
import importlib.util
import json

import pytest

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("compare_smoke", ROOT / "scripts" / "compare_smoke.py")
compare_smoke = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_smoke)


def test_an_experiment_is_trained_after_the_one_it_starts_from():
    params = {"experiments": {"after": {"set": {"train": {"init_from": "results/runs/start/seed{seed}"}}},
                              "start": {"set": {}}, "other": {"set": {"model": {"pals": "none"}}}}}
    assert compare_smoke.experiment_order(params) == [("start", None), ("other", None), ("after", "start")]


def write_run(folder, dev=0.5, seconds=1.0, machine="A", prediction="id,Predicted\n1,0\n"):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"dev": {"sst/acc": dev}, "train_seconds": seconds,
                                                     "train_examples_per_second": 10 / seconds, "machine": machine}))
    (folder / "history.csv").write_text(f"update,train_seconds,sst/acc\n1,{seconds},{dev}\n")
    (folder / "predictions").mkdir()
    (folder / "predictions" / "sst-dev.csv").write_text(prediction)


def test_timings_and_the_machine_are_not_compared(tmp_path, capsys):
    write_run(tmp_path / "old" / "base")
    write_run(tmp_path / "new" / "base", seconds=9.0, machine="B")
    assert compare_smoke.diff(tmp_path / "old", tmp_path / "new") == 0
    assert "1 experiments: identical" in capsys.readouterr().out


@pytest.mark.parametrize("change, found", [({"dev": 0.6}, "metrics dev.sst/acc: 0.5 -> 0.6"),
                                          ({"prediction": "id,Predicted\n1,1\n"}, "predictions/sst-dev.csv differs")])
def test_a_score_or_a_prediction_that_moved_is_reported(tmp_path, capsys, change, found):
    write_run(tmp_path / "old" / "base")
    write_run(tmp_path / "new" / "base", **change)
    assert compare_smoke.diff(tmp_path / "old", tmp_path / "new") == 1
    assert found in capsys.readouterr().out


def test_a_run_missing_on_one_side_is_reported(tmp_path, capsys):
    write_run(tmp_path / "old" / "base")
    write_run(tmp_path / "old" / "extra")
    write_run(tmp_path / "new" / "base")
    assert compare_smoke.diff(tmp_path / "old", tmp_path / "new") == 1
    assert "extra: metrics.json only on one side" in capsys.readouterr().out
