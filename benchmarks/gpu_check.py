#!/usr/bin/env python
"""GPU check: the paper profile's training step on a bert-base-shaped model, bf16 vs fp16, sum vs PCGrad.

Self-contained for a GPU machine that has torch and transformers but NO model weights,
NO data files and NO network: the encoder is ``BertModel(BertConfig())`` with random
weights (bert-base's shape: 12 layers, hidden 768, 12 heads, vocabulary 30,522; no pooler),
wrapped in ``mtlib.model.multitask.MultitaskModel`` with one linear head per task
(``mtlib.model.heads.build_head``), and the batches are synthetic: random token ids with lengths
drawn from the real training data's length distribution (see ``LENGTH_QUANTILES``), cut
into batches the way ``mtlib.data.encode.BatchStream`` buckets them (chunks of 50 batches
sorted by length, batch order shuffled), sst 32 / para 16 / sts 32 rows.

Variants (``--variants``; the rest of the step comes from ``params.yaml``'s ``--profile``,
paper by default: AdamW at ``train.lr``, clipping at ``train.max_grad_norm``, the random
task sampler):

  bf16            base_model: update ``sampled``, ``accumulation`` (4) micro-batches, summed; bf16 autocast
  fp16            the same under fp16 autocast + GradScaler (the paper profile's own amp)
  fp16_each_sum   hidden_pcgrad's update (``each_task``: one batch of every task) with combiner sum
  fp16_pcgrad     hidden_pcgrad: per-task gradient matrix, PCGrad, fp16 + GradScaler
  bf16_each_sum   / bf16_pcgrad: the same two under bf16 (no scaler)

The ``*_each_sum`` rows are PCGrad's like-for-like baseline (same batches per update).
Every variant starts from the same initial weights, reseeds torch, and replays the same
synthetic batch streams from their start.

The training step is ``mtlib.training.loop.Stepper.step`` itself (the GPU image has pandas, tqdm and
PyYAML; nlpaug and NLTK are imported only when augmenting), subclassed only to record each
task loss. fp16 needs CUDA (``mtlib.training.evaluate.autocast``), so on a CPU the fp16 variants are
left out.

Before any timing, every synthetic batch goes once through forward and backward under each
autocast dtype in use, so that the first variants do not pay for first-seen shapes (cuBLAS
heuristics, allocator growth): on an H200 those made the first updates 0.5-10 s.

Measures, per variant (``--warmup`` untimed updates, then ``--steps`` timed ones, each
timed with ``torch.cuda.synchronize()`` on both sides):
  examples/s and useful (non-pad) tokens/s (totals over the timed updates), the median
  update time, model FLOP utilisation MFU = 6 * N * useful tokens / seconds / peak, with N
  the model's non-embedding parameters (encoder layers + heads; a lookup costs no matmul)
  and the attention-score FLOPs left out (~1% at these lengths); peak = ``--peak-tflops`` or
  a lookup by ``torch.cuda.get_device_name()`` (H100 SXM / H200: 989 dense bf16 = fp16
  TFLOPS; H100 PCIe 756; H100 NVL 835; A100 312); peak memory
  (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` per variant, and its
  increase over the memory allocated before the first update); whether every loss was
  finite; and how many updates the GradScaler skipped (its scale fell) in warm-up and in
  the timed updates.

Diagnostics (``--no-diagnose`` skips them): (a) the share of one update's wall time the GPU
spends in kernels and the number of kernels, from torch.profiler over a few steady updates of
the first variant; (b) forward + backward time of the same model on batches of growing size
under bf16 (rows x length): a time that barely grows with the batch means the step is bound
by launching kernels, not by arithmetic, and says what larger batches would buy.

Usage
  python -m benchmarks.gpu_check --json gpu_check.json                 # on the GPU machine (about 2 min on an H200)
  python -m benchmarks.gpu_check --device cpu --tiny                   # the same code path (bf16 only), tiny model, seconds
  python -m benchmarks.gpu_check --variants fp16,fp16_pcgrad --steps 100 --peak-tflops 989
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

TASK_ORDER = ("sst", "para", "sts")
# Token counts (special tokens included, bert-base-uncased vocabulary) of the CS224N training
# sets as the study tokenises them (pairs in sentence mode), at these percentiles. Measured
# from /work/shared/data/cs224n: sst 8,544 rows (mean 25.0), quora 42,149 (mean 29.3),
# sts 6,040 (mean 28.4). Bucketed batches of them are ~96% real tokens.
LENGTH_PERCENTILES = (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95,
                      97.5, 99, 99.5, 100)
LENGTH_QUANTILES = {
    "sst": (4, 9, 11, 13, 15, 16, 18, 19, 21, 22, 24, 25, 27, 29, 30, 33, 35, 37, 41, 46, 50, 55, 58, 80),
    "para": (6, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 31, 33, 35, 37, 40, 44, 49, 54, 59, 62, 123),
    "sts": (9, 15, 16, 17, 18, 19, 19, 20, 21, 22, 23, 24, 26, 27, 30, 33, 38, 43, 50, 60, 67, 73, 77, 125),
}
TRAIN_SIZES = {"sst": 8544, "para": 42149, "sts": 6040}  # only samplers other than 'random' read them
FIRST_SEGMENT_FRACTION = 0.52                            # pairs: share of tokens before the middle [SEP]
CLS_ID, SEP_ID, PAD_ID, FIRST_WORD_ID = 101, 102, 0, 1996
BUCKET_FACTOR = 50                                       # mtlib.data.encode.epoch_batches' default

VARIANTS = {  # name: (experiment, overrides)
    "bf16": ("base_model", ["train.amp=bf16"]),
    "fp16": ("base_model", ["train.amp=fp16"]),
    "fp16_each_sum": ("hidden_pcgrad", ["train.amp=fp16", "train.combiner=sum"]),
    "fp16_pcgrad": ("hidden_pcgrad", ["train.amp=fp16"]),
    "bf16_each_sum": ("hidden_pcgrad", ["train.amp=bf16", "train.combiner=sum"]),
    "bf16_pcgrad": ("hidden_pcgrad", ["train.amp=bf16"]),
}
# Dense (no sparsity) tensor-core peaks, TFLOPS; bf16 and fp16 are the same on these parts.
PEAK_TFLOPS = (("h200", None, 989.0), ("h100", "pcie", 756.0), ("h100", "nvl", 835.0), ("h100", None, 989.0),
               ("gh200", None, 989.0), ("a100", None, 312.0))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--tiny", action="store_true",
                   help="2-layer, 64-wide BERT and few steps: exercises the code path (CPU) in seconds")
    p.add_argument("--steps", type=int, default=None, help="timed updates per variant (default 40; --tiny 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed updates before them (default 15; --tiny 1)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="accelerator peak (dense bf16/fp16 TFLOPS) for MFU; default: looked up from the GPU name")
    p.add_argument("--pool", type=int, default=BUCKET_FACTOR, help="synthetic batches per task, cycled (default 50)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--profile", default="paper")
    p.add_argument("--seed", type=int, default=None, help="default: the config's train.seed")
    p.add_argument("--no-diagnose", action="store_true", help="skip the profiler and batch-size diagnostics")
    p.add_argument("--json", default=None, metavar="PATH", help="also write all results to PATH")
    args = p.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (3 if args.tiny else 40)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 15)
    if args.steps < 1 or args.warmup < 0 or args.pool < 1:
        p.error("--steps >= 1, --warmup >= 0, --pool >= 1")
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from {','.join(VARIANTS)}")
    return args


# --------------------------------------------------------------------------- imports from mtlib
from mtlib.config import load_config
from mtlib.tasks import TASK_NAMES
from mtlib.data.encode import Batch
from mtlib.training.precision import autocast
from mtlib.model.heads import build_head
from mtlib.model.multitask import MultitaskModel
from mtlib.training.samplers import TaskSampler
from mtlib.tasks import TASKS
from mtlib.training.stepper import Stepper


# --------------------------------------------------------------------------- model and batches
def bert_config(tiny: bool):
    from transformers import BertConfig

    if tiny:
        return BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    return BertConfig()  # bert-base: 12 x 768, 12 heads, 3072 intermediate, vocabulary 30,522


def build_model(cfg, tiny: bool, seed: int):
    """Random bert-base-shaped encoder (no pooler) + one linear head per task, seeded."""
    from transformers import BertModel

    torch.manual_seed(seed)
    encoder = BertModel(bert_config(tiny), add_pooling_layer=False)
    head_cfg = dataclasses.replace(cfg.model.head, kind="linear", hidden_layers=0)
    torch.manual_seed(seed)
    heads = {task: build_head(head_cfg, encoder.config.hidden_size, 1, TASKS[task].num_outputs) for task in TASK_NAMES}
    return MultitaskModel(encoder, heads)


def draw_lengths(task: str, n: int, rng: np.random.Generator, max_length: int) -> np.ndarray:
    """Inverse-CDF draws from the task's length quantiles (linear between them)."""
    u = rng.uniform(0.0, 100.0, size=n)
    lengths = np.rint(np.interp(u, LENGTH_PERCENTILES, LENGTH_QUANTILES[task])).astype(int)
    return np.clip(lengths, 5 if TASKS[task].is_pair else 3, max_length)


