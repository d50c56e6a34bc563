"""Several runs at once: the seeds of one experiment, each in a process of its own.

On a small CPU, several single-threaded runs side by side do more work than one run using
every core: on a 2-core EPYC, two processes with one torch thread each trained MiniLM at
about 1.6x the aggregate rate of one process with two threads (the matrices of a batch of
32 short sentences are too small to keep two threads busy). On a GPU that is bound by
kernel launches, several processes sharing it fill the gaps the same way.

Each run is independent and deterministic given its config (its seed and its thread count
are in the config), so how many run at once never changes a result.

A worker never outlives the process that started it: a stage killed with SIGKILL (dvc,
papermill and the kernel together) cannot clean up, so each worker watches its parent
itself (:func:`exit_with_parent`) and exits within a second of it.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from mtlib.config import Config
from mtlib.training.loop import train, warm_caches

WORKERS_ENV = "MTLIB_WORKERS"
PARENT_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Job:
    cfg: Config
    out_dir: Path
    data_dir: str | None = None
    resume: bool = False
    overwrite: bool = False


def resolve_workers(workers: int | None, jobs: list[Job]) -> int:
    """How many runs go at once: ``workers`` if positive, else ``$MTLIB_WORKERS``, else one per
    ``num_threads`` CPU cores on a CPU (one on a GPU); never more than there are jobs."""
    if not workers:
        workers = int(os.environ.get(WORKERS_ENV, "0") or 0)
    if not workers:
        cfg = jobs[0].cfg.train if jobs else None
        on_gpu = cfg is not None and cfg.device != "cpu" and torch.cuda.is_available()
        threads = (cfg.num_threads if cfg and cfg.num_threads else torch.get_num_threads())
        workers = 1 if on_gpu else max(1, (os.cpu_count() or 1) // threads)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return max(1, min(workers, len(jobs)))


def exit_with_parent(parent: int) -> None:
    """In a worker: a daemon thread that ends the process once ``parent`` (the pid that
    started it) is gone. A killed parent's children are re-parented, so ``os.getppid()``
    changing is the portable sign (Linux's PR_SET_PDEATHSIG would follow the thread that
    forked, not the process); ``os._exit`` because nothing of a run is left to save: its
    last checkpoint is what ``--resume`` continues from."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` fresh (spawned) processes, each of which exits when this process does."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))


def _run(job: Job) -> dict:
    return train(job.cfg, job.out_dir, job.data_dir, resume=job.resume, overwrite=job.overwrite, progress=False)


def _warm(job: Job, task: str) -> None:
    warm_caches(job.cfg, job.data_dir, [task])


def train_many(jobs: list[Job], workers: int | None = None) -> list[dict]:
    """Train every job; returns their metrics in the jobs' order. With one worker the runs
    happen here, one after the other; with more, in fresh (spawned) processes, after what
    the jobs share is computed once, a task per worker (:func:`warm_caches`)."""
    n = resolve_workers(workers, jobs)
    if n == 1:
        return [_run(job) for job in jobs]
    first = jobs[0]
    warm_caches(first.cfg, first.data_dir, features=False)  # the data, here: EDA balancing runs once
    with worker_pool(n) as pool:
        list(pool.map(_warm, [first] * len(first.cfg.train.tasks), first.cfg.train.tasks))
        return list(pool.map(_run, jobs))
