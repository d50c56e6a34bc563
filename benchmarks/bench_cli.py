#!/usr/bin/env python
"""Start-up time of the command line: ``mtlib --help``, ``mtlib train --help`` and a settings error.

None of them needs torch, transformers or pandas, which take seconds to import; the target is
1.5 s for ``mtlib --help``. Each command runs in a FRESH subprocess (``python -m mtlib ...``,
with the checkout as working folder and PYTHONPATH), timed from start to exit, for every
``--root`` checkout (default: this one; give another, e.g. the code before a change, to
compare them in the same run). ``python -c "import torch, transformers"`` is timed as well:
what any command that imported them at the top would cost at least.

Interleaved rounds (``benchmarks/interleave.py``): every round runs every (checkout, command)
once, in an order rotated from round to round, after ``--warmup`` untimed rounds (a cold
file cache). Reported: the median (and min-max) seconds over the rounds, and the ratio of the
median to the 1.5 s target.

Usage
  .venv/bin/python -m benchmarks.bench_cli                                   # this checkout
  .venv/bin/python -m benchmarks.bench_cli --root . --root ../main --rounds 9 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.interleave import run_rounds
from benchmarks.machine import describe, loadavg, machine_info

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 1.5
# name -> (arguments after `python`, the exit status it must end with)
COMMANDS = {
    "mtlib --help": (["-m", "mtlib", "--help"], 0),
    "mtlib train --help": (["-m", "mtlib", "train", "--help"], 0),
    "settings error": (["-m", "mtlib", "train", "--experiment", "nope", "--profile", "smoke"], 2),
}
FLOOR = ("import torch, transformers", (["-c", "import torch, transformers"], 0))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", action="append", help="a checkout to time (repeatable; default: this one)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def timer(arguments: list[str], status: int, root: Path):
    """A variant for run_rounds: one fresh ``python`` process in ``root``, timed to its exit."""
    env = {**os.environ, "PYTHONPATH": str(root)}

    def once(_round: int) -> tuple[float, float]:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, *arguments], cwd=root, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if result.returncode != status:
            raise SystemExit(f"{root}: python {' '.join(arguments)} exited {result.returncode}, not {status}:\n"
                             f"{result.stderr[-2000:]}")
        return 1.0, seconds
    return once


def main(argv=None) -> dict:
    args = parse_args(argv)
    roots = {Path(r).resolve().name: Path(r).resolve() for r in (args.root or [str(ROOT)])}
    if len(roots) != len(args.root or [ROOT]):
        raise SystemExit("each --root is labelled by its folder's name: give folders with different names")
    variants = {f"{label}: {name}": timer(arguments, status, root)
                for name, (arguments, status) in COMMANDS.items() for label, root in roots.items()}
    variants[FLOOR[0]] = timer(*FLOOR[1], ROOT)
    info = machine_info(threads=None)
    print(describe(info), flush=True)
    run_rounds(variants, args.warmup)
    records = run_rounds(variants, args.rounds)
    results = {"machine": info, "args": {**vars(args), "root": [os.path.relpath(r, ROOT) for r in roots.values()]},
               "target_seconds": TARGET_SECONDS, "variants": {}}
    for name, rounds in records.items():
        seconds = [s for _, s in rounds]
        median = statistics.median(seconds)
        results["variants"][name] = {"median_seconds": median, "min_seconds": min(seconds),
                                     "max_seconds": max(seconds), "rounds": len(seconds),
                                     "ratio_to_target": median / TARGET_SECONDS}
        print(f"{name:>40}: median {median:6.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}; "
              f"{len(seconds)} rounds)  x{median / TARGET_SECONDS:.2f} the {TARGET_SECONDS} s target")
    results["machine"]["loadavg_end"] = loadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
