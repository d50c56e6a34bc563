#!/usr/bin/env python
"""GPU check: how long the paper profile's whole study takes on one GPU, three ways, measured in one run.

The paper profile (bert-base, the report's batch sizes sst 32 / para 16 / sts 32, 4
micro-batches per update) was measured on an H200 at 1.2% MFU with the GPU busy ~11% of
the time: the step is bound by launching ~5,000 small kernels per update, not by arithmetic.
This check measures, on synthetic batches shaped like the real data, the aggregate training
throughput of

  (a) the study's step as it is (``mtlib.training.stepper.Stepper``, AdamW as mtlib builds
      it, the precision ``train.amp: auto`` resolves to), for each kind of update the
      study's experiments use: ``base`` (4 sampled micro-batches, summed: most rows),
      ``surgery`` (one batch per task, per-task gradients combined by PCGrad; GradVac and
      Gradient Compromise do the same work) and ``smart`` (GradVac + SMART);
  (b) the same base step with the encoder's layers compiled by
      ``torch.compile(mode="reduce-overhead")`` (inductor + CUDA graphs, one graph per batch
      shape), lengths padded to a multiple of ``--multiple`` so that there are few shapes;
      in a subprocess with a time limit, as compiling can fail or take long;
  (c) N = 2, 4, 8 processes sharing the GPU (``--processes``), each running the base step
      on its own model and batches (started with multiprocessing's spawn), all timed over
      the same window: what running several runs at once (mtlib.training.sweep, or DVC
      queue workers on one GPU) gives;

plus the forward-only throughput of evaluation, and prints the estimate of the full study
(every experiment of params.yaml's pipeline, ``--seeds`` seeds) under (a), (b) and the
best (c), with its arithmetic.

The model is ``BertModel(BertConfig())`` with random weights (bert-base's shape; the GPU
machine has no weights, data or network) in ``mtlib.model.multitask.MultitaskModel`` with the
experiment's heads; batches have lengths drawn from the real training data's length
quantiles (``LENGTH_QUANTILES``), bucketed as ``BatchStream`` does. Before timing, every
synthetic batch shape goes once through forward and backward (first-seen shapes cost
cuBLAS heuristics and allocator growth: 0.5-10 s each on an H200).

Everything here also runs on a CPU with ``--tiny`` (a 2-layer, 64-wide BERT), which is how
tests/test_gpu_check.py exercises it in CI; there ``--compile-backend eager`` traces the
same compiled path without inductor's code generation.

Usage
  python -m benchmarks.gpu_check --json gpu_check.json            # on the GPU machine: under 8 minutes on an H200
  python -m benchmarks.gpu_check --device cpu --tiny --processes 2 --window 2 --compile-backend eager
  python -m benchmarks.gpu_check --no-compile --processes 2,4 --window 20
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import queue
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import portable_args
from mtlib.config import load_config, read_params
from mtlib.data.encode import Batch
from mtlib.model.heads import build_head
from mtlib.model.multitask import MultitaskModel
from mtlib.tasks import TASK_NAMES, TASKS
from mtlib.training.precision import autocast, grad_scaler, resolve_amp
from mtlib.training.samplers import TaskSampler
from mtlib.training.stepper import Stepper, adamw
from mtlib.settings import plan_settings

ROOT = Path(__file__).resolve().parents[1]
TASK_ORDER = ("sst", "para", "sts")
# Token counts (special tokens included, bert-base-uncased vocabulary) of the CS224N training
# sets as the study tokenises them (pairs in sentence mode), at these percentiles. Measured
# from the course data: sst 8,544 rows (mean 25.0), quora 42,149 (mean 29.3), sts 6,040
# (mean 28.4). Bucketed batches of them are ~96% real tokens.
LENGTH_PERCENTILES = (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95,
                      97.5, 99, 99.5, 100)
LENGTH_QUANTILES = {
    "sst": (4, 9, 11, 13, 15, 16, 18, 19, 21, 22, 24, 25, 27, 29, 30, 33, 35, 37, 41, 46, 50, 55, 58, 80),
    "para": (6, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 31, 33, 35, 37, 40, 44, 49, 54, 59, 62, 123),
    "sts": (9, 15, 16, 17, 18, 19, 19, 20, 21, 22, 23, 24, 26, 27, 30, 33, 38, 43, 50, 60, 67, 73, 77, 125),
}
TRAIN_SIZES = {"sst": 8544, "para": 42149, "sts": 6040}  # the full training sets (the paper profile's)
DEV_SIZES = {"sst": 1101, "para": 40429, "sts": 863}     # the full dev sets, scored after every epoch
FIRST_SEGMENT_FRACTION = 0.52                            # pairs: share of tokens before the middle [SEP]
CLS_ID, SEP_ID, PAD_ID, FIRST_WORD_ID = 101, 102, 0, 1996
BUCKET_FACTOR = 50                                       # mtlib.data.encode.epoch_batches' default
CLASSES = {  # kind of update: (experiment whose step is timed, what it stands for)
    "base": ("base_model", "sampled micro-batches, summed (every experiment not below)"),
    "surgery": ("hidden_pcgrad", "one batch per task, per-task gradients combined (PCGrad, GradVac, compromise)"),
    "smart": ("hidden_gradvac_smart", "GradVac + SMART"),
}
# Dense (no sparsity) tensor-core peaks, TFLOPS; bf16 and fp16 are the same on these parts.
PEAK_TFLOPS = (("h200", None, 989.0), ("h100", "pcie", 756.0), ("h100", "nvl", 835.0), ("h100", None, 989.0),
               ("gh200", None, 989.0), ("a100", None, 312.0))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--tiny", action="store_true", help="2-layer, 64-wide BERT, few steps: the code path in seconds")
    p.add_argument("--classes", default=",".join(CLASSES), help=f"kinds of update timed in (a): {','.join(CLASSES)}")
    p.add_argument("--steps", type=int, default=None, help="timed updates per kind (default 30; --tiny 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed updates before them (default 5; --tiny 1)")
    p.add_argument("--pool", type=int, default=None, help="synthetic batches per task, cycled (default 16; --tiny 4)")
    p.add_argument("--processes", default="2,4,8", help="(c): process counts sharing the device ('' skips)")
    p.add_argument("--window", type=float, default=None, help="(c): seconds each count is timed (default 15; --tiny 1)")
    p.add_argument("--no-compile", action="store_true", help="skip (b)")
    p.add_argument("--compile-backend", default="inductor", help="(b): torch.compile backend (eager: trace only)")
    p.add_argument("--compile-timeout", type=float, default=200.0, help="(b): seconds before it is given up")
    p.add_argument("--multiple", type=int, default=16, help="(b): lengths padded to a multiple of this")
    p.add_argument("--seeds", type=int, default=3, help="seeds per experiment in the study estimate")
    p.add_argument("--amp", default="auto", help="train.amp for every step (default: the paper profile's auto)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16/fp16 TFLOPS for MFU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of this process")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--profile", default="paper")
    p.add_argument("--json", default=None, metavar="PATH", help="also write all results to PATH")
    args = p.parse_args(argv)
    defaults = {"steps": (3, 30), "warmup": (1, 5), "pool": (4, 16), "window": (1.0, 15.0)}
    for name, (tiny, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    args.classes = [c for c in args.classes.split(",") if c]
    args.processes = [int(n) for n in args.processes.split(",") if n]
    bad = [c for c in args.classes if c not in CLASSES]
    if bad or "base" not in args.classes:
        p.error(f"--classes: needs base, and only {','.join(CLASSES)}")
    if args.steps < 1 or args.warmup < 0 or args.pool < 1 or args.window <= 0 or any(n < 1 for n in args.processes):
        p.error("--steps >= 1, --warmup >= 0, --pool >= 1, --window > 0, --processes >= 1")
    return args


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    return torch.device(name)


# --------------------------------------------------------------------------- model and batches
def bert_config(tiny: bool):
    from transformers import BertConfig

    if tiny:
        return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    return BertConfig()  # bert-base: 12 x 768, 12 heads, 3072 intermediate, vocabulary 30,522


def class_config(args, kind: str):
    """The paper profile's config of the experiment standing for ``kind``, amp resolved."""
    cfg = load_config(args.params, CLASSES[kind][0], args.profile, overrides=[f"train.amp={args.amp}"])
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=resolve_amp(args.amp, args.device)))


