"""Fault injection: every way a user or the machine can break a command.

Each case asserts what the project promises: a non-zero exit, ONE line on stderr
(``mtlib <command>: error: ...``) naming the file or setting, no traceback, no partial
output, and no existing file modified. Commands run in-process through ``mtlib.cli.main``
on the smoke profile. A read-only file system, a full disk and a kill are simulated by
patching the write layer (``mtlib.io._temporary`` / ``mtlib.io._commit``), never by file
permissions (the tests may run as root). Each refusal's line is recorded as the test's
``message`` property (``pytest --junitxml`` lists them).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import mtlib.io
import mtlib.training.inference as inference
from mtlib.cli import main
from tests.helpers import ROOT, crash_on_evaluation, write_task_files

PARAMS = str(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Course files, a finished run (best checkpoint kept) and the same run killed after its
    first checkpoint, made once for the module; tests copy the runs before changing them."""
    root = tmp_path_factory.mktemp("faults")
    data = write_task_files(root / "data")
    assert main(train_argv(data, root / "finished", root / "cache")) == 0
    with pytest.MonkeyPatch.context() as patch:
        crash_on_evaluation(patch, 2)
        assert main(train_argv(data, root / "crashed", root / "cache")) == 130
    return {"data": data, "finished": root / "finished", "crashed": root / "crashed", "cache": root / "cache"}


def train_argv(data, out, cache, *extra, experiment="base_model"):
    return ["train", "--experiment", experiment, "--params", PARAMS, "--profile", "smoke", "--data", str(data),
            "--no-progress", "--out", str(out), "--set", f"data.cache_dir={cache}",
            "--set", f"data.processed_dir={Path(cache).parent / 'processed'}", "--set", "train.keep_checkpoint=true",
            *extra]


def copy_run(shared, name, tmp_path) -> Path:
    return Path(shutil.copytree(shared[name], tmp_path / name))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, but the run folders' lock files: a command
    leaves ``.<run>.lock`` beside the run folder it locked (it coordinates, it holds nothing)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".lock"))}


def temporaries(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".old")]


