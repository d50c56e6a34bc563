"""Several runs at once give exactly the results of the same runs one after the other."""
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtlib.training.sweep import Job, resolve_workers, train_many
from tests.helpers import smoke_config


def jobs(tmp_path, name, experiment="base_model"):
    cfg = smoke_config(tmp_path, experiment, "data.augment=false")
    return [Job(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed)), tmp_path / name / f"seed{seed}")
            for seed in (1, 2)]


@pytest.mark.parametrize("experiment", ["base_model", "head_only"])  # head_only: warming the data alone is valid
def test_runs_in_parallel_processes_equal_runs_in_sequence(tmp_path, experiment):
    one_by_one = train_many(jobs(tmp_path, "sequence", experiment), workers=1)
    side_by_side = train_many(jobs(tmp_path, "parallel", experiment), workers=2)
    assert [m["dev"] for m in side_by_side] == [m["dev"] for m in one_by_one]
    assert [m["seed"] for m in side_by_side] == [1, 2]
    assert one_by_one[0]["dev"] != one_by_one[1]["dev"]  # the seeds differ, so the comparison means something


def test_resolve_workers(tmp_path, monkeypatch):
    two = jobs(tmp_path, "x")
    monkeypatch.delenv("MTLIB_WORKERS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert resolve_workers(None, two) == 2          # one per core at one thread each, at most one per job
    assert resolve_workers(1, two) == 1
    monkeypatch.setenv("MTLIB_WORKERS", "1")
    assert resolve_workers(None, two) == 1
    with pytest.raises(ValueError):
        resolve_workers(-1, two)


PARENT = """
import os, sys, time
from mtlib.training.sweep import worker_pool
pool = worker_pool(1)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 600)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_worker_exits_when_its_stage_is_killed():
    """SIGKILL leaves the parent no chance to stop its pool (as when dvc, papermill and the
    kernel are killed together); the busy worker must notice and exit by itself."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), f"worker {worker} outlived its killed parent by 10 s"
    finally:
        parent.kill()
