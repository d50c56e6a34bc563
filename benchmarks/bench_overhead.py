"""Per-run overhead: where the wall time of one fine-tuning stage goes besides training.

A fine-tuning stage of the pipeline is ``papermill notebooks/03_finetune.ipynb``: a Jupyter
kernel starts, the notebook imports mtlib (torch, transformers, pandas, matplotlib), and
``mtlib.training.loop.train`` loads the tokenizer and the backbone, reads and tokenises the
data, pretrains the heads when the experiment asks, trains, evaluates and writes the run.

How it is measured (in-process, not by timing the notebook as a whole, so that every phase
is separated and nothing else is counted):

* kernel start: ``papermill`` on a notebook with one empty cell, in a subprocess (wall time
  of the command: papermill's own start, the kernel's start and shutdown);
* imports: a fresh ``python -c 'import ...'`` of what the 03 notebook imports (median of 3);
* the run: ``train()`` of ``--experiment`` on ``--profile`` in this process, with the
  functions it calls for each phase wrapped by timers (loading the tokenizer and the
  backbone, preparing the data, head pretraining, the training updates, evaluations,
  checkpoints) and their inner steps (tokenising or reading the token cache, computing or
  reading the cached encoder features). ``train()`` runs twice: first with an empty token
  and feature cache (cold: a fresh clone's first run), then again with the cache that run
  left (warm: every later run). EDA-augmented training files come from the project's
  ``data/processed`` as the pipeline's data stage leaves them.

Non-training share = 1 - (training updates) / (kernel start + imports + train()).

Usage
  python -m benchmarks.bench_overhead                                  # advanced_model, cpu profile, ~5 min
  python -m benchmarks.bench_overhead --experiment base_model --threads 1 --json out.json
  python -m benchmarks.bench_overhead --cache-dir /tmp/cache --runs 1        # one run on a cache kept from before
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.machine import describe, loadavg, machine_info, portable_args

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = ("import mtlib.training.loop, mtlib.training.runs, mtlib.study.analysis, mtlib.study.figures, "
           "mtlib.config; import matplotlib.pyplot")
# phase: (module, attribute) wrapped by a timer; inner steps are indented under their phase.
PHASES = {
    "tokenizer": ("mtlib.training.loop", "load_tokenizer"),
    "data (read + tokenise)": ("mtlib.training.loop", "prepare_data"),
    "  read + check CSV": ("mtlib.data.prepare", "load_split"),
    "  tokenise (cold)": ("mtlib.data.encode", "tokenize"),
    "  read token cache": ("mtlib.data.encode", "_load_parts"),
    "backbone + model": ("mtlib.training.loop", "build_model"),
    "head pretraining": ("mtlib.training.loop", "pretrain_heads"),
    "  encoder fingerprint": ("mtlib.training.pretrain", "encoder_fingerprint"),
    "  encoder features (cold)": ("mtlib.training.pretrain", "encode_features"),
    "  read feature cache": ("mtlib.training.pretrain", "load_features"),
    "training updates": ("mtlib.training.stepper", "Stepper.step"),
    "evaluation": ("mtlib.training.loop", "evaluate"),
    "validation points (+ checkpoints)": ("mtlib.training.loop", "_evaluate_and_checkpoint"),
    "checkpoints": ("mtlib.training.loop", "save_checkpoint"),
    "dev scoring (+ prediction files)": ("mtlib.training.loop", "_score_splits"),
    "metrics.json": ("mtlib.training.loop", "_write_record"),
}
# "evaluation" is inside the two rows after it; they are not added again to the phases' sum.
OVERLAPPING = ("validation points (+ checkpoints)", "dev scoring (+ prediction files)", "metrics.json")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="advanced_model")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the profile's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--no-kernel", action="store_true", help="skip the papermill kernel-start measurement")
    p.add_argument("--cache-dir", default=None, help="token and feature cache to use and keep (default: a new, "
                   "empty one); runs that find it filled are 'warm'")
    p.add_argument("--runs", type=int, default=2, help="timed train() runs, one after the other (default 2)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[;KEY=VALUE]",
                   help="a variant of the run (repeatable): with variants, every round runs each of them once on "
                   "the warm cache, in an order rotated from round to round, and medians over rounds are printed")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the variants (default 3)")
    p.add_argument("--no-warmup", action="store_true", help="with variants: no untimed first run (the cache given "
                   "with --cache-dir is warm already)")
    p.add_argument("--json", default=None, metavar="PATH")
    return p.parse_args(argv)


class Timers:
    """Wraps each PHASES function with a timer that adds up its seconds and calls."""

    def __init__(self):
        self.totals: dict[str, list[float]] = {}
        for phase, (module, attribute) in PHASES.items():
            owner = importlib.import_module(module)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part, None)
            if owner is not None and hasattr(owner, name):
                setattr(owner, name, self._timed(getattr(owner, name), phase))

    def _timed(self, function, phase: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                total = self.totals.setdefault(phase, [0.0, 0])
                total[0] += time.perf_counter() - start
                total[1] += 1
        return timed

    def take(self) -> dict[str, dict]:
        out = {phase: {"seconds": s, "calls": n} for phase, (s, n) in self.totals.items()}
        self.totals = {}
        return out


def subprocess_seconds(cmd: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=str(ROOT), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def kernel_start_seconds(repeats: int = 2) -> list[float]:
    """papermill on a one-cell notebook: papermill's start + the kernel's start and shutdown."""
    with tempfile.TemporaryDirectory() as tmp:
        notebook = Path(tmp) / "empty.ipynb"
        notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                                                   "outputs": [], "source": ["1"]}],
                                        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                    "language": "python"}},
                                        "nbformat": 4, "nbformat_minor": 5}))
        papermill = Path(sys.executable).with_name("papermill")
        return subprocess_seconds([str(papermill), "-k", "python3", "--no-progress-bar", str(notebook),
                                   str(Path(tmp) / "out.ipynb")], repeats)


def timed_run(cfg, out_dir: Path, timers: Timers) -> dict:
    from mtlib.training.loop import train

    start = time.perf_counter()
    metrics = train(cfg, out_dir, overwrite=True, progress=False)
    wall = time.perf_counter() - start
    phases = timers.take()
    return {"wall_seconds": wall, "phases": phases, "precision": metrics.get("precision"),
            "updates": metrics.get("updates")}


def print_breakdown(before: dict, runs: dict[str, dict]) -> None:
    names = list(runs)
    print(f"  {'phase':30}" + "".join(f"{n:>18}" for n in names))
    for phase, seconds in before.items():
        print(f"  {phase:30}" + "".join(f"{seconds:>17.1f}s" for _ in names))
    for phase in PHASES:
        cells = []
        for n in names:
            p = runs[n]["phases"].get(phase)
            cells.append(f"{p['seconds']:>10.1f}s ({p['calls']:>3})" if p else f"{'-':>18}")
        if any(c.strip() != "-" for c in cells):
            print(f"  {phase:30}" + "".join(cells))
    for n in names:
        r = runs[n]
        known = sum(p["seconds"] for ph, p in r["phases"].items() if not ph.startswith(" ") and ph not in OVERLAPPING)
        r["other_seconds"] = r["wall_seconds"] - known
    print(f"  {'other (in train())':30}" + "".join(f"{runs[n]['other_seconds']:>17.1f}s" for n in names))
    print(f"  {'total':30}" + "".join(f"{runs[n]['stage_seconds']:>17.1f}s" for n in names))
    print(f"  {'non-training share':30}" + "".join(f"{runs[n]['non_training_share']:>18.0%}" for n in names))


def parse_variants(specs: list[str]) -> dict[str, list[str]]:
    """``NAME=KEY=VALUE;KEY=VALUE`` -> {NAME: [KEY=VALUE, ...]} (``NAME=`` alone: no overrides)."""
    variants = {}
    for spec in specs:
        name, _, sets = spec.partition("=")
        if not name or name in variants:
            raise SystemExit(f"--variant {spec!r}: give each variant a new name, as NAME=KEY=VALUE;...")
        variants[name] = [item for item in sets.split(";") if item]
    return variants


def run_variants(args, overrides: list[str], cache: Path, tmp: Path, timers: Timers) -> dict[str, dict]:
    """One warm-up run (untimed: it fills the cache), then ``args.rounds`` rounds of every variant,
    rotated (benchmarks.interleave.run_rounds); keys '<variant> #<round>'."""
    from mtlib.config import load_config

    from benchmarks.interleave import run_rounds

    variants = parse_variants(args.variant)
    configs = {name: load_config(args.params, args.experiment, args.profile, args.seed, overrides=overrides + sets)
               for name, sets in variants.items()}
    if not args.no_warmup:
        print(f"running {args.experiment} (warm-up) ...", file=sys.stderr, flush=True)
        timed_run(next(iter(configs.values())), tmp / "warmup", timers)
    runs = {}

    def one(name):
        def run(r):
            print(f"running {args.experiment} ({name}, round {r + 1}) ...", file=sys.stderr, flush=True)
            runs[f"{name} #{r + 1}"] = timed_run(configs[name], tmp / f"{name}-{r}", timers)
            return 1.0, runs[f"{name} #{r + 1}"]["wall_seconds"]
        return run

    run_rounds({name: one(name) for name in variants}, args.rounds)
    return runs


def print_medians(runs: dict[str, dict]) -> None:
    """Per variant, the median over its rounds of every phase, and its share of the stage."""
    by_variant: dict[str, list[dict]] = {}
    for key, run in runs.items():
        by_variant.setdefault(key.rsplit(" #", 1)[0], []).append(run)
    print("medians over rounds (seconds):")
    names = list(by_variant)
    print(f"  {'phase':36}" + "".join(f"{n:>14}" for n in names))
    rows = [*PHASES, "other (in train())", "total"]
    for phase in rows:
        cells = []
        for n in names:
            values = [r["other_seconds"] if phase.startswith("other") else r["stage_seconds"] if phase == "total"
                      else r["phases"].get(phase, {}).get("seconds") for r in by_variant[n]]
            values = [v for v in values if v is not None]
            cells.append(f"{statistics.median(values):>13.1f}s" if values else f"{'-':>14}")
        print(f"  {phase:36}" + "".join(cells))


def main(argv=None) -> int:
    args = parse_args(argv)
    from mtlib.config import load_config

    started = time.perf_counter()
    cfg0 = load_config(args.params, args.experiment, args.profile, args.seed, overrides=args.set)
    threads = args.threads or cfg0.train.num_threads or torch.get_num_threads()
    info = machine_info(threads)
    print(describe(info))
    print("NOTE: a shared machine: other load changes every figure; one measurement of each.")
    before = {}
    if not args.no_kernel:
        kernel = kernel_start_seconds()
        before["kernel start (papermill)"] = statistics.median(kernel)
    imports = subprocess_seconds([sys.executable, "-c", IMPORTS], 3)
    before["imports (fresh process)"] = statistics.median(imports)
    with tempfile.TemporaryDirectory() as tmp:  # EDA-balanced files as the data stage leaves them, untimed
        from mtlib.data.prepare import prepare_data
        from mtlib.model.backbone import load_tokenizer

        prepare_data(load_config(args.params, args.experiment, args.profile, args.seed,
                                 overrides=[f"data.cache_dir={tmp}", *args.set]), load_tokenizer(cfg0.backbone),
                     splits=("train",))
    timers = Timers()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache_dir or Path(tmp) / "cache")
        overrides = [f"data.cache_dir={cache}", f"train.num_threads={threads}", *args.set]
        cfg = load_config(args.params, args.experiment, args.profile, args.seed, overrides=overrides)
        if args.variant:
            runs = run_variants(args, overrides, cache, Path(tmp), timers)
        for k in range(0 if args.variant else args.runs):
            name = f"{'warm' if any(cache.rglob('*.safetensors')) else 'cold'} cache" + (f" ({k + 1})" if k > 1 else "")
            print(f"running {args.experiment} ({name}) ...", file=sys.stderr, flush=True)
            runs[name] = timed_run(cfg, Path(tmp) / f"run{k}", timers)
    for r in runs.values():
        r["stage_seconds"] = sum(before.values()) + r["wall_seconds"]
        training = r["phases"].get("training updates", {"seconds": 0.0})["seconds"]
        r["non_training_share"] = 1 - training / r["stage_seconds"]
    first = next(iter(runs.values()))
    print(f"stage: {args.experiment}, seed {args.seed}, profile {args.profile}, {threads} thread(s), precision "
          f"{first['precision']}, {first['updates']} updates; seconds (calls)")
    print_breakdown(before, runs)
    if args.variant:
        print_medians(runs)
    print("kernel start and imports are measured once and counted in both columns; indented rows are part of the "
          "row above; 'other' is the rest of train() (writing predictions, metrics, configs).")
    info.update(loadavg_end=loadavg(), wall_seconds=time.perf_counter() - started)
    print(f"load average at the end {info['loadavg_end'][0]:.2f}; wall time {info['wall_seconds']:.0f}s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "args": portable_args(args), "before_train": before,
                                               "kernel_runs": locals().get("kernel"), "import_runs": imports,
                                               "runs": runs}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