def make_batch(task: str, lengths: np.ndarray, rng: np.random.Generator, vocab: int, start: int):
    """[CLS] words [SEP] (pairs: [CLS] w [SEP] w [SEP], segment ids 0 then 1), padded at the end."""
    rows, width = len(lengths), int(lengths.max())
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


def make_pool(task: str, batch_size: int, batches: int, seed: int, vocab: int, max_length: int) -> list:
    """``batches`` batches bucketed as BatchStream does: chunks of 50 batches sorted by length."""
    rng = np.random.default_rng([seed, TASK_ORDER.index(task)])
    pool, start = [], 0
    while len(pool) < batches:
        chunk = np.sort(draw_lengths(task, batch_size * BUCKET_FACTOR, rng, max_length))
        cut = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        for k in rng.permutation(len(cut))[: batches - len(pool)]:
            pool.append(make_batch(task, cut[k], rng, vocab, start))
            start += len(cut[k])
    return pool


class CyclingStream:
    """``next()`` as BatchStream's: the pool's batches in order, round and round (CPU tensors)."""

    def __init__(self, pool: list):
        self.pool, self.position = pool, 0

    def next(self):
        batch = self.pool[self.position % len(self.pool)]
        self.position += 1
        return batch


def make_streams(pools: dict) -> dict:
    return {task: CyclingStream(pool) for task, pool in pools.items()}