def refused(capsys, record_property, argv, *names, status=2) -> str:
    """Run the command; assert it failed with exactly one line, naming ``names``, and no traceback."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == status, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"mtlib {argv[0]}: error: "), err
    for name in names:
        assert str(name) in lines[0]
    record_property("message", lines[0])
    return lines[0]


def metric_values(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: metrics.get(k) for k in ("dev", "test", "best_update", "updates")}


# --- data loss --------------------------------------------------------------------------

@pytest.mark.parametrize("data_ok", [True, False], ids=["good-data", "missing-data"])
def test_overwrite_refuses_a_folder_that_is_not_a_run_folder(shared, tmp_path, capsys, record_property, data_ok):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "thesis.txt").write_text("x\n")
    data = shared["data"] if data_ok else tmp_path / "nonexistent"
    refused(capsys, record_property, train_argv(data, folder, tmp_path / "cache", "--overwrite"),
            folder, "not a run folder")
    assert snapshot(folder) == {"thesis.txt": b"x\n"}


@pytest.mark.parametrize("fault", ["bad-data", "bad-setting"])
def test_overwrite_checks_config_and_data_before_replacing_a_run(shared, tmp_path, capsys, record_property, fault):
    run = copy_run(shared, "finished", tmp_path)
    before = snapshot(run)
    data = shared["data"]
    extra = ["--overwrite"]
    if fault == "bad-data":
        data = Path(shutil.copytree(data, tmp_path / "data"))
        lines = (data / "ids-sst-train.csv").read_text().splitlines()
        lines[5] = lines[5].rsplit("\t", 1)[0] + "\t7"
        (data / "ids-sst-train.csv").write_text("\n".join(lines) + "\n")
        names = ["ids-sst-train.csv:6", "sentiment"]
    else:
        extra += ["--set", "train.max_grad_norm=-1"]
        names = ["train.max_grad_norm"]
    refused(capsys, record_property, train_argv(data, run, tmp_path / "cache", *extra), *names)
    assert snapshot(run) == before


def test_overwrite_replaces_a_run_folder(shared, tmp_path):
    run = copy_run(shared, "finished", tmp_path)
    assert main(train_argv(shared["data"], run, shared["cache"], "--overwrite", "--seed", "2")) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 2
    assert json.loads((run / "metrics.json").read_text())["seed"] == 2


@pytest.mark.parametrize("how", ["same-path", "other-spelling", "symlink", "hardlink"])
def test_predict_never_overwrites_its_input(shared, tmp_path, capsys, record_property, how):
    source = Path(shutil.copy(shared["data"] / "sts-dev.csv", tmp_path / "in.csv"))
    output = {"same-path": source, "other-spelling": tmp_path / "sub" / ".." / "in.csv",
              "symlink": tmp_path / "link.csv", "hardlink": tmp_path / "hard.csv"}[how]
    (tmp_path / "sub").mkdir()
    if how == "symlink":
        output.symlink_to(source)
    elif how == "hardlink":
        os.link(source, output)
    before = snapshot(tmp_path)
    refused(capsys, record_property, ["predict", "--run", shared["finished"], "--task", "sts", "--input", source,
                                      "--output", output], output, "is the input")
    assert snapshot(tmp_path) == before


# --- mixed or mislabelled runs ------------------------------------------------------------

HOLD = "import sys\nfrom mtlib.training.runs import lock\nwith lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n"


def test_a_second_writer_is_refused_naming_the_holder(shared, tmp_path, capsys, record_property):
    run = copy_run(shared, "finished", tmp_path)
    before = snapshot(run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (train_argv(shared["data"], run, shared["cache"], "--overwrite", "--seed", "2"),
                     train_argv(shared["data"], run, shared["cache"], "--resume"),
                     ["evaluate", "--run", run, "--data", shared["data"]]):
            refused(capsys, record_property, argv, run, f"pid {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()
    assert snapshot(run) == before
    assert main(["evaluate", "--run", str(run), "--data", str(shared["data"])]) == 0  # the lock was let go


def test_resume_with_another_config_is_refused_naming_the_keys(shared, tmp_path, capsys, record_property):
    run = copy_run(shared, "crashed", tmp_path)
    before = snapshot(run)
    argv = train_argv(shared["data"], run, shared["cache"], "--resume", "--seed", "7", "--set", "train.lr=0.01")
    refused(capsys, record_property, argv, run, "train.seed: 1 -> 7", "train.lr: 0.0001 -> 0.01")
    assert snapshot(run) == before


def test_resume_with_another_experiment_is_refused(shared, tmp_path, capsys, record_property):
    run = copy_run(shared, "crashed", tmp_path)
    before = snapshot(run)
    argv = train_argv(shared["data"], run, shared["cache"], "--resume", experiment="hidden")
    refused(capsys, record_property, argv, run, "experiment: 'base_model' -> 'hidden'", "model.head.kind")
    assert snapshot(run) == before


def test_resume_may_change_only_where_it_runs(shared, tmp_path):
    run = copy_run(shared, "crashed", tmp_path)
    argv = train_argv(shared["data"], run, tmp_path / "other-cache", "--resume", "--set", "train.num_threads=2")
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(1)
    assert metric_values(run) == metric_values(shared["finished"])


def test_a_checkpoint_made_with_another_config_is_refused(shared, tmp_path, capsys, record_property):
    run = copy_run(shared, "crashed", tmp_path)
    state = run / "checkpoints" / "last" / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "config": "0123456789abcdef"}))
    before = snapshot(run)
    refused(capsys, record_property, train_argv(shared["data"], run, shared["cache"], "--resume"),
            run / "checkpoints" / "last", "made with a different config")
    assert snapshot(run) == before


def test_evaluate_does_not_write_where_config_yaml_says(shared, tmp_path):
    run = copy_run(shared, "finished", tmp_path)
    elsewhere = tmp_path / "elsewhere"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"].update(cache_dir=str(elsewhere), processed_dir=str(elsewhere))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["evaluate", "--run", str(run), "--data", str(shared["data"])]) == 0
    assert not elsewhere.exists() and (run / "evaluation" / "metrics.json").exists()


# --- settings: tracebacks before, one line now -----------------------------------------------

@pytest.mark.parametrize("override, names", [
    ("train.lr=[1", ["--set 'train.lr=[1'", "not valid YAML"]),
    ("train.combiner_args={bogus: 1}", ["train.combiner_args", "'bogus'", "valid keys"]),
    ("train.smart_args={bogus: 1}", ["train.smart_args", "'bogus'", "valid keys", "lambda_s"]),
    ("model.pal_args={bogus: 1}", ["model.pal_args", "'bogus'", "valid keys", "num_heads"]),
    ("train.num_threads=-1", ["train.num_threads", "must be >= 1"]),
    ("train.max_grad_norm=-1", ["train.max_grad_norm", "must be > 0"]),
    ("backbone.max_length=100000", ["backbone.max_length", "512"]),
])
def test_a_bad_setting_is_one_line_naming_it(shared, tmp_path, capsys, record_property, override, names):
    out = tmp_path / "run"
    refused(capsys, record_property, train_argv(shared["data"], out, tmp_path / "cache", "--set", override), *names)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_a_missing_gpu_is_one_line(shared, tmp_path, capsys, record_property):
    out = tmp_path / "run"
    refused(capsys, record_property, train_argv(shared["data"], out, tmp_path / "cache", "--set", "train.device=cuda"),
            "train.device=cuda", "no CUDA device")
    assert not out.exists()


# --- damaged run folders ---------------------------------------------------------------------

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("damage", ["truncated", "not-safetensors"])
@pytest.mark.parametrize("command", ["evaluate", "predict", "resume"])
def test_a_damaged_checkpoint_is_one_line_naming_it(shared, tmp_path, capsys, record_property, damage, command):
    run = copy_run(shared, "crashed" if command == "resume" else "finished", tmp_path)
    weights = run / "checkpoints" / ("last" if command == "resume" else "best") / "model.safetensors"
    _truncate(weights) if damage == "truncated" else weights.write_text("not a checkpoint\n")
    before = snapshot(tmp_path)
    output = tmp_path / "out.csv"
    argv = {"evaluate": ["evaluate", "--run", run, "--data", shared["data"]],
            "predict": ["predict", "--run", run, "--task", "sts", "--input", shared["data"] / "sts-dev.csv",
                        "--output", output],
            "resume": train_argv(shared["data"], run, shared["cache"], "--resume")}[command]
    refused(capsys, record_property, argv, weights, "not a readable checkpoint")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fingerprinted", [True, False], ids=["fingerprinted", "older-checkpoint"])
def test_a_checkpoint_that_does_not_fit_its_config_yaml_is_one_line(shared, tmp_path, capsys, record_property,
                                                                    fingerprinted):
    run = copy_run(shared, "finished", tmp_path)
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("kind: linear", "kind: mlp").replace("hidden_layers: 0",
                                                                                       "hidden_layers: 1"))
    if not fingerprinted:  # a checkpoint written before fingerprints: the shapes still give it away
        state = run / "checkpoints" / "best" / "state.json"
        state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "config"}))
    before = snapshot(run)
    names = ["checkpoints/best", "made with a different config"] if fingerprinted else \
        ["model.safetensors", "weights do not fit", "heads.sst"]
    refused(capsys, record_property, ["evaluate", "--run", run, "--data", shared["data"]], *names)
    assert snapshot(run) == before


def test_invalid_yaml_in_a_runs_config_is_one_line(shared, tmp_path, capsys, record_property):
    run = copy_run(shared, "finished", tmp_path)
    with (run / "config.yaml").open("a") as f:
        f.write("train: [1\n")
    before = snapshot(run)
    refused(capsys, record_property, ["evaluate", "--run", run, "--data", shared["data"]],
            run / "config.yaml", "not valid YAML", "line ")
    assert snapshot(run) == before


# --- corrupt caches are rebuilt ------------------------------------------------------------------

@pytest.mark.parametrize("cache, experiment", [("tokens", "base_model"), ("features", "advanced_model")])
def test_a_corrupt_cache_is_rebuilt_with_a_warning(shared, tmp_path, cache, experiment):
    cache_dir = tmp_path / "cache"
    assert main(train_argv(shared["data"], tmp_path / "a", cache_dir, experiment=experiment)) == 0
    files = sorted((cache_dir / "features").glob("*.safetensors")) if cache == "features" \
        else sorted(cache_dir.glob("*.safetensors"))
    assert files
    for path in files:
        _truncate(path)
    with pytest.warns(UserWarning) as caught:
        assert main(train_argv(shared["data"], tmp_path / "b", cache_dir, experiment=experiment)) == 0
    kind = "feature" if cache == "features" else "tokenisation"
    warned = [str(w.message) for w in caught]
    for path in files:
        assert any(m.startswith(f"{path}: unreadable {kind} cache") and "rebuilding it" in m for m in warned)
        assert load_file(str(path))  # rewritten whole
    assert metric_values(tmp_path / "a") == metric_values(tmp_path / "b")


# --- paths that are the wrong kind of thing ----------------------------------------------------------

def test_predict_output_that_is_a_folder_is_one_line(shared, tmp_path, capsys, record_property):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine\n")
    refused(capsys, record_property, ["predict", "--run", shared["finished"], "--task", "sts",
                                      "--input", shared["data"] / "sts-dev.csv", "--output", folder],
            folder, "is a folder")
    assert snapshot(folder) == {"keep.txt": b"mine\n"}


def test_train_out_that_is_a_file_is_one_line(shared, tmp_path, capsys, record_property):
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    refused(capsys, record_property, train_argv(shared["data"], path, tmp_path / "cache"), path, "not a folder")
    assert path.read_text() == "mine\n"


# --- the machine: read-only, full, killed ------------------------------------------------------------

def _read_only(path, folder):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path.parent))


def test_a_read_only_file_system_is_one_line_and_leaves_nothing(shared, tmp_path, capsys, record_property,
                                                               monkeypatch):
    monkeypatch.setattr(mtlib.io, "_temporary", _read_only)
    out = tmp_path / "run"
    refused(capsys, record_property, train_argv(shared["data"], out, shared["cache"]),  # cache filled: no writes
            out / ".mtlib-run", "Read-only file system")
    assert not out.exists()
    output = tmp_path / "pred.csv"
    refused(capsys, record_property, ["predict", "--run", shared["finished"], "--task", "sts",
                                      "--input", shared["data"] / "sts-dev.csv", "--output", output],
            output, "Read-only file system")
    assert not output.exists()


def _disk_full_at_checkpoints(commit):
    def fail(tmp, path):
        if tmp.is_dir():  # a checkpoint folder: written after the marker and config.yaml
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        commit(tmp, path)
    return fail


def test_a_full_disk_is_one_line_and_leaves_no_half_run(shared, tmp_path, capsys, record_property, monkeypatch):
    monkeypatch.setattr(mtlib.io, "_commit", _disk_full_at_checkpoints(mtlib.io._commit))
    out = tmp_path / "run"
    refused(capsys, record_property, train_argv(shared["data"], out, tmp_path / "cache"),
            out / "checkpoints", "No space left on device")
    assert not out.exists()  # no config.yaml, no empty checkpoints/ left behind
    assert not temporaries(tmp_path)


def test_a_partial_write_leaves_the_existing_output(shared, tmp_path, capsys, record_property, monkeypatch):
    output = tmp_path / "pred.csv"
    output.write_text("id,similarity\nold,1.0\n")
    calls = []
    original = inference.predict_split

    def fail_on_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(*args, **kwargs)

    monkeypatch.setattr(inference, "CHUNK_ROWS", 5)
    monkeypatch.setattr(inference, "predict_split", fail_on_second_chunk)
    refused(capsys, record_property, ["predict", "--run", shared["finished"], "--task", "sts",
                                      "--input", shared["data"] / "sts-dev.csv", "--output", output],
            output, "No space left on device")
    assert output.read_text() == "id,similarity\nold,1.0\n" and not temporaries(tmp_path)


def test_a_kill_during_a_checkpoint_write_keeps_the_last_checkpoint(shared, tmp_path, capsys, record_property,
                                                                     monkeypatch):
    run = copy_run(shared, "crashed", tmp_path)
    before = snapshot(run)

    def killed(tmp, path):
        raise KeyboardInterrupt  # what SIGINT does; the files written so far must stay whole

    with monkeypatch.context() as patch:
        patch.setattr(mtlib.io, "_commit", killed)
        refused(capsys, record_property, train_argv(shared["data"], run, shared["cache"], "--resume"),
                "interrupted", status=130)
    assert snapshot(run) == before and not temporaries(run)
    assert main(train_argv(shared["data"], run, shared["cache"], "--resume")) == 0
    assert metric_values(run) == metric_values(shared["finished"])


# --- unreadable input of any kind ------------------------------------------------------------------

def _inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (an unreadable input file, what the message must say)"""
    def write(name, content):
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return path
    folder = tmp_path / "folder.csv"
    folder.mkdir(exist_ok=True)
    return {
        "missing": (tmp_path / "missing.csv", "file not found"),
        "folder": (folder, "is a folder"),
        "binary": (write("binary.csv", bytes(range(128, 256)) * 4), "not UTF-8"),
        "empty": (write("empty.csv", ""), "file is empty"),
        "comma-separated": (write("comma.csv", ",id,sentence1,sentence2\n0,a,x,y\n"), "comma-separated"),
        "missing-column": (write("cols.csv", "\tid\tsentence1\n0\ta\tx\n"), "missing column(s) ['sentence2']"),
        "short-row": (write("short.csv", "\tid\tsentence1\tsentence2\n0\ta\tx\n"), ":2: expected 4"),
        "bad-label": (write("label.csv", "\tid\tsentence1\tsentence2\tsimilarity\n0\ta\tx\ty\tnine\n"),
                      ":2: column 'similarity': cannot parse label"),
    }


