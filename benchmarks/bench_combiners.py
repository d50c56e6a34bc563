#!/usr/bin/env python
"""Combiner benchmark: what one PCGrad / GradVac / GradVac + SMART update costs next to a plain sum.

The study's own update step, ``mtlib.training.loop.Stepper.step``, is timed on the ``cpu`` profile
(the packaged all-MiniLM-L6-v2, ``minilm``; bf16 autocast; AdamW; grad clipping) with the
"one batch of every task per update" configs of params.yaml:

  sum            ``hidden_gradvac`` with ``train.combiner=sum``: update ``each_task``, the three
                 task losses back-propagated into the same ``.grad`` (no per-task gradients);
  pcgrad         ``hidden_pcgrad``: per-task gradient matrix (T x P), PCGrad, written back;
  gradvac        ``hidden_gradvac``: the same with GradVac (its phi_hat state);
  gradvac_smart  ``hidden_gradvac_smart``: GradVac + SMART's adversarial and Bregman terms.

All four share the model (1-hidden-layer MLP heads), batch sizes, learning rate and amp;
the script checks that their resolved configs differ in nothing but ``train.combiner`` and
``train.smart`` (and the experiment name).

Identical work in every variant
  * The parent process draws ONE training batch per task from the real data
    (``mtlib.training.loop.prepare_data`` with the profile's subsampling, then the first batch of
    each task's bucketed ``BatchStream`` seeded by ``train.seed``: sst 32, para 16, sts 32
    rows), saves the three to a temporary file, and every variant's process loads that
    file: the Stepper's streams return the SAME three batches on every update.
  * Every variant builds the model with ``build_model(cfg)`` (pretrained encoder, heads
    seeded by ``train.seed``) and reseeds torch before every update from (seed, update), so
    update k draws the same dropout masks in every variant and the first update of sum /
    pcgrad / gradvac must report the same per-batch losses (checked). The parent also
    compares a digest of the batches, a checksum of the initial weights and an eval-mode
    loss of each batch.

Measurement
  * Step time: wall-clock (perf_counter) of ``stepper.step(update, 1)`` — plan, forward,
    backward (and SMART's extra passes), pointing ``.grad`` at the matrix, combiner,
    clipping, AdamW — per update; ``--warmup`` updates untimed, then ``--steps`` timed;
    the MEDIAN is reported (and min/max). Ratios are medians over the sum's median.
  * Combine alone: the combiner's ``combine`` call (the O(T^2 P) algebra on the (T, P)
    matrix) timed by wrapping the Stepper's combiner object; "copies" is the time in
    ``point_grads`` (wrapped in ``mtlib.training.loop``'s namespace), which makes the ``.grad`` views
    of a matrix row before each backward and of the result after combining. The matrix's
    zeroing is in neither. The sum variant has neither.
  * Memory: each variant runs in a fresh subprocess (this script re-invokes itself with
    ``--variant``) and reports ``ru_maxrss`` (the process's peak RSS) and the increase of
    that peak over the RSS just before the Stepper was built (model, optimizer and batches
    loaded; AdamW's state, GradVac's phi_hat, SMART's teacher copy, the gradient matrix and
    the activations all fall in the increase).
  * ``--interleave`` times all variants in ONE process instead, their updates alternated
    (update k of every variant, in an order rotated each update), so a busy machine's load
    falls on all of them alike; memory then comes from a short fresh process per variant
    (1 warm-up + 1 update: the peak comes with the first update, AdamW's state included).
  * ``--rounds N`` repeats the timing N times (variant by variant, or interleaved) and keeps
    each variant's best round (lowest median).
  * On a 2-core machine that is running something else, 2 torch threads stall whenever the
    other core is taken (OpenMP waits for its slowest thread): step times then jump by up
    to 10x from one update to the next. ``--threads 1 --interleave`` is the setting for a
    shared machine; the default (2 threads, one process per variant) is for an idle one.

Usage
  python -m benchmarks.bench_combiners                        # defaults: ~3-5 min on 2 idle cores
  python -m benchmarks.bench_combiners --steps 3 --warmup 1   # a quick look
  python -m benchmarks.bench_combiners --threads 1 --interleave  # a busy machine: ~4 min
  python -m benchmarks.bench_combiners --variants sum,pcgrad --rounds 2 --json out.json
  python -m benchmarks.bench_combiners --variant pcgrad --batches FILE   # internal: one variant
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.machine import current_rss_mib, loadavg, machine_info, maxrss_mib

TASK_ORDER = ("sst", "para", "sts")
VARIANTS = {  # name: (label, experiment, overrides)
    "sum": ("sum (each_task)", "hidden_gradvac", ["train.combiner=sum"]),
    "pcgrad": ("PCGrad", "hidden_pcgrad", []),
    "gradvac": ("GradVac", "hidden_gradvac", []),
    "gradvac_smart": ("GradVac + SMART", "hidden_gradvac_smart", []),
}
SURGERY_TARGET = 1.15          # the target: PCGrad and GradVac <= 1.15x the summed step
SMART_EXPECTED = (2.5, 3.0)    # mtlib/training/smart.py's estimate for SMART's cost


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="timed updates per variant (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed updates before them (default 2)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the variants this many times in turn, keep each one's best round (default 1)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--amp", choices=("config", "none", "bf16"), default="config",
                   help="autocast (default: the profile's, bf16 on cpu)")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--data", default=None, help="data folder (default: $MTLIB_DATA, else ../shared/data/cs224n)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write all results to PATH")
    p.add_argument("--interleave", action="store_true",
                   help="time all variants in ONE process, their updates alternated (fairer on a busy machine); "
                        "memory still comes from a short fresh process per variant")
    p.add_argument("--variant", choices=[*sorted(VARIANTS), "interleaved"], default=None,
                   help="internal: run ONE variant (or all, interleaved) here")
    p.add_argument("--batches", default=None, help="internal: the batch file the parent wrote")
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.threads < 1 or args.rounds < 1:
        p.error("--steps >= 1, --warmup >= 0, --threads >= 1, --rounds >= 1")
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {','.join(VARIANTS)}")
    if args.variant and not args.batches:
        p.error("--variant needs --batches (the parent process writes that file)")
    return args


# --------------------------------------------------------------------------- configs and batches
def variant_config(args, name: str):
    from mtlib.config import load_config

    _, experiment, overrides = VARIANTS[name]
    overrides = [f"data.cache_dir={ROOT / 'data' / 'cache'}", *overrides]  # the project's cache, whatever the cwd
    if args.amp != "config":
        overrides.append(f"train.amp={args.amp}")
    return load_config(args.params, experiment, args.profile, overrides=overrides)


def config_differences(configs: dict) -> dict[str, list]:
    """Fields (dotted) whose value differs between the variants' configs, experiment aside."""
    def flatten(tree, prefix=""):
        out = {}
        for k, v in tree.items():
            if isinstance(v, dict) and k not in ("combiner_args", "smart_args", "head_overrides", "pal_args"):
                out.update(flatten(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    flat = {name: flatten(cfg.to_dict()) for name, cfg in configs.items()}
    keys = sorted(set().union(*flat.values()))
    return {k: [flat[n].get(k) for n in flat] for k in keys
            if k != "experiment" and len({json.dumps(flat[n].get(k), default=str) for n in flat}) > 1}


def write_batches(args, path: Path) -> dict:
    """One real training batch per task (first batch of the seeded bucketed stream) -> ``path``."""
    import torch

    from mtlib.model.backbone import load_tokenizer
    from mtlib.data.files import find_data_dir
    from mtlib.data.encode import BatchStream
    from mtlib.data.prepare import prepare_data

    cfg = variant_config(args, "sum")
    t = cfg.train
    data_dir = find_data_dir(args.data or cfg.data.dir, root=ROOT)
    tokenizer = load_tokenizer(cfg.backbone)
    train = prepare_data(cfg, tokenizer, data_dir, splits=("train",))["train"]
    batches = {}
    for task in TASK_ORDER:
        b = BatchStream(train[task], t.batch_size[task], t.seed, tokenizer.pad_token_id, cfg.data.bucketing).next()
        batches[task] = {"ids": list(b.ids), "index": [int(i) for i in b.index], "labels": b.labels,
                         "inputs": b.inputs}
    sizes = {task: len(train[task]) for task in TASK_ORDER}
    torch.save({"batches": batches, "sizes": sizes, "data_dir": str(data_dir)}, path)
    return {"sizes": sizes, "data_dir": str(data_dir)}


def load_batches(path: str):
    import numpy as np
    import torch

    from mtlib.data.encode import Batch

    saved = torch.load(path, weights_only=True)
    batches = {task: Batch(task, b["ids"], b["inputs"], b["labels"], np.asarray(b["index"]))
               for task, b in saved["batches"].items()}
    return batches, saved["sizes"], saved["data_dir"]


def batch_digest(batches) -> str:
    h = hashlib.sha256()
    for task in TASK_ORDER:
        b = batches[task]
        h.update(task.encode())
        for part in b.inputs:
            for key in sorted(part):
                h.update(part[key].numpy().tobytes())
        h.update(b.labels.numpy().tobytes())
    return h.hexdigest()[:16]


class FixedStream:
    """What the Stepper's ``streams[task]`` must provide (``next()``), always the same batch."""

    def __init__(self, batch):
        self.batch = batch

    def next(self):
        return self.batch


# --------------------------------------------------------------------------- one variant
_TIMERS: dict | None = None  # the timers of the variant whose update is running (mtlib.training.loop's helpers are shared)


def _timed(key, fn, own: dict | None = None):
    def wrapper(*a, **kw):
        start = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            timers = own if own is not None else _TIMERS
            if timers is not None:
                timers[key] += time.perf_counter() - start
    return wrapper


def instrument_mtlib_train() -> None:
    """Time point_grads as the Stepper calls it (its name in mtlib.training.loop)."""
    import mtlib.training.loop as train_module

    train_module.point_grads = _timed("copies", train_module.point_grads)


class VariantRun:
    """One variant's model, optimizer and Stepper, built exactly as mtlib.training.loop.train builds
    them (tests/test_plans.py does the same), with streams that always return the saved
    batch of their task, and per-update records."""

    def __init__(self, args, name: str, batches: dict, sizes: dict):
        import torch

        from mtlib.training.precision import autocast
        from mtlib.model.multitask import build_model
        from mtlib.training.samplers import TaskSampler
        from mtlib.training.stepper import Stepper

        self.name, self.cfg = name, variant_config(args, name)
        t = self.cfg.train
        device = torch.device("cpu")
        self.model = build_model(self.cfg).to(device)
        self.checksum = float(sum(p.detach().double().sum() for p in self.model.parameters()))
        self.model.eval()
        with torch.no_grad(), autocast(t.amp, device):
            self.eval_losses = {task: float(self.model.loss(batches[task])) for task in t.tasks}
        self.model.train()  # as in training: dropout on
        optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                      lr=t.lr, weight_decay=t.weight_decay)
        scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
        self.rss_before = current_rss_mib()
        self.peak_before = maxrss_mib()
        streams = {task: FixedStream(batches[task]) for task in t.tasks}
        task_sizes = {task: sizes[task] for task in t.tasks}
        sampler = TaskSampler(t.sampler, task_sizes, t.epochs, t.seed)
        self.stepper = Stepper(self.cfg, self.model, optimizer, scaler, streams, sampler, task_sizes, device, t.amp)
        self.timers = {"combine": 0.0, "copies": 0.0}
        self.stepper.combiner.combine = _timed("combine", self.stepper.combiner.combine, self.timers)
        self.losses: list[float] = []
        original_loss = self.stepper.loss

        def recording_loss(batch):
            loss = original_loss(batch)
            self.losses.append(float(loss.detach()))
            return loss

        self.stepper.loss = recording_loss
        self.records: list[dict] = []

    def step(self, update: int, measured: bool) -> None:
        global _TIMERS
        import torch

        for key in self.timers:
            self.timers[key] = 0.0
        self.losses = []
        # dropout (and SMART's noise): the same draws for update k in every variant, whatever ran before
        torch.manual_seed(self.cfg.train.seed * 100_003 + update)
        _TIMERS = self.timers
        start = time.perf_counter()
        examples, tokens = self.stepper.step(update, 1)
        seconds = time.perf_counter() - start
        _TIMERS = None
        self.records.append({"update": update, "measured": measured, "seconds": seconds,
                             "combine_seconds": self.timers["combine"], "copies_seconds": self.timers["copies"],
                             "examples": examples, "real_tokens": tokens, "losses": self.losses})

    def summary(self, batches: dict, data_dir: str) -> dict:
        import torch

        cfg, t, model = self.cfg, self.cfg.train, self.model
        measured = [r for r in self.records if r["measured"]]
        times = [r["seconds"] for r in measured]
        surgery = t.combiner != "sum"
        examples = sum(len(batches[task]) for task in t.tasks)
        real_tokens = sum(batches[task].real_tokens() for task in t.tasks)
        return {
            "variant": self.name, "label": VARIANTS[self.name][0], "experiment": cfg.experiment,
            "profile": cfg.profile, "backbone": cfg.backbone.name, "update_rule": t.plan, "combiner": t.combiner,
            "combiner_args": t.combiner_args, "smart": t.smart, "amp": t.amp, "accumulation": t.accumulation,
            "lr": t.lr, "max_grad_norm": t.max_grad_norm, "granularity": t.granularity,
            "batch_size": {task: len(batches[task]) for task in t.tasks}, "tasks": list(t.tasks),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "attn_implementation": getattr(model.encoder.config, "_attn_implementation", None),
            "data_dir": data_dir, "batch_digest": batch_digest(batches), "param_checksum": self.checksum,
            "eval_losses": self.eval_losses, "shared_params": sum(p.numel() for p in self.stepper.shared),
            "total_params": sum(p.numel() for p in model.parameters()),
            "examples_per_update": examples, "real_tokens_per_update": real_tokens,
            "padded_tokens_per_update": sum(batches[task].padded_tokens() for task in t.tasks),
            "first_update_losses": self.records[0]["losses"],
            "losses_finite": all(x == x and abs(x) != float("inf") for r in self.records for x in r["losses"]),
            "step": {
                "warmup_updates": len(self.records) - len(measured), "measured_updates": len(measured),
                "median_seconds": statistics.median(times), "mean_seconds": statistics.fmean(times),
                "min_seconds": min(times), "max_seconds": max(times),
                "examples_per_second": examples * len(measured) / sum(times),
                "useful_tokens_per_second": real_tokens * len(measured) / sum(times),
            },
            "combine": {
                "median_seconds": statistics.median(r["combine_seconds"] for r in measured) if surgery else None,
                "copies_median_seconds": statistics.median(r["copies_seconds"] for r in measured) if surgery else None,
                "what": "combiner.combine(grads, ...) alone; copies = point_grads (the .grad views of the matrix rows and the result)",
            },
            "updates": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in self.records],
        }


