"""The training loop: distinct micro-batches, determinism, resume, run folders, schedule, precision."""
import json

import pandas as pd
import pytest
import torch

from mtlib.model.multitask import MultitaskModel
from mtlib.training import loop
from mtlib.training.loop import learning_rate, train
from mtlib.training.precision import describe_machine
from tests.helpers import crash_on_evaluation, smoke_config


def metric_values(metrics):
    return {k: metrics[k] for k in ("dev", "test", "best_update", "updates") if k in metrics}


def test_accumulation_consumes_distinct_micro_batches(tmp_path, monkeypatch):
    """Reference-code defect 2: it backpropagated the SAME micro-batch k times."""
    seen = []
    original = MultitaskModel.forward

    def spy(self, batch, *args, **kwargs):
        if self.training:
            seen.append((batch.task, tuple(batch.ids)))
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(MultitaskModel, "forward", spy)
    cfg = smoke_config(tmp_path, "base_model", "train.accumulation=3", "train.epochs=1", "train.batches_per_epoch=12",
                       "train.sampler=round_robin")
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert len(seen) == 12 and metrics["updates"] == 4
    for update in range(4):
        group = seen[3 * update: 3 * update + 3]
        assert len(set(group)) == 3
    per_task = {}
    for task, ids in seen:  # within one pass over a task, no example is reused
        per_task.setdefault(task, []).extend(ids)
    assert all(len(ids) == len(set(ids)) for ids in per_task.values())


def test_same_seed_same_metrics_and_other_seed_differs(tmp_path):
    a = train(smoke_config(tmp_path), tmp_path / "a", progress=False)
    b = train(smoke_config(tmp_path), tmp_path / "b", progress=False)
    c = train(smoke_config(tmp_path, "base_model", "train.seed=2"), tmp_path / "c", progress=False)
    assert metric_values(a) == metric_values(b)
    assert metric_values(a) != metric_values(c)
    history = [pd.read_csv(tmp_path / name / "history.csv").drop(columns="train_seconds") for name in "ab"]
    pd.testing.assert_frame_equal(*history)


def test_interrupted_run_resumes_to_identical_metrics(tmp_path, monkeypatch):
    overrides = ("train.epochs=4", "train.batches_per_epoch=6", "train.sampler=annealed", "train.accumulation=2")
    full = train(smoke_config(tmp_path, "base_model", *overrides), tmp_path / "full", progress=False)

    restore = crash_on_evaluation(monkeypatch, 3)  # after two checkpoints
    cfg = smoke_config(tmp_path, "base_model", *overrides)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    assert (tmp_path / "resumed" / "checkpoints" / "last" / "optimizer.safetensors").exists()
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    restore()
    with pytest.raises(FileExistsError, match="not empty"):
        train(cfg, tmp_path / "resumed", progress=False)
    resumed = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert metric_values(resumed) == metric_values(full)
    history = [pd.read_csv(tmp_path / name / "history.csv").drop(columns="train_seconds") for name in ("full", "resumed")]
    pd.testing.assert_frame_equal(*history)
    assert not (tmp_path / "resumed" / "checkpoints" / "last").exists()  # dropped once complete


def test_run_folder_contents(tmp_path):
    train(smoke_config(tmp_path, "base_model", "train.keep_checkpoint=true"), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["dev"]) == {"sst/acc", "para/acc", "sts/pearson", "mean"}
    assert metrics["params"]["task_specific"].keys() == {"sst", "para", "sts"}
    assert metrics["precision"] == "none" and metrics["machine"] == describe_machine("cpu", 1)  # where it ran
    assert metrics["packages"]["torch"] == torch.__version__ and metrics["packages"]["pandas"] == pd.__version__
    assert list(metrics)[-1] == "packages"  # after what identifies the run
    sst = pd.read_csv(run / "predictions" / "sst-dev.csv")
    assert list(sst.columns) == ["id", "sentiment", "probability"] and sst["sentiment"].between(0, 4).all()
    assert sst["probability"].between(0.2, 1).all()  # the predicted class's: never below 1/5 without adjustment
    sts = pd.read_csv(run / "predictions" / "sts-test.csv")
    assert list(sts.columns) == ["id", "similarity"] and sts["similarity"].between(0, 5).all()
    para = pd.read_csv(run / "predictions" / "para-dev.csv")
    assert list(para.columns) == ["id", "is_duplicate", "probability"] and para["probability"].between(0.5, 1).all()
    assert list(pd.read_csv(run / "predictions" / "sst-test.csv").columns) == ["id", "sentiment"]  # the course's format
    assert list(pd.read_csv(run / "predictions" / "sts-dev.csv").columns) == ["id", "similarity"]
    assert (run / "checkpoints" / "best" / "model.safetensors").exists()
    assert "lr:" in (run / "config.yaml").read_text()
    assert not list(run.rglob("*.tmp")) and not list(run.rglob("*.pt"))
    train(smoke_config(tmp_path, "base_model", "train.keep_checkpoint=false"), tmp_path / "lean", progress=False)
    assert not (tmp_path / "lean" / "checkpoints").exists() and (tmp_path / "lean" / "metrics.json").exists()


def test_learning_rate_schedule(tmp_path):
    cfg = smoke_config(tmp_path, "base_model", "train.warmup_steps=4", "train.schedule=linear", "train.lr=1.0",
                       "train.epochs=2", "train.batches_per_epoch=6").train
    rates = [learning_rate(u, cfg) for u in range(12)]
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4] == pytest.approx(1.0) and rates[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        train(smoke_config(tmp_path, "base_model", "train.amp=fp16"), tmp_path / "run", progress=False)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    metrics = train(smoke_config(tmp_path, "base_model", "train.amp=bf16"), tmp_path / "run", progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics["dev"].values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_asking_for_a_missing_gpu_is_a_clear_error(name):
    from mtlib.training.precision import resolve_device

    with pytest.raises(RuntimeError, match=f"train.device={name} but no CUDA device"):
        resolve_device(name)


@pytest.mark.parametrize("experiment", ["base_model", "random_predictor"])
def test_a_run_prepares_its_data_once_test_split_included(tmp_path, monkeypatch, experiment):
    """The test-student files are prepared with the rest, not a second time at the end."""
    prepared = []
    real = loop.prepare_counted
    monkeypatch.setattr(loop, "prepare_counted", lambda *args: prepared.append(args[3]) or real(*args))
    cfg = smoke_config(tmp_path, experiment, "train.predict_test=true", "train.tasks=[sst, sts]",
                       "train.epochs=1", "train.batches_per_epoch=2")
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert prepared == [("train", "validation", "dev", "test-student")]
    assert set(metrics["data"]["dev"]) == {"sst", "sts"} and "loaded" in metrics["data"]
    assert sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir()) == [
        "sst-dev.csv", "sst-test.csv", "sts-dev.csv", "sts-test.csv"]
