"""Small generated data in the course layout, and configs for the tiny random BERT."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mtlib.config import load_config

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORDS = ("good bad great awful film movie plot actor story boring fun dull brilliant slow "
         "what how why is the a of to can i do you best way learn make dog cat man runs").split()


def sentence(rng: random.Random, n: int | None = None) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n or rng.randint(3, 12)))


def write_task_files(folder: Path, n_train: int = 40, n_dev: int = 24, n_test: int = 12, seed: int = 0) -> Path:
    """The eight course files with random text; labels loosely tied to words so a model can learn."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def write(name, header, rows):
        lines = ["\t".join([""] + header)] + ["\t".join([str(i)] + [str(x) for x in r]) for i, r in enumerate(rows)]
        (folder / name).write_text("\n".join(lines) + "\n")

    for split, n in (("train", n_train), ("dev", n_dev), ("test-student", n_test)):
        sst = []
        for i in range(n):
            s = sentence(rng)
            label = min(4, s.count("good") + s.count("great") + 2 - s.count("bad") - s.count("awful"))
            sst.append([f"sst{split}{i}", s, max(0, label)])
        para, sts = [], []
        for i in range(n):
            a = sentence(rng)
            dup = rng.random() < 0.4
            b = a if dup else sentence(rng)
            para.append([f"para{split}{i}", a, b, float(dup)])
            score = round(rng.uniform(0, 5), 1)
            sts.append([f"sts{split}{i}", a, b if score > 2.5 else sentence(rng), score])
        labelled = split != "test-student"
        write(f"ids-sst-{split}.csv", ["id", "sentence"] + (["sentiment"] if labelled else []),
              [r if labelled else r[:2] for r in sst])
        if split != "test-student":
            write(f"quora-{split}.csv", ["id", "sentence1", "sentence2", "is_duplicate"], para)
        write(f"sts-{split}.csv", ["id", "sentence1", "sentence2"] + (["similarity"] if labelled else []),
              [r if labelled else r[:3] for r in sts])
    return folder


def smoke_config(tmp_path: Path, experiment: str = "base_model", *overrides: str):
    """The repository's smoke profile with data and cache under ``tmp_path``."""
    data = tmp_path / "data"
    if not data.exists():
        write_task_files(data)
    return load_config(ROOT / "params.yaml", experiment, "smoke",
                       overrides=[f"data.dir={data}", f"data.cache_dir={tmp_path / 'cache'}",
                                  f"data.processed_dir={tmp_path / 'processed'}", *overrides])


def crash_on_evaluation(monkeypatch, n: int):
    """Make mtlib.training.loop's n-th dev evaluation raise KeyboardInterrupt (a simulated crash
    after n - 1 checkpoints); returns a function that undoes it."""
    import mtlib.training.loop as train_module

    calls = {"n": 0}
    original = train_module.evaluate

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt(f"simulated crash at evaluation {n}")
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", crash)
    return lambda: monkeypatch.setattr(train_module, "evaluate", original)


def dev_labels(data_dir: Path, task: str):
    """(ids, labels) of a task's dev file, in file order."""
    from mtlib.data.files import file_name, read_task_file
    from mtlib.tasks import TASKS

    frame = read_task_file(Path(data_dir) / file_name(task, "dev"), task)
    return frame["id"].to_numpy(), frame[TASKS[task].label_column].to_numpy(dtype=float)


def write_predicted_run(root: Path, experiment: str, seed: int, data_dir: Path, predictions: dict,
                        backbone: str = "bert-base-uncased", profile: str = "paper") -> Path:
    """A run folder as training leaves it: predictions/<task>-dev.csv (one per task of
    ``predictions``, aligned with the dev file's rows), config.yaml naming ``data_dir`` and a
    metrics.json whose dev scores are computed from those predictions."""
    import json

    import numpy as np
    import pandas as pd
    import yaml

    from mtlib.tasks import TASKS, metric_key

    folder = Path(root) / experiment / f"seed{seed}"
    (folder / "predictions").mkdir(parents=True)
    dev = {}
    for task, values in predictions.items():
        ids, labels = dev_labels(data_dir, task)
        values = np.asarray(values, dtype=float)
        pd.DataFrame({"id": ids, TASKS[task].label_column: values}).to_csv(
            folder / "predictions" / f"{task}-dev.csv", index=False)
        dev[metric_key(task)] = TASKS[task].score(values, labels)
    if len(dev) == len(TASKS):
        dev["mean"] = float(np.mean(list(dev.values())))
    metrics = {"dev": dev, "seed": seed, "experiment": experiment, "backbone": backbone, "profile": profile,
               "train_seconds": 1.0, "params": {"total": 10, "trainable": 10, "shared": 4,
                                                 "task_specific": {t: 2 for t in TASKS}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    cfg = load_config(ROOT / "params.yaml", "base_model", "smoke", overrides=[f"data.dir={data_dir}"])
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # as mtlib.training.runs saves it
    return folder


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def history(examples, values):
    """A run's history.csv as a frame: one row per evaluation at ``examples``, metrics from ``values``."""
    values = np.asarray(values, dtype=float)
    return pd.DataFrame({"update": np.arange(1, len(values) + 1), "epoch": np.arange(1, len(values) + 1),
                         "examples": examples, "train_seconds": np.arange(len(values)) * 2.0,
                         "sst/acc": values, "para/acc": values + 0.2, "sts/pearson": values + 0.1,
                         "mean": values + 0.1})


def histories(per_experiment):
    """``{experiment: [history frame per seed]}`` as collect_histories' long frame (seeds 0, 1, ...)."""
    return pd.concat([frame.assign(experiment=experiment, seed=seed) for experiment, frames in per_experiment.items()
                      for seed, frame in enumerate(frames)], ignore_index=True)


def scratch_pipeline(folder: Path) -> Path:
    """The repository's pipeline (dvc.yaml, params.yaml, the notebook sources, mtlib and the
    benchmark results the scorecard reads) copied into ``folder``: a project that DVC can run
    or inspect away from this checkout."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, folder / name)
    for name in ("notebooks", "mtlib", "benchmarks/results"):
        shutil.copytree(ROOT / name, folder / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.ipynb", ".ipynb_checkpoints"))
    return folder


def tool_env(**extra: str) -> dict:
    """The environment for dvc, git and the stages' commands: this Python's scripts first on
    PATH (jupytext, papermill, dvc), no analytics, a git identity for commits."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com", **extra}


def run_tool(args: list[str], cwd: Path, env: dict | None = None) -> str:
    """Run a command (``dvc`` runs as ``python -m dvc`` of this environment); its output, or
    an AssertionError that shows it."""
    if args[0] == "dvc":
        args = [sys.executable, "-m", "dvc", *args[1:]]
    result = subprocess.run(args, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(map(str, args))} failed ({result.returncode}):\n{output[-4000:]}"
    return output
