"""Evaluation benchmark: ways of scoring the dev sets faster, side by side, with the same predictions.

A default-profile run scores its dev sets after every epoch, so evaluation is a large share
of a run on a CPU. Each variant predicts the same dev sample (``--examples`` rows per task,
drawn with a fixed seed from the dev splits ``prepare_data`` gives; all of them with
``--examples 0``) with the ``cpu`` profile's BaseModel (``minilm``), in length-sorted
batches as ``mtlib.data.encode.eval_batches`` makes them, and differs from ``today`` only in
what its name says:

  today       mtlib's predict_split as it was: torch.no_grad, a fresh autocast context per
              batch (so autocast casts every weight to bf16 again for every batch), batches of
              cfg.train.eval_batch_size (128), the row-by-row collate;
  inference   today under torch.inference_mode instead of no_grad;
  one_context today with ONE autocast context over all batches (autocast keeps the bf16
              copies of the weights while the context is open);
  batch256    today with batches of 256 (batch32, batch64, batch512: of 32, 64, 512);
  eager       today with transformers' eager attention instead of SDPA;
  pad8        today with each batch padded to a multiple of 8 tokens;
  improved    ``mtlib.training.evaluate.predict_split`` now.

Timing as in bench_step: ``--rounds`` interleaved rounds (benchmarks/interleave.py), each
variant scoring the whole sample once per round, after one untimed pass; medians over
rounds and median per-round ratios to ``today`` of the same precision. Predictions are
compared with today's: the share of SST/Quora labels that differ and the largest difference
of an STS score (float noise only is the requirement).

Usage
  python -m benchmarks.bench_eval                              # 1 thread, bf16 + fp32, ~5 min on a busy CPU
  python -m benchmarks.bench_eval --threads 2 --examples 0 --rounds 2 --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_step import rows_collate
from benchmarks.interleave import run_rounds, summary
from benchmarks.machine import describe, loadavg, machine_info, portable_args
from mtlib.config import load_config
from mtlib.data.encode import EncodedSplit, collate
from mtlib.data.files import find_data_dir
from mtlib.data.prepare import prepare_data
from mtlib.model.backbone import load_tokenizer
from mtlib.model.multitask import build_model
from mtlib.tasks import TASKS
from mtlib.training.evaluate import predict_split
from mtlib.training.precision import autocast

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SEED = 0
VARIANTS = {  # name: (grad mode, one autocast context, batch size (None: config's), attention, pad multiple)
    "today": ("no_grad", False, None, "sdpa", 1),
    "inference": ("inference", False, None, "sdpa", 1),
    "one_context": ("no_grad", True, None, "sdpa", 1),
    "batch32": ("no_grad", False, 32, "sdpa", 1),
    "batch64": ("no_grad", False, 64, "sdpa", 1),
    "batch256": ("no_grad", False, 256, "sdpa", 1),
    "batch512": ("no_grad", False, 512, "sdpa", 1),
    "eager": ("no_grad", False, None, "eager", 1),
    "pad8": ("no_grad", False, None, "sdpa", 8),
    "improved": None,
}
AMPS = {"bf16": "bf16", "fp32": "none"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--examples", type=int, default=500, help="dev rows per task (0: all the config's dev rows)")
    p.add_argument("--bf16", default=",".join(VARIANTS), help="variants under bf16 autocast")
    p.add_argument("--fp32", default="today,improved", help="variants in fp32")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--experiment", default="base_model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--data", default=None)
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    for amp in AMPS:
        names = [v for v in getattr(args, amp).split(",") if v]
        bad = [v for v in names if v not in VARIANTS]
        if bad:
            p.error(f"--{amp}: unknown {bad}; choose from {','.join(VARIANTS)}")
        setattr(args, amp, names)
    return args


def sample(split: EncodedSplit, n: int) -> EncodedSplit:
    if not n or n >= len(split):
        return split
    rows = np.sort(np.random.default_rng(SAMPLE_SEED).permutation(len(split))[:n])
    parts = [([ids[i] for i in rows], [types[i] for i in rows]) for ids, types in split.parts]
    labels = None if split.labels is None else split.labels[rows]
    return EncodedSplit(split.task, [split.ids[i] for i in rows], parts, labels)


def predict_variant(name: str, model, split: EncodedSplit, batch_size: int, pad_id: int, amp: str) -> np.ndarray:
    """The variant's predictions for every row of ``split`` (today's predict_split, one thing changed)."""
    grad_mode, one_context, size, _, multiple = VARIANTS[name]
    cpu = torch.device("cpu")
    size = size or batch_size
    model.eval()
    predictions = np.zeros(len(split), dtype=float)
    order = np.argsort(split.lengths(), kind="stable")
    mode = torch.inference_mode() if grad_mode == "inference" else torch.no_grad()
    with mode, (autocast(amp, cpu) if one_context else contextlib.nullcontext()):
        for i in range(0, len(order), size):
            rows = order[i:i + size]
            pad_to = None
            if multiple > 1:
                pad_to = -(-max(len(split.parts[0][0][r]) for r in rows) // multiple) * multiple
            batch = rows_collate(split, rows, pad_id, pad_to)
            with (contextlib.nullcontext() if one_context else autocast(amp, cpu)):
                output = model(batch)
            predictions[batch.index] = TASKS[split.task].predict(output)
    return predictions


def compare(predictions: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    out = {}
    for task, values in predictions.items():
        if TASKS[task].integer_labels or task == "para":
            out[f"{task}_labels_differing"] = float(np.mean(values != reference[task]))
        else:
            out[f"{task}_max_abs_difference"] = float(np.max(np.abs(values - reference[task])))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    info = machine_info(args.threads)
    print(describe(info))
    print("NOTE: a shared machine; variants are interleaved round by round and medians over rounds are quoted.")
    cfg = load_config(args.params, args.experiment, args.profile,
                      overrides=[f"data.cache_dir={ROOT / 'data' / 'cache'}", *args.set])
    tokenizer = load_tokenizer(cfg.backbone)
    dev = prepare_data(cfg, tokenizer, find_data_dir(args.data or cfg.data.dir, root=ROOT), splits=("dev",))["dev"]
    dev = {task: sample(split, args.examples) for task, split in dev.items()}
    examples = sum(len(s) for s in dev.values())
    tokens = sum(int(s.lengths().sum()) for s in dev.values())
    model = build_model(cfg).eval()
    default_attention = model.encoder.config._attn_implementation
    pad_id, batch_size = tokenizer.pad_token_id, cfg.train.eval_batch_size
    print(f"model: {args.experiment} on profile {args.profile} ({cfg.backbone.name}), {args.threads} thread(s); "
          f"dev sample {', '.join(f'{t} {len(s)}' for t, s in dev.items())} = {examples} examples, {tokens} tokens; "
          f"eval batch {batch_size}; default attention {default_attention}; {args.rounds} rounds")

    def run(name: str, amp: str) -> dict[str, np.ndarray]:
        attention = "sdpa" if name == "improved" else VARIANTS[name][3]
        model.encoder.set_attn_implementation(attention)
        if name == "improved":
            return {t: predict_split(model, s, batch_size, pad_id, torch.device("cpu"), AMPS[amp]) for t, s in dev.items()}
        return {t: predict_variant(name, model, s, batch_size, pad_id, AMPS[amp]) for t, s in dev.items()}

    labels = [(name, amp) for amp in AMPS for name in getattr(args, amp)]
    predictions = {f"{n} {a}": run(n, a) for n, a in labels}  # the untimed pass, kept for the comparison

    def timed(name: str, amp: str):
        def once(_round: int) -> tuple[float, float]:
            start = time.perf_counter()
            run(name, amp)
            return examples, time.perf_counter() - start
        return once

    records = run_rounds({f"{n} {a}": timed(n, a) for n, a in labels}, args.rounds)
    stats = summary(records, {f"{n} {a}": (f"today {a}" if n != "today" and f"today {a}" in predictions else None)
                              for n, a in labels})
    print(f"\n  {'variant':18}{'examples/s':>11}{'min-max':>14}{'x today':>8}  predictions vs today's")
    for label, s in stats.items():
        reference = predictions.get(f"today {label.split()[1]}")
        diff = compare(predictions[label], reference) if reference and not label.startswith("today") else {}
        s["differences"] = diff
        ratio = "-" if s["ratio"] is None else f"{s['ratio']:.2f}"
        print(f"  {label:18}{s['median_rate']:>11.1f}{s['min_rate']:>7.0f}-{s['max_rate']:<6.0f}{ratio:>8}  "
              + ", ".join(f"{k} {v:.2g}" for k, v in diff.items()))
    print("\nexamples/s = dev examples scored per second (collate + forward + predict), median over rounds; "
          "x today = median per-round ratio to 'today' of the same precision.")
    info.update(loadavg_end=loadavg(), wall_seconds=time.perf_counter() - started)
    print(f"load average at the end {info['loadavg_end'][0]:.2f}; wall time {info['wall_seconds']:.0f}s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "args": portable_args(args), "examples": examples,
                                               "tokens": tokens, "stats": stats}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
