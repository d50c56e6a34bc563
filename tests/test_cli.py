"""The command line: train, evaluate and predict end to end; bad input is one line, nothing written."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from mtlib.cli import main
from tests.helpers import ROOT, write_task_files


def test_cli_train_evaluate_predict_end_to_end(tmp_path, capsys):
    data = write_task_files(tmp_path / "data")
    run = tmp_path / "run"
    common = ["--params", str(ROOT / "params.yaml"), "--profile", "smoke", "--data", str(data), "--no-progress",
              "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.keep_checkpoint=true"]
    assert main(["train", "--experiment", "base_model", "--out", str(run), *common]) == 0
    trained = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", "--run", str(run), "--data", str(data)]) == 0
    evaluated = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert evaluated["dev"] == pytest.approx(trained["dev"])
    assert (run / "evaluation" / "sst-test.csv").exists()
    # a labelled file the run never saw
    unseen = write_task_files(tmp_path / "unseen", seed=99) / "sts-dev.csv"
    out = tmp_path / "pred.csv"
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--task", "sts", "--input", str(unseen), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sts/pearson" in printed
    predictions = pd.read_csv(out)
    assert len(predictions) == 24 and predictions["similarity"].between(0, 5).all()


def test_bad_input_fails_loudly_and_writes_nothing(tmp_path, capsys):
    data = write_task_files(tmp_path / "data")
    lines = (data / "ids-sst-train.csv").read_text().splitlines()
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\t7"
    (data / "ids-sst-train.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    code = main(["train", "--experiment", "base_model", "--profile", "smoke", "--params", str(ROOT / "params.yaml"),
                 "--data", str(data), "--out", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "ids-sst-train.csv:6: column 'sentiment': label '7' outside 0..4" in err
    assert not run.exists()

    bad = tmp_path / "bad.csv"
    bad.write_text("\tid\tsentence1\tsentence2\n0\ta\tx\t\n")
    out = tmp_path / "out.csv"
    assert main(["predict", "--run", str(run), "--task", "sts", "--input", str(bad), "--output", str(out)]) == 2
    assert "bad.csv:2: column 'sentence2' is empty" in capsys.readouterr().err and not out.exists()


def test_predict_refuses_a_file_with_a_header_and_no_rows(tmp_path, capsys):
    empty = tmp_path / "my.csv"
    empty.write_text("\tid\tsentence1\tsentence2\n")
    out = tmp_path / "out.csv"
    assert main(["predict", "--run", str(tmp_path / "run"), "--task", "sts", "--input", str(empty),
                 "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"mtlib predict: error: {empty}: no rows after the header (fix the file)\n" and not out.exists()


def test_help_and_a_settings_error_do_not_import_torch_transformers_or_pandas():
    """They answer in a fraction of a second: mtlib.cli imports a command's modules when it runs."""
    params = str(ROOT / "params.yaml")
    code = f"""
import contextlib, io, sys
import mtlib.cli
for argv in (["--help"], ["train", "--help"]):
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
        mtlib.cli.main(argv)
statuses = [mtlib.cli.main(["train", "--params", {params!r}, "--profile", "smoke", *argv])
            for argv in (["--experiment", "nope"], ["--experiment", "base_model", "--set", "train.lr=abc"])]
print(statuses, sorted({{"torch", "transformers", "pandas"}} & set(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[2, 2] []", result.stderr
    assert "unknown experiment 'nope'" in result.stderr and "train.lr: expected a number" in result.stderr


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "mtlib", "train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "--experiment" in result.stdout
