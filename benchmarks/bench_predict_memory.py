#!/usr/bin/env python
"""Memory of ``mtlib predict``: peak RSS for a small and a ten times larger input file.

``mtlib.training.inference.predict_file`` validates the input in one streaming pass, then
reads it again and predicts ``chunk_rows`` rows at a time, appending each chunk's rows to
the (atomically written) output. Its memory should not grow with the input beyond the
output itself (and one id per row, kept to find duplicate ids).

The script trains the tiny random BERT on the smoke profile (generated course files),
writes STS files of ``--rows`` generated sentence pairs (labelled, so the metric is
computed too), and runs ``predict_file`` on each in a FRESH subprocess per (variant, size):

- streamed: the default ``chunk_rows`` (mtlib.training.inference.CHUNK_ROWS);
- one chunk: ``chunk_rows`` = the file's row count, i.e. the whole file in memory at once,
  as predict did before it streamed.

Reported per run: peak RSS (``ru_maxrss``) of the subprocess, its RSS just before the call
(imports done, nothing loaded) and the difference (what predicting added at its peak);
then, per variant, the ratio of the largest to the smallest file's figures. The two variants'
outputs are checked to be the same predictions (up to float noise from padding widths).

Usage
  .venv/bin/python -m benchmarks.bench_predict_memory                     # 20,000 and 200,000 rows
  .venv/bin/python -m benchmarks.bench_predict_memory --rows 2000,20000 --json out.json
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import pandas as pd

from benchmarks.machine import machine_info
from mtlib.config import load_config
from mtlib.training.inference import CHUNK_ROWS
from mtlib.training.loop import train
from tests.helpers import WORDS, write_task_files

CHILD = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[5]))
from benchmarks.machine import maxrss_mib, rss_now_mib
from mtlib.training.inference import predict_file
before = rss_now_mib()
started = time.perf_counter()
scores = predict_file(sys.argv[1], "sts", sys.argv[2], sys.argv[3], chunk_rows=int(sys.argv[4]))
print(json.dumps({"rss_before_mib": before, "peak_rss_mib": maxrss_mib(), "seconds": time.perf_counter() - started,
                  "scores": scores}))
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="20000,200000", help="comma-separated input sizes (rows)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each subprocess")
    p.add_argument("--json", help="also write the results here")
    return p.parse_args(argv)


def write_sts_file(path: Path, rows: int, seed: int = 0) -> Path:
    """``rows`` labelled STS pairs of 3-12 random words, in the course layout."""
    rng = random.Random(seed)

    def sentence():
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))

    with path.open("w") as f:
        f.write("\tid\tsentence1\tsentence2\tsimilarity\n")
        for i in range(rows):
            f.write(f"{i}\tpair{i}\t{sentence()}\t{sentence()}\t{round(rng.uniform(0, 5), 1)}\n")
    return path


def measure(run: Path, source: Path, output: Path, chunk_rows: int, threads: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(run), str(source), str(output),
                             str(chunk_rows), str(threads)], capture_output=True, text=True, check=True, cwd=ROOT)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["predicting_mib"] = measured["peak_rss_mib"] - measured["rss_before_mib"]
    return measured


def main(argv=None) -> dict:
    args = parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    data = write_task_files(work / "data")
    cfg = load_config(ROOT / "params.yaml", "base_model", "smoke",
                      overrides=[f"data.dir={data}", f"data.cache_dir={work / 'cache'}",
                                 f"data.processed_dir={work / 'processed'}", "train.keep_checkpoint=true"])
    train(cfg, work / "run", progress=False)
    results = {"machine": machine_info(args.threads), "chunk_rows": CHUNK_ROWS, "runs": []}
    for rows in sizes:
        source = write_sts_file(work / f"sts-{rows}.csv", rows)
        outputs = {}
        for variant, chunk in (("streamed", CHUNK_ROWS), ("one chunk", rows)):
            outputs[variant] = work / f"pred-{rows}-{chunk}.csv"
            started = time.perf_counter()
            measured = measure(work / "run", source, outputs[variant], chunk, args.threads)
            row = {"variant": variant, "rows": rows, "chunk_rows": chunk, **measured,
                   "wall_seconds": time.perf_counter() - started}
            results["runs"].append(row)
            print(f"{variant:>9} {rows:>8,} rows: peak RSS {row['peak_rss_mib']:7.1f} MiB "
                  f"(RSS before the call {row['rss_before_mib']:6.1f}, added {row['predicting_mib']:6.1f}) "
                  f"{row['seconds']:6.1f} s  {row['scores']}", flush=True)
        a, b = (pd.read_csv(p) for p in outputs.values())
        assert a["id"].equals(b["id"]), "the variants predicted different rows"
        results.setdefault("max_abs_difference", {})[rows] = float((a["similarity"] - b["similarity"]).abs().max())
    for variant in ("streamed", "one chunk"):
        runs = [r for r in results["runs"] if r["variant"] == variant]
        small, large = min(runs, key=lambda r: r["rows"]), max(runs, key=lambda r: r["rows"])
        ratio = {"rows": large["rows"] / small["rows"], "peak_rss": large["peak_rss_mib"] / small["peak_rss_mib"],
                 "predicting": large["predicting_mib"] / max(small["predicting_mib"], 1e-9)}
        results.setdefault("ratios", {})[variant] = ratio
        print(f"{variant:>9}: {ratio['rows']:.0f}x the rows -> peak RSS x{ratio['peak_rss']:.2f}, "
              f"memory added by predicting x{ratio['predicting']:.2f}")
    print(f"largest difference between the variants' predictions: {results['max_abs_difference']}")
    print(f"machine: {results['machine']['cpu_model']}, torch {results['machine']['torch']}, "
          f"{args.threads} thread(s), flags {results['machine']['cpu_flags']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