def build_model(cfg, tiny: bool, seed: int) -> MultitaskModel:
    """Random bert-base-shaped encoder (no pooler) + the config's heads, seeded."""
    from transformers import BertModel

    torch.manual_seed(seed)
    encoder = BertModel(bert_config(tiny), add_pooling_layer=False)
    torch.manual_seed(seed)
    heads = {task: build_head(cfg.methods.heads[task], encoder.config.hidden_size) for task in TASK_NAMES}
    return MultitaskModel(encoder, heads)


def draw_lengths(task: str, n: int, rng: np.random.Generator, max_length: int) -> np.ndarray:
    """Inverse-CDF draws from the task's length quantiles (linear between them)."""
    u = rng.uniform(0.0, 100.0, size=n)
    lengths = np.rint(np.interp(u, LENGTH_PERCENTILES, LENGTH_QUANTILES[task])).astype(int)
    return np.clip(lengths, 5 if TASKS[task].is_pair else 3, max_length)


def make_batch(task: str, lengths: np.ndarray, rng: np.random.Generator, vocab: int, start: int,
               multiple: int = 1) -> Batch:
    """[CLS] words [SEP] (pairs: [CLS] w [SEP] w [SEP], segment ids 0 then 1), padded at the end
    to the longest row rounded up to ``multiple``."""
    rows, width = len(lengths), -(-int(lengths.max()) // multiple) * multiple
    ids = torch.full((rows, width), PAD_ID, dtype=torch.long)
    types_ = torch.zeros((rows, width), dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.long)
    for r, n in enumerate(lengths.tolist()):
        words = torch.from_numpy(rng.integers(FIRST_WORD_ID, vocab, size=n)).long()
        words[0], words[n - 1] = CLS_ID, SEP_ID
        if TASKS[task].is_pair:
            cut = min(max(2, int(round(n * FIRST_SEGMENT_FRACTION))), n - 2)
            words[cut - 1] = SEP_ID
            types_[r, cut:n] = 1
        ids[r, :n], mask[r, :n] = words, 1
    if task == "sst":
        labels = torch.from_numpy(rng.integers(0, 5, size=rows)).long()
    elif task == "para":
        labels = torch.from_numpy(rng.integers(0, 2, size=rows)).float()
    else:
        labels = torch.from_numpy(rng.uniform(0.0, 5.0, size=rows)).float()
    index = np.arange(start, start + rows)
    inputs = [{"input_ids": ids, "attention_mask": mask, "token_type_ids": types_}]
    return Batch(task, [f"{task}-{i}" for i in index], inputs, labels, index)


def make_pool(task: str, batch_size: int, batches: int, seed: int, vocab: int, max_length: int,
              multiple: int = 1) -> list[Batch]:
    """``batches`` batches bucketed as BatchStream does: chunks of 50 batches sorted by length."""
    rng = np.random.default_rng([seed, TASK_ORDER.index(task)])
    pool, start = [], 0
    while len(pool) < batches:
        chunk = np.sort(draw_lengths(task, batch_size * BUCKET_FACTOR, rng, max_length))
        cut = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        for k in rng.permutation(len(cut))[: batches - len(pool)]:
            pool.append(make_batch(task, cut[k], rng, vocab, start, multiple))
            start += len(cut[k])
    return pool


def make_pools(cfg, size: int, vocab: int, multiple: int = 1) -> dict[str, list[Batch]]:
    t = cfg.train
    return {task: make_pool(task, t.batch_size[task], size, t.seed, vocab, cfg.backbone.max_length, multiple)
            for task in TASK_ORDER}


class CyclingStream:
    """``next()`` as BatchStream's: the pool's batches in order, round and round (CPU tensors)."""

    def __init__(self, pool: list):
        self.pool, self.position = pool, 0

    def next(self):
        batch = self.pool[self.position % len(self.pool)]
        self.position += 1
        return batch


class RecordingStepper(Stepper):
    """mtlib.training.stepper.Stepper, recording every task loss (detached, left on the device)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses: list[torch.Tensor] = []

    def loss(self, batch) -> torch.Tensor:
        value = super().loss(batch)
        self.losses.append(value.detach())
        return value


def new_stepper(cfg, model, initial: dict | None, pools: dict, device: torch.device) -> RecordingStepper:
    """The Stepper as mtlib.training.loop builds it (fused AdamW, GradScaler only for fp16),
    from the initial weights (None: the model's own), with streams over the synthetic pools."""
    t = cfg.train
    if initial is not None:
        model.load_state_dict(initial)
    model.train()
    sizes = {task: TRAIN_SIZES[task] for task in t.tasks}
    return RecordingStepper(cfg, model, adamw(model, t), grad_scaler(t.amp, device),
                            {task: CyclingStream(pools[task]) for task in t.tasks},
                            TaskSampler(t.sampler, sizes, t.epochs, t.seed), sizes, device, t.amp)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_shapes(model, pools: dict, amp: str, device: torch.device) -> float:
    """Every pool batch once through forward + backward (no update); returns the seconds."""
    model.train()
    sync(device)
    start = time.perf_counter()
    for pool in pools.values():
        for batch in pool:
            with autocast(amp, device):
                loss = TASKS[batch.task].loss(model(batch.to(device)), batch.labels.to(device))
            loss.backward()
            model.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


# --------------------------------------------------------------------------- (a) the step as it is
def time_updates(stepper: Stepper, device: torch.device, warmup: int, steps: int) -> list[dict]:
    """``warmup`` + ``steps`` updates, each timed with the device synchronised on both sides."""
    records = []
    for update in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        examples, tokens = stepper.step(update, 1)
        sync(device)
        records.append({"seconds": time.perf_counter() - start, "examples": examples, "real_tokens": tokens,
                        "measured": update >= warmup})
    return records


def summarise(records: list[dict], micro_batches: int, n_flop: int, peak: float | None) -> dict:
    measured = [r for r in records if r["measured"]]
    seconds = sum(r["seconds"] for r in measured)
    tokens = sum(r["real_tokens"] for r in measured)
    tflops = 6 * n_flop * tokens / seconds / 1e12
    return {"measured_updates": len(measured), "seconds": seconds, "micro_batches_per_update": micro_batches,
            "median_update_seconds": statistics.median(r["seconds"] for r in measured),
            "seconds_per_micro_batch": seconds / (len(measured) * micro_batches),
            "examples_per_second": sum(r["examples"] for r in measured) / seconds,
            "useful_tokens_per_second": tokens / seconds, "model_tflops": tflops,
            "mfu": None if not peak else tflops / peak}


def non_embedding_parameters(model) -> int:
    """N in 6 N tokens: every weight but the embedding lookups (they cost no matmul)."""
    return sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.encoder.embeddings.parameters())


def measure_class(args, kind: str, device: torch.device, peak: float | None, profile_kernels: bool) -> dict:
    """(a) for one kind of update: warm the shapes, then time the Stepper."""
    cfg = class_config(args, kind)
    t = cfg.train
    model = build_model(cfg, args.tiny, t.seed).to(device)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pools = make_pools(cfg, args.pool, model.encoder.config.vocab_size)
    warm = warm_shapes(model, pools, t.amp, device)
    stepper = new_stepper(cfg, model, initial, pools, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(t.seed)
    records = time_updates(stepper, device, args.warmup, args.steps)
    result = summarise(records, plan_settings(t).batches, non_embedding_parameters(model), peak)
    losses = torch.stack(stepper.losses).float().cpu()
    result.update(kind=kind, experiment=cfg.experiment, update=t.plan, combiner=t.combiner, smart=t.smart,
                  amp=t.amp, shape_warmup_seconds=warm, losses_finite=bool(torch.isfinite(losses).all()),
                  peak_memory_mib=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None)
    if profile_kernels and device.type == "cuda":
        result["kernels"] = kernel_time(stepper, device)
    if kind == "base":
        result["eval"] = eval_rate(model, cfg, device, 256 if args.tiny else 2048)
    return result


def kernel_time(stepper: Stepper, device: torch.device, updates: int = 3) -> dict:
    """torch.profiler over ``updates`` steady updates: GPU kernel time / wall time, kernels per update."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            sync(device)
            start = time.perf_counter()
            for update in range(updates):
                stepper.step(10_000 + update, 1)
            sync(device)
            wall = time.perf_counter() - start
    except Exception as err:  # a diagnostic: report, do not fail the check
        return {"error": repr(err)}
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e6
    return {"updates": updates, "wall_seconds": wall, "kernel_seconds": busy, "gpu_busy_fraction": busy / wall,
            "kernels_per_update": len(kernels) / updates}


def eval_rate(model, cfg, device: torch.device, per_task: int) -> dict:
    """Forward-only examples/s as mtlib.training.evaluate scores dev: length-sorted batches of
    eval_batch_size, inference mode, one autocast context; per task and weighted by dev size."""
    vocab, size = model.encoder.config.vocab_size, cfg.train.eval_batch_size
    rng = np.random.default_rng(0)
    model.eval()
    rates = {}
    with torch.inference_mode(), autocast(cfg.train.amp, device):
        for task in TASK_ORDER:
            lengths = np.sort(draw_lengths(task, per_task, rng, cfg.backbone.max_length))
            batches = [make_batch(task, lengths[i:i + size], rng, vocab, i).to(device)
                       for i in range(0, per_task, size)]
            for batch in batches:  # first-seen shapes
                model(batch)
            sync(device)
            start = time.perf_counter()
            for batch in batches:
                model(batch)
            sync(device)
            rates[task] = per_task / (time.perf_counter() - start)
    model.train()
    total = sum(DEV_SIZES.values())
    return {"examples_per_second": {**rates, "dev_weighted": total / sum(DEV_SIZES[t] / rates[t] for t in rates)},
            "examples_per_task": per_task, "batch_size": size}


# --------------------------------------------------------------------------- (b) compiled, bucketed shapes
def compile_layers(model: MultitaskModel, backend: str) -> None:
    """Compile the encoder's layer stack (not the embeddings or the mask preparation, whose
    data-dependent checks would break the graph): with inductor, mode reduce-overhead (CUDA
    graphs, recorded once per batch shape); any other backend just traces. Shapes are left to
    torch's automatic dynamic: the first new shape recompiles with symbolic sizes, after
    which no shape compiles again (a graph per shape would take minutes of compiling)."""
    layers = model.encoder.encoder
    if backend == "inductor":
        model.encoder.encoder = torch.compile(layers, mode="reduce-overhead")
    else:
        model.encoder.encoder = torch.compile(layers, backend=backend)


def compiled_step(args) -> dict:
    """(b): the base step on batches padded to a multiple of ``args.multiple``, first as it is,
    then with the layers compiled; the same batches and initial weights for both."""
    device = args.device
    cfg = class_config(args, "base")
    t = cfg.train
    model = build_model(cfg, args.tiny, t.seed).to(device)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pools = make_pools(cfg, args.pool, model.encoder.config.vocab_size, args.multiple)
    shapes = sorted({tuple(b.inputs[0]["input_ids"].shape) for pool in pools.values() for b in pool})
    n_flop = non_embedding_parameters(model)
    out = {"multiple": args.multiple, "shapes": len(shapes), "backend": args.compile_backend}
    for name in ("padded, as it is", "padded, compiled"):
        model.load_state_dict(initial)
        if name.endswith("compiled"):
            compile_layers(model, args.compile_backend)
        warm = warm_shapes(model, pools, t.amp, device)  # for the compiled model: the compile and graph capture
        stepper = new_stepper(cfg, model, None, pools, device)
        torch.manual_seed(t.seed)
        result = summarise(time_updates(stepper, device, args.warmup, args.steps), plan_settings(t).batches, n_flop,
                           None)
        result.update(shape_warmup_seconds=warm, losses=[float(x) for x in torch.stack(stepper.losses).float().cpu()])
        if device.type == "cuda":
            result["kernels"] = kernel_time(stepper, device)
        out[name] = result
    out["speedup"] = (out["padded, as it is"]["median_update_seconds"]
                      / out["padded, compiled"]["median_update_seconds"])
    # Same weights, batches and seed: equal losses up to rounding, unless the compiled code
    # draws its dropout masks another way (inductor does; a tracing backend does not).
    out["max_loss_difference"] = float(np.max(np.abs(np.subtract(out["padded, as it is"]["losses"],
                                                                 out["padded, compiled"]["losses"]))))
    return out


def _compiled_entry(args, results) -> None:
    try:
        torch.set_num_threads(args.threads or torch.get_num_threads())
        results.put(("ok", compiled_step(args)))
    except Exception:
        results.put(("error", traceback.format_exc()))


def compiled_in_subprocess(args) -> dict:
    """(b) in a spawned process, given up after ``args.compile_timeout`` seconds."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_compiled_entry, args=(args, results))
    start = time.perf_counter()
    proc.start()
    try:
        status, value = results.get(timeout=args.compile_timeout)
    except queue.Empty:
        status, value = "timeout", f"gave up after {args.compile_timeout:.0f}s"
    proc.join(timeout=10)
    if proc.is_alive():
        proc.terminate()
        proc.join()
    out = value if status == "ok" else {"error": value}
    out["wall_seconds"] = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------- (c) processes sharing the device
def _share_worker(rank: int, args, commands, results) -> None:
    """One process of (c): set up the base step, report ready, then run each window it is given."""
    try:
        torch.set_num_threads(1)  # a GPU process only launches kernels; on a CPU, one core each
        start = time.perf_counter()
        device = args.device
        cfg = class_config(args, "base")
        t = cfg.train
        model = build_model(cfg, args.tiny, t.seed).to(device)
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        pools = make_pools(dataclasses.replace(cfg, train=dataclasses.replace(t, seed=t.seed + rank)), args.pool,
                           model.encoder.config.vocab_size)
        warm_shapes(model, pools, t.amp, device)
        stepper = new_stepper(cfg, model, initial, pools, device)
        update = 0
        for _ in range(max(1, args.warmup)):
            stepper.step(update, 1)
            update += 1
        sync(device)
        results.put(("ready", rank, time.perf_counter() - start))
        micro = plan_settings(t).batches
        while (command := commands.get())[0] == "run":
            window = command[1]
            examples = tokens = updates = 0
            sync(device)
            begin = time.perf_counter()
            while time.perf_counter() - begin < window:
                e, k = stepper.step(update, 1)
                examples, tokens, updates, update = examples + e, tokens + k, updates + 1, update + 1
            sync(device)
            stepper.losses.clear()
            results.put(("done", rank, {"examples": examples, "tokens": tokens, "micro_batches": updates * micro,
                                        "seconds": time.perf_counter() - begin}))
    except Exception:
        results.put(("error", rank, traceback.format_exc()))


def _collect(results, n: int, kind: str, timeout: float) -> list:
    got = []
    while len(got) < n:
        message = results.get(timeout=timeout)
        if message[0] == "error":
            raise RuntimeError(f"process {message[1]} of (c) failed:\n{message[2]}")
        if message[0] != kind:
            raise RuntimeError(f"unexpected message {message[0]!r} from process {message[1]}")
        got.append(message[1:])
    return got


def share_device(args, counts: list[int], setup_timeout: float = 600.0) -> dict:
    """(c): start max(counts) spawned processes; time 1, then each count, of them at once over
    the same window; aggregate throughput = the sum of each process's rate."""
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    n_max = max([1, *counts])
    commands = [ctx.Queue() for _ in range(n_max)]
    procs = [ctx.Process(target=_share_worker, args=(rank, args, commands[rank], results)) for rank in range(n_max)]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    out = {"window_seconds": args.window, "counts": {}}
    try:
        out["setup_seconds"] = max(s for _, s in _collect(results, n_max, "ready", setup_timeout))
        out["setup_wall_seconds"] = time.perf_counter() - start
        for n in [1, *[c for c in counts if c != 1]]:
            for rank in range(n):
                commands[rank].put(("run", args.window))
            done = [d for _, d in _collect(results, n, "done", args.window * 10 + 120)]
            out["counts"][n] = {
                "examples_per_second": sum(d["examples"] / d["seconds"] for d in done),
                "useful_tokens_per_second": sum(d["tokens"] / d["seconds"] for d in done),
                "seconds_per_micro_batch": 1 / sum(d["micro_batches"] / d["seconds"] for d in done),
                "per_process": done}
        base = out["counts"][1]["examples_per_second"]
        for n, r in out["counts"].items():
            r["speedup"] = r["examples_per_second"] / base
    finally:
        for q in commands:
            q.put(("stop",))
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    return out


# --------------------------------------------------------------------------- the study estimate
def experiment_kind(cfg) -> str | None:
    """Which timed kind of update an experiment's step costs like (None: it does not fine-tune)."""
    t = cfg.train
    if t.method != "finetune":
        return None
    if t.smart:
        return "smart"
    return "surgery" if cfg.methods.combiner.needs_task_gradients else "base"


def study_runs(args) -> list[dict]:
    """Every experiment of params.yaml on the profile, those the default profile does not
    run (``run: false``) included: its kind, micro-batches per
    run, and the examples it encodes besides training (the validation split after every
    epoch, dev once at the end; when heads are pretrained, the training and validation
    splits once, for their cached features)."""
    runs = []
    for name in read_params(args.params)["experiments"]:
        cfg = load_config(args.params, name, args.profile, overrides=[f"train.amp={args.amp}"])
        t, d = cfg.train, cfg.data
        dev = sum(d.dev_size[task] or DEV_SIZES[task] for task in t.tasks)
        validation = sum(d.validation_size[task] for task in t.tasks)
        train = sum(min(d.train_size[task] or TRAIN_SIZES[task], TRAIN_SIZES[task] - d.validation_size[task])
                    for task in t.tasks)
        pretrain = t.pretrain_heads not in (False, None, "none") or t.method == "heads"
        kind = experiment_kind(cfg)
        forward = dev + (train + validation if pretrain else 0) + (t.epochs * validation if kind else 0)
        runs.append({"experiment": name, "kind": kind, "micro_batches": t.epochs * t.batches_per_epoch if kind else 0,
                     "forward_examples": 0 if t.method == "random" else forward})
    return runs


def estimate(runs: list[dict], seconds_per_micro_batch: dict[str, float], eval_per_second: float, seeds: int,
             speedup: float = 1.0) -> dict:
    """Study hours = seeds x sum over experiments of (micro-batches x seconds per micro-batch of
    its kind + forward examples / evaluation rate), divided by ``speedup`` (processes at once)."""
    rows = []
    for run in runs:
        train = run["micro_batches"] * seconds_per_micro_batch[run["kind"]] if run["kind"] else 0.0
        forward = run["forward_examples"] / eval_per_second
        rows.append({**run, "train_seconds": train, "forward_seconds": forward, "run_seconds": train + forward})
    serial = seeds * sum(r["run_seconds"] for r in rows)
    return {"rows": rows, "seeds": seeds, "serial_seconds": serial, "speedup": speedup,
            "hours": serial / speedup / 3600}


def print_estimate(runs: list[dict], costs: dict[str, dict[str, float]], eval_per_second: float, args,
                   speedups: dict[str, float]) -> dict:
    """The study time under each measured way, with the arithmetic of the first."""
    out = {}
    for label, per_micro in costs.items():
        out[label] = estimate(runs, per_micro, eval_per_second, args.seeds, speedups.get(label, 1.0))
    first_label = next(iter(costs))
    first = out[first_label]
    print(f"\nstudy estimate, {args.profile} profile, {len(runs)} experiments x {args.seeds} seeds; per run: micro-batches "
          f"x s/micro-batch of its kind + forward examples / {eval_per_second:,.0f} ex/s (eval rate):")
    print(f"  {'experiment':28}{'kind':>8}{'micro-b.':>9}{'s/mb':>8}{'train s':>9}{'fwd ex':>9}{'fwd s':>7}{'run s':>8}")
    for r in first["rows"]:
        mb = "-" if r["kind"] is None else f"{costs[first_label][r['kind']]:.4f}"
        print(f"  {r['experiment']:28}{r['kind'] or '-':>8}{r['micro_batches']:>9,}{mb:>8}{r['train_seconds']:>9.0f}"
              f"{r['forward_examples']:>9,}{r['forward_seconds']:>7.0f}{r['run_seconds']:>8.0f}")
    print(f"  sum over experiments x {args.seeds} seeds = {first['serial_seconds']:,.0f} s one run after another")
    for label, e in out.items():
        print(f"  {label}: {e['serial_seconds']:,.0f} s / speedup {e['speedup']:.2f} = {e['hours']:.2f} h")
    return out


# --------------------------------------------------------------------------- main
def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "none (CPU; pass --peak-tflops for an MFU)"
    name = torch.cuda.get_device_name(device).lower()
    for part, qualifier, value in PEAK_TFLOPS:
        if part in name and (qualifier is None or qualifier in name):
            return value, f"lookup for {torch.cuda.get_device_name(device)!r} (dense bf16/fp16)"
    return None, f"unknown for {torch.cuda.get_device_name(device)!r}; pass --peak-tflops"


def describe_device(device: torch.device) -> dict:
    import transformers

    from benchmarks.machine import cpu_model

    info = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "python": platform.python_version(), "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info.update(name=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)))
    else:
        info.update(name=info["cpu"], torch_cpu_capability=torch.backends.cpu.get_cpu_capability())
    return info


def print_classes(results: dict) -> None:
    print(f"  {'kind':8}{'experiment':22}{'ms/update':>10}{'mb/upd':>7}{'s/micro-b.':>11}{'ex/s':>8}"
          f"{'useful tok/s':>13}{'MFU':>7}{'warm-up s':>10}{'peak MiB':>9}{'finite':>7}")
    for kind, r in results.items():
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        mem = "-" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:,.0f}"
        print(f"  {kind:8}{r['experiment']:22}{r['median_update_seconds'] * 1e3:>10.1f}{r['micro_batches_per_update']:>7}"
              f"{r['seconds_per_micro_batch']:>11.4f}{r['examples_per_second']:>8.0f}{r['useful_tokens_per_second']:>13,.0f}"
              f"{mfu:>7}{r['shape_warmup_seconds']:>10.1f}{mem:>9}{'yes' if r['losses_finite'] else 'NO':>7}")
        if "kernels" in r and "error" not in r["kernels"]:
            k = r["kernels"]
            print(f"  {'':8}profiler: GPU in kernels {k['gpu_busy_fraction']:.1%} of the wall time, "
                  f"{k['kernels_per_update']:.0f} kernels per update")