# --------------------------------------------------------------------------- the update step
class RecordingStepper(Stepper):
    """mtlib.training.stepper.Stepper, recording every task loss (detached, left on the device)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses: list[torch.Tensor] = []

    def loss(self, batch) -> torch.Tensor:
        value = super().loss(batch)
        self.losses.append(value.detach())
        return value


# --------------------------------------------------------------------------- helpers
def variant_config(args, name: str, *extra: str):
    experiment, overrides = VARIANTS[name]
    if args.seed is not None:
        extra = (*extra, f"train.seed={args.seed}")
    return load_config(args.params, experiment, args.profile, overrides=[*overrides, *extra])


def new_optimizer(model, t):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay)


def new_stepper(cfg, model, initial: dict, pools_for, device: torch.device):
    """``(stepper, optimizer, scaler)`` for ``cfg`` from the initial weights, dropout on, as
    mtlib.training.loop.train builds them, with streams over the synthetic pools."""
    t = cfg.train
    model.load_state_dict(initial)
    model.train()
    optimizer = new_optimizer(model, t)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    sizes = {task: TRAIN_SIZES[task] for task in t.tasks}
    stepper = RecordingStepper(t, model, optimizer, scaler, make_streams(pools_for(cfg)),
                               TaskSampler(t.sampler, sizes, t.epochs, t.seed), sizes, device, t.amp)
    return stepper, optimizer, scaler


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def rss_peak_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


# --------------------------------------------------------------------------- one variant
def run_variant(args, name: str, model, initial: dict, pools_for, device: torch.device, n_flop: int,
                peak: float | None) -> dict:
    cfg = variant_config(args, name)
    t = cfg.train
    stepper, optimizer, scaler = new_stepper(cfg, model, initial, pools_for, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    torch.manual_seed(t.seed)
    records = []
    for update in range(args.warmup + args.steps):
        scale_before = scaler.get_scale() if scaler.is_enabled() else None
        sync(device)
        start = time.perf_counter()
        examples, tokens = stepper.step(update, 1)
        sync(device)
        seconds = time.perf_counter() - start
        skipped = scale_before is not None and scaler.get_scale() < scale_before  # the scaler halves on inf/nan
        records.append({"seconds": seconds, "examples": examples, "real_tokens": tokens, "skipped": skipped,
                        "measured": update >= args.warmup})
    losses = torch.stack(stepper.losses).float().cpu()
    finite_params = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    measured = [r for r in records if r["measured"]]
    seconds = sum(r["seconds"] for r in measured)
    examples = sum(r["examples"] for r in measured)
    real = sum(r["real_tokens"] for r in measured)
    padded = sum(b.padded_tokens() for pool in pools_for(cfg).values() for b in pool)  # pool-wide efficiency
    pool_real = sum(b.real_tokens() for pool in pools_for(cfg).values() for b in pool)
    achieved = 6 * n_flop * real / seconds / 1e12
    memory = {"kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "ru_maxrss (whole process)"}
    if device.type == "cuda":
        memory.update(peak_mib=torch.cuda.max_memory_allocated(device) / 2**20,
                      before_mib=allocated_before / 2**20,
                      increase_mib=(torch.cuda.max_memory_allocated(device) - allocated_before) / 2**20)
    else:
        memory.update(peak_mib=rss_peak_mib(), before_mib=None, increase_mib=None)
    result = {
        "variant": name, "experiment": cfg.experiment, "update": t.update, "accumulation": t.accumulation,
        "combiner": t.combiner, "amp": t.amp, "grad_scaler": scaler.is_enabled(), "lr": t.lr,
        "max_grad_norm": t.max_grad_norm, "sampler": t.sampler,
        "batch_size": {task: t.batch_size[task] for task in t.tasks},
        "warmup_updates": args.warmup, "measured_updates": len(measured),
        "examples": examples, "real_tokens": real, "seconds": seconds,
        "median_update_seconds": statistics.median(r["seconds"] for r in measured),
        "examples_per_second": examples / seconds, "useful_tokens_per_second": real / seconds,
        "padding_efficiency_of_pool": pool_real / padded,
        "model_tflops": achieved, "mfu": None if not peak else achieved / peak,
        "memory": memory,
        "losses_finite": bool(torch.isfinite(losses).all()), "nonfinite_losses": int((~torch.isfinite(losses)).sum()),
        "params_finite": finite_params,
        "mean_loss": float(losses.mean()),
        "skipped_warmup": sum(r["skipped"] for r in records if not r["measured"]),
        "skipped_measured": sum(r["skipped"] for r in measured),
        "final_scale": scaler.get_scale() if scaler.is_enabled() else None,
        "updates": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in records],
    }
    del stepper, optimizer, scaler
    model.zero_grad(set_to_none=True)
    return result


# --------------------------------------------------------------------------- warm-up and diagnostics
def forward_backward(model, batch, amp: str, device: torch.device) -> None:
    with autocast(amp, device):
        loss = TASKS[batch.task].loss(model(batch), batch.labels)
    loss.float().backward()


def warm_shapes(model, cfgs, pools_for, device: torch.device) -> dict:
    """Every pool batch once through forward + backward under each amp in use; no update."""
    amps = sorted({cfg.train.amp for cfg in cfgs})
    model.train()
    sync(device)
    start = time.perf_counter()
    for amp in amps:
        for cfg in cfgs:
            if cfg.train.amp == amp:
                for pool in pools_for(cfg).values():
                    for batch in pool:
                        forward_backward(model, batch.to(device), amp, device)
                        model.zero_grad(set_to_none=True)
                break
    sync(device)
    return {"amps": amps, "seconds": time.perf_counter() - start}


def kernel_time(args, name: str, model, initial: dict, pools_for, device: torch.device, updates: int = 3) -> dict:
    """torch.profiler over ``updates`` steady updates: GPU kernel time / wall time, kernels per update."""
    from torch.profiler import ProfilerActivity, profile

    stepper, _, _ = new_stepper(variant_config(args, name), model, initial, pools_for, device)
    for update in range(3):  # optimizer state allocated, scaler settled
        stepper.step(update, 1)
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for update in range(3, 3 + updates):
            stepper.step(update, 1)
        sync(device)
        wall = time.perf_counter() - start
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in kernels) / 1e6  # kernels, memcpy, memset; one stream
    model.zero_grad(set_to_none=True)
    return {"variant": name, "updates": updates, "wall_seconds": wall, "kernel_seconds": busy,
            "gpu_busy_fraction": busy / wall, "kernels_per_update": len(kernels) / updates}


def batch_scaling(model, device: torch.device, vocab: int, n_flop: int, peak: float | None,
                  shapes=((32, 32), (32, 128), (128, 128), (512, 128)), repeats: int = 10) -> list[dict]:
    """bf16 forward + backward of the sst head on random full-length batches of growing size."""
    rng = np.random.default_rng(0)
    rows_out = []
    model.train()
    for rows, length in shapes:
        batch = make_batch("sst", np.full(rows, length), rng, vocab, 0).to(device)
        times = []
        for i in range(3 + repeats):
            sync(device)
            start = time.perf_counter()
            forward_backward(model, batch, "bf16", device)
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        median = statistics.median(times)
        tflops = 6 * n_flop * rows * length / median / 1e12
        rows_out.append({"rows": rows, "length": length, "tokens": rows * length, "median_seconds": median,
                         "tokens_per_second": rows * length / median, "model_tflops": tflops,
                         "mfu": None if not peak else tflops / peak})
    return rows_out


def diagnose(args, name: str, model, initial: dict, pools_for, device: torch.device, n_flop: int,
             peak: float | None) -> dict:
    out = {}
    if device.type == "cuda":
        try:
            out["kernel_time"] = k = kernel_time(args, name, model, initial, pools_for, device)
            print(f"profiler, {k['updates']} updates of {name}: GPU in kernels {k['kernel_seconds'] * 1e3:.1f} ms "
                  f"of {k['wall_seconds'] * 1e3:.1f} ms wall ({k['gpu_busy_fraction']:.1%}); "
                  f"{k['kernels_per_update']:.0f} kernels per update")
        except Exception as err:  # a diagnostic: report, do not fail the check
            out["kernel_time"] = {"error": repr(err)}
            print(f"profiler: unavailable ({err!r})")
    model.load_state_dict(initial)
    vocab = model.encoder.config.vocab_size
    out["batch_scaling"] = scaling = batch_scaling(model, device, vocab, n_flop, peak)
    print("bf16 forward + backward, sst head, full-length random batches:")
    print(f"  {'rows x len':>12}{'tokens':>8}{'ms':>9}{'tok/s':>12}{'TFLOP/s':>9}{'MFU':>7}")
    for r in scaling:
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        print(f"  {str(r['rows']) + ' x ' + str(r['length']):>12}{r['tokens']:>8}{r['median_seconds'] * 1e3:>9.1f}"
              f"{r['tokens_per_second']:>12,.0f}{r['model_tflops']:>9.1f}{mfu:>7}")
    model.zero_grad(set_to_none=True)
    return out


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    if device.type == "cpu" and not args.tiny:
        print("note: bert-base on a CPU is slow; --tiny is the CPU smoke test", file=sys.stderr)
    import transformers

    variants = args.variants.split(",")
    if device.type != "cuda":
        dropped = [v for v in variants if VARIANTS[v][1][0] == "train.amp=fp16"]
        variants = [v for v in variants if v not in dropped]
        if dropped:
            print(f"note: {dropped} left out: fp16 autocast needs CUDA", file=sys.stderr)
        if not variants:
            raise SystemExit("no variant left to run on a CPU (fp16 needs CUDA)")
    base_cfg = variant_config(args, variants[0])
    seed, max_length = base_cfg.train.seed, base_cfg.backbone.max_length
    vocab = bert_config(args.tiny).vocab_size
    pools = {}

    def pools_for(cfg):  # the same synthetic batches for every variant with the same batch sizes
        key = tuple(cfg.train.batch_size[task] for task in TASK_ORDER)
        if key not in pools:
            pools[key] = {task: make_pool(task, cfg.train.batch_size[task], args.pool, seed, vocab, max_length)
                          for task in TASK_ORDER}
        return pools[key]

    info = {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "capability": list(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None,
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
    }
    print(f"device: {info['device_name']} ({device}); torch {info['torch']} (CUDA {info['cuda']}), "
          f"transformers {info['transformers']}, python {info['python']}")

    model = build_model(base_cfg, args.tiny, seed).to(device)
    initial = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    embedding_params = sum(p.numel() for p in model.encoder.embeddings.parameters())
    total_params = sum(p.numel() for p in model.parameters())
    n_flop = total_params - embedding_params
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    c = model.encoder.config
    print(f"encoder: random BertModel, {c.num_hidden_layers} layers x {c.hidden_size}, {c.num_attention_heads} heads, "
          f"vocab {c.vocab_size}, attention {getattr(c, '_attn_implementation', None)}; linear heads; "
          f"{total_params:,} parameters ({embedding_params:,} in embeddings)")
    print(f"FLOPs per update = 6 x N x useful tokens, N = {n_flop:,} non-embedding parameters (attention scores "
          f"and padding not counted); peak {fmt(peak, 0)} TFLOPS ({peak_source})")
    print(f"data: synthetic, lengths drawn from the real per-task length quantiles, bucketed like BatchStream; "
          f"profile {args.profile}, seed {seed}; {args.warmup} warm-up + {args.steps} timed updates per variant")
    warm = warm_shapes(model, [variant_config(args, v) for v in variants], pools_for, device)
    print(f"shape warm-up: every synthetic batch once through forward + backward under {warm['amps']}: "
          f"{warm['seconds']:.1f}s")
    print()

    results = {}
    for name in variants:
        results[name] = run_variant(args, name, model, initial, pools_for, device, n_flop, peak)
        r = results[name]
        print(f"  {name}: {r['median_update_seconds'] * 1e3:.1f} ms/update, {r['examples_per_second']:.0f} ex/s",
              file=sys.stderr, flush=True)

    mem_head = "peak MiB" if device.type == "cuda" else "RSS MiB"
    head = (f"{'variant':14}{'update':>19}{'scaler':>7}{'ms/upd':>8}{'ex/s':>8}{'useful tok/s':>13}{'pad eff':>8}"
            f"{'TFLOP/s':>8}{'MFU':>7}{mem_head:>10}{'+train':>8}{'skipped':>8}{'finite':>7}")
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        update = f"{r['update']}x{r['accumulation']}/{r['combiner']}"
        mem = r["memory"]
        print(f"{name:14}{update:>19}{'yes' if r['grad_scaler'] else 'no':>7}{r['median_update_seconds'] * 1e3:>8.1f}"
              f"{r['examples_per_second']:>8.0f}{r['useful_tokens_per_second']:>13,.0f}"
              f"{r['padding_efficiency_of_pool']:>8.1%}{r['model_tflops']:>8.1f}"
              f"{fmt(r['mfu'] and r['mfu'] * 100, 1) + ('%' if r['mfu'] else ''):>7}"
              f"{fmt(mem['peak_mib'], 0):>10}{fmt(mem['increase_mib'], 0):>8}"
              f"{str(r['skipped_warmup']) + '/' + str(r['skipped_measured']):>8}"
              f"{'yes' if r['losses_finite'] and r['params_finite'] else 'NO':>7}")
    print()
    print("update = plan x micro-batches per task (sampled: draws) / combiner; ms/upd = median; ex/s, tok/s = totals "
          "over the timed updates; TFLOP/s = 6 N useful tokens / s; MFU = that / peak.")
    print(f"{mem_head}: " + ("torch.cuda.max_memory_allocated per variant; +train = its increase over the memory "
                             "allocated before the first update (weights)" if device.type == "cuda" else
                             "ru_maxrss of the whole process (cumulative over variants)")
          + "; skipped = GradScaler-skipped updates (scale fell) in warm-up / timed; finite = every loss and weight.")
    ratios = {}
    for amp in ("fp16", "bf16"):
        base, pc = results.get(f"{amp}_each_sum"), results.get(f"{amp}_pcgrad")
        if base and pc:
            ratios[f"{amp}_pcgrad_vs_each_sum"] = pc["median_update_seconds"] / base["median_update_seconds"]
    if "fp16" in results and "bf16" in results:
        ratios["fp16_vs_bf16_examples_per_second"] = results["fp16"]["examples_per_second"] / results["bf16"]["examples_per_second"]
    if ratios:
        print("ratios: " + "; ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    problems = [n for n, r in results.items() if not (r["losses_finite"] and r["params_finite"])]
    skipping = [n for n, r in results.items() if r["skipped_measured"]]
    if problems:
        print(f"WARNING: non-finite losses or weights in {problems}")
    if skipping:
        print(f"note: the GradScaler skipped timed updates in {skipping} (it starts at scale 2^16 and halves on "
              f"every overflow; more --warmup updates absorb that start)")
    diagnostics = None
    if not args.no_diagnose:
        diagnostics = diagnose(args, variants[0], model, initial, pools_for, device, n_flop, peak)
    wall = time.perf_counter() - started
    print(f"total wall time {wall:.0f}s")
    if args.json:
        out = {"machine": info, "args": vars(args), "flops": {"formula": "6 * N * useful_tokens", "N": n_flop,
               "N_total": total_params, "peak_tflops": peak, "peak_source": peak_source},
               "shape_warmup": warm, "variants": results,
               "diagnostics": diagnostics, "ratios": ratios, "wall_seconds": wall}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
