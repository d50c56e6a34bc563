"""Training-step benchmark: the step as it was against mtlib's step now, side by side, on a CPU.

Every variant is the study's own update (``mtlib.training.stepper.Stepper.step``: the
sampler's task, the task's bucketed ``BatchStream`` batch collated, forward + backward under
the run's autocast, clipping, the optimiser step) on the ``cpu`` profile's BaseModel
(``minilm``, the real CS224N training data as ``prepare_data`` gives it), and differs from
the others only in what its name says:

  today      torch.optim.AdamW as mtlib built it before (on a CPU that is torch's per-tensor
             Python loop: neither fused nor foreach) and the row-by-row collate it had
             (``rows_collate`` below, kept here as the reference);
  fused      today + fused AdamW (``mtlib.training.stepper.adamw``);
  collate    today + the vectorised ``mtlib.data.encode.collate``;
  improved   mtlib's step now: both (what ``mtlib.training.loop`` builds);
  eager      improved + transformers' eager attention instead of SDPA (the default);
  pad8       improved, each batch padded to a multiple of 8 tokens (fewer shapes; more
             padding, and other dropout masks, so its losses differ);
  compiled   improved + torch.compile of the encoder (dynamic shapes), batches padded to a
             multiple of 16; its first update (the compile) is timed apart.

Identical work: every variant has its own copy of the same initial weights, its own
sampler and streams from the same seed (so update k draws the same task and rows
everywhere) and its own torch RNG state from the same seed (so the same dropout masks where
shapes agree). The losses of every update are recorded; the report gives the largest
difference from ``today`` of the same precision (rounding only, except pad8 and compiled).

Timing on a shared machine: after ``--warmup`` untimed updates per variant, ``--rounds``
rounds each run ``--updates`` updates of every variant, in an order rotated every round
(benchmarks/interleave.py); a variant's throughput is the median over rounds of its
useful (non-pad) tokens/s, and its ratio the median of per-round ratios. Each thread count
runs in a fresh process (``--threads 1,2``); ``--concurrent N`` also starts N one-thread
processes at once, each timing today and improved, and adds up their throughputs: what the
machine does when runs go side by side (mtlib.training.sweep).

Usage
  python -m benchmarks.bench_step                                  # ~10 min on a busy 2-core CPU
  python -m benchmarks.bench_step --threads 1 --rounds 3 --concurrent 0 --json out.json
  python -m benchmarks.bench_step --bf16 improved,compiled --fp32 '' --threads 1 --concurrent 0
  python -m benchmarks.bench_step --bf16 today,improved --fp32 '' --threads 1 --concurrent 0 --ops
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.interleave import run_rounds, summary
from benchmarks.machine import describe, loadavg, machine_info, portable_args
from mtlib.config import load_config
from mtlib.data.encode import Batch, BatchStream, EncodedSplit, collate
from mtlib.data.files import find_data_dir
from mtlib.data.prepare import prepare_data
from mtlib.model.backbone import load_tokenizer
from mtlib.model.multitask import build_model
from mtlib.tasks import TASKS
from mtlib.training.precision import grad_scaler
from mtlib.training.samplers import TaskSampler
from mtlib.training.stepper import Stepper, adamw
from mtlib.training.plans import updates_per_epoch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (optimizer, collate, attention, pad multiple, compile)
    "today": ("loop", "rows", "sdpa", 1, False),
    "fused": ("fused", "rows", "sdpa", 1, False),
    "collate": ("loop", "vector", "sdpa", 1, False),
    "improved": ("fused", "vector", "sdpa", 1, False),
    "eager": ("fused", "vector", "eager", 1, False),
    "pad8": ("fused", "vector", "sdpa", 8, False),
    "compiled": ("fused", "vector", "sdpa", 16, True),
}
AMPS = {"bf16": "bf16", "fp32": "none"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts, one process each")
    p.add_argument("--concurrent", type=int, default=2, help="also N one-thread processes at once (0: skip)")
    p.add_argument("--bf16", default="today,fused,collate,improved,eager,pad8", help="variants under bf16 autocast")
    p.add_argument("--fp32", default="today,improved", help="variants in fp32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--updates", type=int, default=3, help="updates per variant per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates per variant first")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--experiment", default="base_model")
    p.add_argument("--data", default=None, help="data folder (default: the config's)")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--ops", action="store_true",
                   help="also print where one thread's time goes in 3 updates of the last bf16 variant (torch.profiler)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for amp in AMPS:
        names = [v for v in getattr(args, amp).split(",") if v]
        bad = [v for v in names if v not in VARIANTS]
        if bad:
            p.error(f"--{amp}: unknown {bad}; choose from {','.join(VARIANTS)}")
        setattr(args, amp, names)
    if args.rounds < 1 or args.updates < 1 or args.warmup < 1:
        p.error("--rounds, --updates and --warmup must be >= 1")
    return args


# --------------------------------------------------------------------------- the variants' parts
def rows_collate(split: EncodedSplit, rows: np.ndarray, pad_id: int, pad_to: int | None = None) -> Batch:
    """mtlib's collate before it was vectorised: a Python loop over the rows (the reference)."""
    inputs = []
    for ids, types in split.parts:
        width = pad_to or max(len(ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        token_types = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            n = len(ids[i])
            input_ids[r, :n] = torch.tensor(ids[i])
            token_types[r, :n] = torch.tensor(types[i])
            mask[r, :n] = 1
        inputs.append({"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_types})
    labels = None
    if split.labels is not None:
        dtype = torch.long if TASKS[split.task].integer_labels else torch.float32
        labels = torch.tensor(split.labels[rows].astype(float)).to(dtype)
    return Batch(split.task, [split.ids[i] for i in rows], inputs, labels, np.asarray(rows))


class VariantStream(BatchStream):
    """BatchStream (same rows, same order) with the variant's collate and pad multiple."""

    def __init__(self, *args, kind: str, multiple: int, max_length: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind, self.multiple, self.max_length = kind, multiple, max_length

    def collate(self, rows):
        pad_to = None
        if self.multiple > 1:
            longest = max(len(self.split.parts[0][0][i]) for i in rows)
            pad_to = min(-(-longest // self.multiple) * self.multiple, self.max_length)
        return (rows_collate if self.kind == "rows" else collate)(self.split, rows, self.pad_id, pad_to)


class RecordingStepper(Stepper):
    """The Stepper, recording each micro-batch's loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses: list[float] = []

    def loss(self, batch):
        value = super().loss(batch)
        self.losses.append(float(value.detach()))
        return value


class Variant:
    """One variant under one precision: its Stepper, RNG state, and the updates it has done."""

    def __init__(self, name: str, amp: str, cfg, base_model, data: dict[str, EncodedSplit], pad_id: int):
        optimizer_kind, kind, attention, multiple, compiled = VARIANTS[name]
        self.name, self.amp, self.label = name, amp, f"{name} {amp}"
        t = dataclasses.replace(cfg.train, amp=AMPS[amp])
        model = copy.deepcopy(base_model).train()
        model.encoder.set_attn_implementation(attention)
        if compiled:
            model.encoder = torch.compile(model.encoder, dynamic=True)
        if optimizer_kind == "loop":  # exactly what mtlib.training.loop built before
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr,
                                          weight_decay=t.weight_decay)
        else:
            optimizer = adamw(model, t)
        streams = {task: VariantStream(data[task], t.batch_size[task], t.seed, pad_id, cfg.data.bucketing, kind=kind,
                                       multiple=multiple, max_length=cfg.backbone.max_length) for task in t.tasks}
        sizes = {task: len(data[task]) for task in t.tasks}
        cpu = torch.device("cpu")
        self.stepper = RecordingStepper(dataclasses.replace(cfg, train=t), model, optimizer, grad_scaler(t.amp, cpu),
                                        streams, TaskSampler(t.sampler, sizes, t.epochs, t.seed), sizes, cpu, t.amp)
        self.t, self.per_epoch = t, updates_per_epoch(t)
        torch.manual_seed(t.seed)
        self.rng = torch.get_rng_state()
        self.update = self.examples = 0
        self.first_update_seconds = None

    def run(self, updates: int) -> tuple[int, float]:
        """``updates`` more updates; returns (useful tokens, seconds)."""
        torch.set_rng_state(self.rng)
        tokens, start = 0, time.perf_counter()
        for _ in range(updates):
            epoch = min(self.update // self.per_epoch + 1, self.t.epochs)
            examples, real = self.stepper.step(self.update, epoch)
            self.update, self.examples, tokens = self.update + 1, self.examples + examples, tokens + real
        seconds = time.perf_counter() - start
        self.rng = torch.get_rng_state()
        return tokens, seconds


# --------------------------------------------------------------------------- one process
def run_child(args) -> dict:
    threads = torch.get_num_threads()
    cfg = load_config(args.params, args.experiment, args.profile,
                      overrides=[f"data.cache_dir={ROOT / 'data' / 'cache'}"])
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer, find_data_dir(args.data or cfg.data.dir, root=ROOT), splits=("train",))["train"]
    base = build_model(cfg)
    variants = [Variant(name, amp, cfg, base, data, tokenizer.pad_token_id)
                for amp in AMPS for name in getattr(args, amp)]
    for v in variants:  # untimed; the first update pays for first-seen shapes (and a compile)
        start = time.perf_counter()
        v.run(1)
        v.first_update_seconds = time.perf_counter() - start
        v.run(args.warmup - 1)
    timed = {v.label: (lambda r, v=v: v.run(args.updates)) for v in variants}
    records = run_rounds(timed, args.rounds)
    baselines = {v.label: f"today {v.amp}" if f"today {v.amp}" in timed and v.name != "today" else None
                 for v in variants}
    stats = summary(records, baselines)
    by_label = {v.label: v for v in variants}
    for label, s in stats.items():
        v = by_label[label]
        s.update(first_update_seconds=v.first_update_seconds, updates=v.update,
                 median_update_seconds=float(np.median([sec / args.updates for _, sec in records[label]])))
        reference = by_label.get(s["baseline"] or "")
        if reference is not None:
            n = min(len(v.stepper.losses), len(reference.stepper.losses))
            s["max_loss_difference"] = float(np.max(np.abs(np.subtract(v.stepper.losses[:n],
                                                                        reference.stepper.losses[:n]))))
        s["records"] = records[label]
    profiled = [v for v in variants if v.amp == "bf16"] or variants
    profile = op_breakdown(profiled[-1]) if args.ops and threads == 1 else None
    return {"threads": threads, "attention_default": base.encoder.config._attn_implementation, "profile": profile,
            "batch_size": {task: cfg.train.batch_size[task] for task in cfg.train.tasks}, "accumulation": cfg.train.accumulation, "backbone": cfg.backbone.name,
            "stats": stats, "loadavg_end": loadavg()}


def op_breakdown(variant: Variant, updates: int = 3, top: int = 12) -> dict:
    """Share of the updates' time per torch operator (self time), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tokens, seconds = variant.run(updates)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {"variant": variant.label, "updates": updates, "tokens": tokens, "seconds": seconds,
            "ops": [{"name": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:top]]}


# --------------------------------------------------------------------------- driver
def child_command(args, threads: int, result: Path, variants: dict[str, list[str]]) -> tuple[list[str], dict]:
    cmd = [sys.executable, "-m", "benchmarks.bench_step", "--child", "--result", str(result),
           "--bf16", ",".join(variants["bf16"]), "--fp32", ",".join(variants["fp32"]),
           "--rounds", str(args.rounds), "--updates", str(args.updates), "--warmup", str(args.warmup),
           "--params", args.params, "--profile", args.profile, "--experiment", args.experiment]
    if args.data:
        cmd += ["--data", args.data]
    if args.ops:
        cmd.append("--ops")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    return cmd, env


def run_children(args, threads: int, copies: int, variants: dict[str, list[str]]) -> list[dict]:
    """``copies`` processes at once, each with ``threads`` torch threads; their results."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for k in range(copies):
            result = Path(tmp) / f"{k}.json"
            cmd, env = child_command(args, threads, result, variants)
            procs.append((subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True), result, cmd))
        out = []
        for proc, result, cmd in procs:
            log, _ = proc.communicate()
            if proc.returncode != 0 or not result.exists():
                sys.stderr.write(log)
                raise SystemExit(f"benchmark process failed (exit {proc.returncode}): {' '.join(cmd)}")
            out.append(json.loads(result.read_text()))
        return out


def print_table(title: str, result: dict) -> None:
    threads = result["threads"]
    print(title)
    head = (f"  {'variant':16}{'useful tok/s':>13}{'min-max':>15}{'per thread':>11}{'x today':>8}"
            f"{'ms/update':>10}{'1st update s':>13}{'max |loss diff|':>16}")
    print(head)
    for label, s in result["stats"].items():
        ratio = "-" if s["ratio"] is None else f"{s['ratio']:.2f}"
        diff = s.get("max_loss_difference")
        print(f"  {label:16}{s['median_rate']:>13,.0f}{s['min_rate']:>8,.0f}-{s['max_rate']:<6,.0f}"
              f"{s['median_rate'] / threads:>11,.0f}{ratio:>8}{s['median_update_seconds'] * 1e3:>10.0f}"
              f"{s['first_update_seconds']:>13.1f}{'-' if diff is None else f'{diff:.1e}':>16}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
        Path(args.result).write_text(json.dumps(run_child(args)))
        return 0
    started = time.perf_counter()
    info = machine_info(None)
    print(describe(info))
    print("NOTE: a shared machine; variants are interleaved round by round and medians over rounds are quoted "
          f"({args.rounds} rounds of {args.updates} updates per variant after {args.warmup} untimed).")
    results = {}
    variants = {"bf16": args.bf16, "fp32": args.fp32}
    for threads in [int(x) for x in args.threads.split(",") if x]:
        print(f"running: one process, {threads} thread(s) ...", file=sys.stderr, flush=True)
        results[f"{threads} thread(s)"] = run_children(args, threads, 1, variants)[0]
    if args.concurrent > 0:
        pair = {amp: [v for v in ("today", "improved") if v in names] for amp, names in variants.items()}
        print(f"running: {args.concurrent} one-thread processes at once ...", file=sys.stderr, flush=True)
        results[f"{args.concurrent} x 1 thread"] = run_children(args, 1, args.concurrent, pair)
    first = next(iter(results.values()))
    first = first[0] if isinstance(first, list) else first
    print(f"model: {args.experiment} on profile {args.profile} ({first['backbone']}), batch {first['batch_size']}, "
          f"accumulation {first['accumulation']}; transformers' default attention here: {first['attention_default']}")
    print()
    report(results, args)
    info.update(loadavg_end=loadavg(), wall_seconds=time.perf_counter() - started)
    print(f"load average at the end {info['loadavg_end'][0]:.2f}; wall time {info['wall_seconds']:.0f}s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "args": portable_args(args), "results": results}, indent=1))
        print(f"wrote {args.json}")
    return 0


def report(results: dict, args) -> None:
    for title, result in results.items():
        if isinstance(result, list):
            for k, r in enumerate(result):
                print_table(f"{title}: process {k + 1} of {len(result)}", r)
            labels = result[0]["stats"]
            print(f"  aggregate of the {len(result)} processes (sum of their medians): " + "; ".join(
                f"{label} {sum(r['stats'][label]['median_rate'] for r in result):,.0f} tok/s" for label in labels))
        else:
            print_table(f"{title}, one process:", result)
            if result.get("profile"):
                prof = result["profile"]
                print(f"  where the time of {prof['updates']} updates of {prof['variant']} goes (self time): " + ", ".join(
                    f"{op['name']} {op['share']:.1%}" for op in prof["ops"]))
        print()
    print("useful tok/s = non-pad tokens per second of the whole update (collate, forward, backward, clipping, "
          "optimiser), median over rounds; per thread = that / torch threads; x today = median over rounds of the "
          "ratio to 'today' of the same precision in the same round; max |loss diff| = largest difference of a "
          "micro-batch loss from today's (same batches, same dropout seed).")
    single = results.get("1 thread(s)")
    double = results.get("2 thread(s)")
    if single and double:
        for label in double["stats"]:
            if label in single["stats"]:
                print(f"  {label}: 2 threads / 1 thread = "
                      f"{double['stats'][label]['median_rate'] / single['stats'][label]['median_rate']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