def section_a(args, device: torch.device, peak: float | None) -> dict:
    print("(a) the step as it is (Stepper, fused AdamW, amp as resolved), per kind of update:")
    results = {}
    for kind in args.classes:
        results[kind] = measure_class(args, kind, device, peak, profile_kernels=kind == "base")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_classes(results)
    ev = results["base"]["eval"]["examples_per_second"]
    print(f"  evaluation (forward only, batches of {results['base']['eval']['batch_size']}, length-sorted): "
          + ", ".join(f"{t} {v:,.0f}" for t, v in ev.items()) + " examples/s")
    return results


def section_b(args) -> dict:
    print(f"(b) base step, lengths padded to a multiple of {args.multiple}, encoder layers compiled "
          f"({args.compile_backend}{', mode reduce-overhead' if args.compile_backend == 'inductor' else ''}):")
    out = compiled_in_subprocess(args)
    if "error" in out:
        print(f"  not measured: {out['error'].strip().splitlines()[-1]}")
        return out
    for name in ("padded, as it is", "padded, compiled"):
        r = out[name]
        kernels = r.get("kernels", {})
        extra = (f"; GPU busy {kernels['gpu_busy_fraction']:.1%}, {kernels['kernels_per_update']:.0f} kernels/update"
                 if "gpu_busy_fraction" in kernels else "")
        print(f"  {name:18}: {r['median_update_seconds'] * 1e3:8.1f} ms/update, {r['examples_per_second']:,.0f} ex/s, "
              f"{r['useful_tokens_per_second']:,.0f} useful tok/s; shape warm-up {r['shape_warmup_seconds']:.1f}s"
              f"{extra}")
    masks = " (inductor draws other dropout masks)" if args.compile_backend == "inductor" else ""
    print(f"  {out['shapes']} batch shapes; compiled / as it is: {out['speedup']:.2f}x; largest loss difference "
          f"{out['max_loss_difference']:.2g}{masks}; wall {out['wall_seconds']:.0f}s")
    return out