@pytest.mark.parametrize("kind", ["missing", "folder", "binary", "empty", "comma-separated", "missing-column",
                                  "short-row", "bad-label"])
def test_an_unreadable_predict_input_is_one_line_naming_it(shared, tmp_path, capsys, record_property, kind):
    path, what = _inputs(tmp_path)[kind]
    output = tmp_path / "pred.csv"
    refused(capsys, record_property, ["predict", "--run", shared["finished"], "--task", "sts", "--input", path,
                                      "--output", output], path, what)
    assert not output.exists()


def test_unreadable_params_and_a_missing_run_are_one_line(shared, tmp_path, capsys, record_property):
    params = tmp_path / "params.yaml"
    params.write_text("base: {train: [1\n")
    argv = train_argv(shared["data"], tmp_path / "run", tmp_path / "cache")
    argv[argv.index("--params") + 1] = str(params)
    refused(capsys, record_property, argv, params, "not valid YAML")
    refused(capsys, record_property, ["evaluate", "--run", tmp_path / "nowhere"], tmp_path / "nowhere", "config.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_an_unexpected_error_is_still_one_line_and_debug_shows_the_traceback(shared, tmp_path, capsys,
                                                                             record_property, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(inference, "load_run", bug)
    argv = ["predict", "--run", shared["finished"], "--task", "sts", "--input", shared["data"] / "sts-dev.csv",
            "--output", tmp_path / "pred.csv"]
    refused(capsys, record_property, argv, "unexpected ZeroDivisionError", "--debug", status=1)
    assert main([str(a) for a in argv] + ["--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("mtlib predict: error: unexpected")
    assert not (tmp_path / "pred.csv").exists()