def child_setup(args):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    instrument_mtlib_train()
    return load_batches(args.batches)


def run_variant(args) -> dict:
    """One variant in this process: time, and measure this process's peak RSS."""
    wall_start = time.perf_counter()
    batches, sizes, data_dir = child_setup(args)
    run = VariantRun(args, args.variant, batches, sizes)
    for update in range(args.warmup + args.steps):
        run.step(update, update >= args.warmup)
    peak_after = maxrss_mib()
    out = run.summary(batches, data_dir)
    out["timing"] = "alone in its own process"
    out["memory_mib"] = {"rss_before_stepper": run.rss_before, "peak_before_stepper": run.peak_before,
                         "peak": peak_after, "delta": None if run.rss_before is None else peak_after - run.rss_before}
    out["process_wall_seconds"] = time.perf_counter() - wall_start
    out["loadavg_end"] = loadavg()
    return out


def run_interleaved(args) -> dict:
    """Every variant in this process, their updates alternated (update k of each, in an order
    rotated every update), so that a busy machine's load falls on all of them alike."""
    wall_start = time.perf_counter()
    batches, sizes, data_dir = child_setup(args)
    names = args.variants.split(",")
    runs = [VariantRun(args, name, batches, sizes) for name in names]
    for update in range(args.warmup + args.steps):
        for k in range(len(runs)):
            runs[(update + k) % len(runs)].step(update, update >= args.warmup)
    out = {}
    for run in runs:
        out[run.name] = run.summary(batches, data_dir)
        out[run.name]["timing"] = "interleaved with the other variants in one process"
    return {"variants": out, "process_wall_seconds": time.perf_counter() - wall_start, "loadavg_end": loadavg()}


