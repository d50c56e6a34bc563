"""scripts/stage_times.py: stage durations read from papermill's metadata, summed per stage group."""
import importlib.util
import json

import pytest

from tests.helpers import ROOT

spec = importlib.util.spec_from_file_location("stage_times", ROOT / "scripts" / "stage_times.py")
stage_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_times)


def _notebook(path, seconds, exception=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"papermill": {"duration": seconds, "exception": exception}}
    path.write_text(json.dumps({"cells": [], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}))


def test_groups_sum_and_median_by_stage(tmp_path, capsys):
    _notebook(tmp_path / "01_data.ipynb", 30.0)
    for name, seconds in [("a", 60.0), ("b", 180.0), ("c", 240.0)]:
        _notebook(tmp_path / "03_finetune" / f"{name}.ipynb", seconds)
    _notebook(tmp_path / "04_pal_after" / "x.ipynb", 120.0)
    found = stage_times.durations(tmp_path)
    assert list(found) == ["data", "finetune", "pal_after"]  # the pipeline's order
    assert stage_times.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| finetune | 3 | 3.0 min | 8.0 min |" in out  # median 180 s, sum 480 s
    assert "| **all** | 5 | | **10.5 min** |" in out       # 30 + 480 + 120 s


@pytest.mark.parametrize("seconds, exception", [(None, None), (42.0, True)])  # running; raised
def test_unfinished_notebook_is_an_error(tmp_path, capsys, seconds, exception):
    _notebook(tmp_path / "03_finetune" / "a.ipynb", seconds, exception)
    with pytest.raises(ValueError, match="a.ipynb: metadata.papermill: no duration"):
        stage_times.durations(tmp_path)
    assert stage_times.main([str(tmp_path)]) == 1
    assert "did not finish" in capsys.readouterr().err