def section_c(args) -> dict:
    print(f"(c) base step in N processes sharing the {'GPU' if args.device.type == 'cuda' else 'CPU'} "
          f"(spawned; each its own model and batches), timed over the same {args.window:.0f}s window:")
    try:
        out = share_device(args, args.processes)
    except Exception as err:
        print(f"  not measured: {err!r}")
        return {"error": repr(err)}
    for n, r in out["counts"].items():
        print(f"  N={n}: {r['examples_per_second']:,.0f} ex/s, {r['useful_tokens_per_second']:,.0f} useful tok/s "
              f"aggregate ({r['speedup']:.2f}x N=1)")
    print(f"  set-up (spawn, imports, model, shape warm-up): {out['setup_wall_seconds']:.0f}s")
    return out


def study_costs(a: dict, b: dict, c: dict) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Seconds per micro-batch of each kind under each way measured, and each way's speedup.
    (b) and (c) are measured on the base step; other kinds are assumed to gain alike."""
    measured = {kind: r["seconds_per_micro_batch"] for kind, r in a.items()}
    for kind in CLASSES:  # a kind not timed costs what base costs (printed as an assumption)
        measured.setdefault(kind, measured["base"])
    costs, speedups = {"(a) as it is": measured}, {}
    if "padded, compiled" in b:
        ratio = b["padded, compiled"]["seconds_per_micro_batch"] / a["base"]["seconds_per_micro_batch"]
        costs["(b) compiled"] = {kind: v * ratio for kind, v in measured.items()}
    if c.get("counts"):
        n, best = max(c["counts"].items(), key=lambda item: item[1]["speedup"])
        costs[f"(c) {n} processes"] = measured
        speedups[f"(c) {n} processes"] = best["speedup"]
    return costs, speedups


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = device = pick_device(args.device)
    info = describe_device(device)
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    print(f"device: {info['name']} ({device}); torch {info['torch']} (CUDA {info['cuda']}), transformers "
          f"{info['transformers']}, python {info['python']}; host CPU {info['cpu']}, {info['logical_cpus']} logical CPUs")
    print(f"model: random {'tiny 2-layer' if args.tiny else 'bert-base-shaped'} BertModel + the experiment's heads; "
          f"synthetic batches with the real length mix; profile {args.profile}, amp {args.amp} -> "
          f"{resolve_amp(args.amp, device)}; {args.warmup} warm-up + {args.steps} timed updates; peak "
          f"{'-' if peak is None else f'{peak:.0f}'} TFLOPS ({peak_source})")
    out = {"machine": info, "args": portable_args(args)}
    out["a"] = section_a(args, device, peak)
    print(f"[{time.perf_counter() - started:.0f}s]")
    out["b"] = {} if args.no_compile else section_b(args)
    print(f"[{time.perf_counter() - started:.0f}s]")
    out["c"] = section_c(args) if args.processes else {}
    print(f"[{time.perf_counter() - started:.0f}s]")
    costs, speedups = study_costs(out["a"], out["b"], out["c"])
    untimed = [k for k in CLASSES if k not in out["a"]]
    if untimed:
        print(f"note: {untimed} not timed; counted at the base step's cost")
    runs = study_runs(args)
    eval_per_second = out["a"]["base"]["eval"]["examples_per_second"]["dev_weighted"]
    out["estimate"] = print_estimate(runs, costs, eval_per_second, args, speedups)
    print("(b) and (c) are measured on the base step; the other kinds are assumed to gain the same ratio, and "
          "forward passes (evaluation, feature caching) the same speedup as training.")
    out["wall_seconds"] = time.perf_counter() - started
    print(f"total wall time {out['wall_seconds']:.0f}s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.json}")
    finite = all(r["losses_finite"] for r in out["a"].values())
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