# --------------------------------------------------------------------------- driver
def run_child(args, variant: str, batches_path: Path, tmp: Path, steps: int | None = None,
              warmup: int | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false")
    result = tmp / f"{variant}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", "--variant", variant, "--batches", str(batches_path),
           "--result", str(result), "--steps", str(args.steps if steps is None else steps),
           "--warmup", str(args.warmup if warmup is None else warmup), "--variants", args.variants,
           "--threads", str(args.threads), "--amp", args.amp, "--params", args.params, "--profile", args.profile]
    proc = subprocess.run(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0 or not result.exists():
        sys.stderr.write(proc.stdout)
        raise SystemExit(f"variant {variant} failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads(result.read_text())


def fmt(x, digits=1, suffix=""):
    return "-" if x is None else f"{x:,.{digits}f}{suffix}"


def ratio(x, base):
    return None if x is None or not base else x / base


def report(info: dict, results: dict, rounds: dict, diffs: dict) -> dict:
    first = next(iter(results.values()))
    print(f"CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs; flags: {', '.join(info['cpu_flags']) or '-'})")
    print(f"torch {info['torch']}, {info['threads']} threads (torch.set_num_threads and OMP_NUM_THREADS="
          f"{info['threads']} in every child process); python {info['python']}; {info['platform']}")
    la0, la1 = info["loadavg_start"], info["loadavg_end"]
    print(f"load average at start {fmt(la0 and la0[0], 2)}, at end {fmt(la1 and la1[0], 2)}"
          + ("  (busy machine: absolute times are inflated, ratios less so)" if la0 and la0[0] > 0.5 else ""))
    print(f"model: profile {first['profile']}, backbone {first['backbone']} (attention {first['attn_implementation']}), "
          f"1-hidden-layer MLP heads; {first['shared_params']:,} shared (encoder) parameters of "
          f"{first['total_params']:,}; amp {first['amp']}, AdamW lr {first['lr']}, clip {first['max_grad_norm']}, "
          f"granularity {first['granularity']}")
    print(f"one update = one batch of each task {first['batch_size']} = {first['examples_per_update']} examples, "
          f"{first['real_tokens_per_update']} useful / {first['padded_tokens_per_update']} padded tokens; "
          f"the SAME three real batches (data {first['data_dir']}) in every update of every variant")
    print(f"timing: {first['step']['warmup_updates']} warm-up + {first['step']['measured_updates']} measured updates "
          f"of mtlib.training.loop.Stepper.step per variant, "
          + ("all variants in one process, updates alternated (rotating order); memory from a fresh process per "
             "variant (1 warm-up + 1 update)" if info["interleave"] else "each variant alone in a fresh process")
          + (f"; best of {info['rounds']} rounds" if info["rounds"] > 1 else ""))
    print("config differences between the variants (experiment aside): "
          + ("; ".join(f"{k} {v}" for k, v in diffs.items()) or "none"))

    same = {k: {json.dumps(r[k], sort_keys=True) for r in results.values()}
            for k in ("batch_digest", "param_checksum", "eval_losses")}
    plain = [r for r in results.values() if not r["smart"]]
    same_first = len({json.dumps([round(x, 6) for x in r["first_update_losses"]]) for r in plain}) <= 1
    ok = all(len(v) == 1 for v in same.values()) and same_first
    print(f"identical work: {'yes' if ok else 'NO'} (batches {'/'.join(sorted(same['batch_digest']))}, "
          f"initial-weight checksum {'/'.join(sorted(same['param_checksum']))}, eval-mode losses "
          f"{'same' if len(same['eval_losses']) == 1 else 'DIFFER'}, first-update losses of the non-SMART variants "
          f"{'same' if same_first else 'DIFFER'}: "
          + ", ".join(f"{x:.4f}" for x in (plain[0]["first_update_losses"] if plain else [])) + ")")
    print(f"losses finite in every update: {'yes' if all(r['losses_finite'] for r in results.values()) else 'NO'}")
    print()

    base = results.get("sum")
    head = (f"{'variant':18}{'median s':>9}{'x sum':>7}{'min-max s':>13}{'ex/s':>7}{'combine ms':>11}"
            f"{'% step':>7}{'copies ms':>10}{'peak RSS MiB':>13}{'x sum':>7}{'delta MiB':>10}{'x sum':>7}")
    print(head)
    print("-" * len(head))
    ratios = {}
    for v, r in results.items():
        st, cb, mem = r["step"], r["combine"], r["memory_mib"]
        rr = {
            "median_step": ratio(st["median_seconds"], base and base["step"]["median_seconds"]),
            "peak_rss": ratio(mem["peak"], base and base["memory_mib"]["peak"]),
            "delta_rss": ratio(mem["delta"], base and base["memory_mib"]["delta"]),
            "combine_share_of_step": ratio(cb["median_seconds"], st["median_seconds"]),
        }
        ratios[v] = rr
        share = rr["combine_share_of_step"]
        print(f"{r['label']:18}{st['median_seconds']:>9.3f}{fmt(rr['median_step'], 2):>7}"
              f"{st['min_seconds']:>6.2f}-{st['max_seconds']:<6.2f}{st['examples_per_second']:>7.1f}"
              f"{fmt(cb['median_seconds'] and cb['median_seconds'] * 1e3, 1):>11}{fmt(share and share * 100, 1):>7}"
              f"{fmt(cb['copies_median_seconds'] and cb['copies_median_seconds'] * 1e3, 1):>10}"
              f"{fmt(mem['peak'], 0):>13}{fmt(rr['peak_rss'], 2):>7}{fmt(mem['delta'], 0):>10}"
              f"{fmt(rr['delta_rss'], 2):>7}")
    print()
    print("median s = median wall time of one Stepper.step (forward, backward, surgery, clip, AdamW); x sum = ratio "
          "to the sum variant's median, same run; ex/s = examples / mean step time.")
    print("combine ms = the combiner's combine() alone (O(T^2 P) algebra on the T x P matrix), median per update; "
          "copies ms = point_grads: pointing .grad at the matrix rows and at the result (no data is copied).")
    print("peak RSS = ru_maxrss of the variant's own process; delta = that peak minus the RSS just before the "
          "Stepper was built (model, AdamW, batches loaded).")
    if base:
        verdicts = []
        for v in ("pcgrad", "gradvac"):
            if v in ratios and ratios[v]["median_step"] is not None:
                x = ratios[v]["median_step"]
                verdicts.append(f"{results[v]['label']} {x:.2f}x sum (target <= {SURGERY_TARGET:.2f}x: "
                                f"{'met' if x <= SURGERY_TARGET else 'NOT met'})")
        if "gradvac_smart" in ratios and ratios["gradvac_smart"]["median_step"] is not None:
            x = ratios["gradvac_smart"]["median_step"]
            lo, hi = SMART_EXPECTED
            vs_gradvac = ratio(results["gradvac_smart"]["step"]["median_seconds"],
                               results["gradvac"]["step"]["median_seconds"] if "gradvac" in results else None)
            verdicts.append(f"GradVac + SMART {x:.2f}x sum, {vs_gradvac:.2f}x GradVac alone" if vs_gradvac
                            else f"GradVac + SMART {x:.2f}x sum")
            if vs_gradvac:  # SMART's own cost on a plain step: swap GradVac's overhead out again
                alone = x - ratios["gradvac"]["median_step"] + 1.0
                verdicts.append(f"SMART on a summed step ~ (smart - gradvac + sum) / sum = {alone:.2f}x "
                                f"(expected ~{lo}-{hi}x: {'in range' if lo * 0.9 <= alone <= hi * 1.1 else 'outside'})")
        if verdicts:
            print("verdict: " + "; ".join(verdicts))
    if info["rounds"] > 1:
        print("per-round medians (s): " + "; ".join(
            f"{v}: " + ", ".join(f"{x['step']['median_seconds']:.3f}" for x in rs) for v, rs in rounds.items()))
    la = info["loadavg_start"]
    if info["threads"] > 1 and la and info["logical_cpus"] and la[0] > 0.5:
        print(f"hint: the load average was {la[0]:.2f} with {info['threads']} threads on {info['logical_cpus']} CPUs; "
              f"OpenMP threads stall whenever another process holds a core, so step times jump (see min-max). "
              f"--threads 1 --interleave gives steadier ratios on a shared machine.")
    if not ok:
        print("WARNING: the variants did not process identical work; the ratios are not comparable.")
    return ratios


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.variant:
        result = run_interleaved(args) if args.variant == "interleaved" else run_variant(args)
        text = json.dumps(result, indent=2)
        if args.result:
            Path(args.result).write_text(text)
        else:
            print(text)
        return 0

    import torch

    variants = args.variants.split(",")
    info = machine_info(args.threads, rounds=args.rounds, interleave=args.interleave)
    started = time.perf_counter()
    diffs = config_differences({v: variant_config(args, v) for v in variants})
    allowed = {"train.combiner", "train.smart"}
    if set(diffs) - allowed:
        print(f"WARNING: the variants' configs also differ in {sorted(set(diffs) - allowed)}", file=sys.stderr)
    rounds: dict[str, list] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        batches_path = tmp / "batches.pt"
        print("drawing one real batch per task ...", file=sys.stderr, flush=True)
        write_batches(args, batches_path)
        memory = {}
        if args.interleave:  # memory: a short run of each variant alone (the peak comes with the first updates)
            for v in variants:
                print(f"memory of {VARIANTS[v][0]} (fresh process, 1 warm-up + 1 update) ...", file=sys.stderr,
                      flush=True)
                r = run_child(args, v, batches_path, tmp, steps=1, warmup=1)
                memory[v] = r["memory_mib"]
                print(f"  peak RSS {r['memory_mib']['peak']:.0f} MiB", file=sys.stderr, flush=True)
        for k in range(args.rounds):
            suffix = f" (round {k + 1})" if args.rounds > 1 else ""
            if args.interleave:
                print(f"timing all variants interleaved in one process{suffix} ...", file=sys.stderr, flush=True)
                out = run_child(args, "interleaved", batches_path, tmp)
                for v in variants:
                    rounds[v].append({**out["variants"][v], "memory_mib": memory[v]})
                print(f"  done in {out['process_wall_seconds']:.0f}s: median steps "
                      + ", ".join(f"{v} {out['variants'][v]['step']['median_seconds']:.3f}s" for v in variants),
                      file=sys.stderr, flush=True)
                continue
            for v in variants:
                print(f"running {VARIANTS[v][0]}{suffix} ...", file=sys.stderr, flush=True)
                r = run_child(args, v, batches_path, tmp)
                rounds[v].append(r)
                print(f"  done in {r['process_wall_seconds']:.0f}s: median step {r['step']['median_seconds']:.3f}s, "
                      f"peak RSS {r['memory_mib']['peak']:.0f} MiB", file=sys.stderr, flush=True)
    results = {v: min(rs, key=lambda r: r["step"]["median_seconds"]) for v, rs in rounds.items()}
    for v, rs in rounds.items():  # memory: the worst round's (a peak does not get better by retrying)
        results[v] = copy.deepcopy(results[v])
        results[v]["memory_mib"] = max((r["memory_mib"] for r in rs), key=lambda m: m["peak"])
    info["loadavg_end"] = loadavg()
    info["total_wall_seconds"] = time.perf_counter() - started
    ratios = report(info, results, rounds, diffs)
    print(f"total wall time {info['total_wall_seconds']:.0f}s")
    if args.json:
        out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k not in ("variant", "batches", "result")},
               "config_differences": diffs, "variants": results,
               "rounds": {v: [r["step"] for r in rs] for v, rs in rounds.items()}, "ratios_vs_sum": ratios}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
