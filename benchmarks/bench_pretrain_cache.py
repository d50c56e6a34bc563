#!/usr/bin/env python
"""Cache benchmark: individual head pretraining with the encoder's output cached vs recomputed.

``mtlib.training.pretrain.pretrain_heads`` trains each task's head alone with the encoder frozen.
Three runs of that SAME function, on the same model, data, seed and number of epochs
(no early stopping, so every run does the same epochs):

  (a) recompute: ``cache=False``, the encoder runs on every training and dev batch of
      every epoch;
  (b) cached, cold: the encoder runs once per (task, split), its output is written to a
      fresh cache folder, and the heads train on it;
  (c) cached, warm: (b) again with the files already on disk (no encoder at all).

Before each run the model is reset to the same initial weights. The runs must agree:
the script prints (and checks) the largest absolute difference between the final head
weights of (a) and (b), and of (b) and (c) (which must be 0). (a) and (b) differ only by
float noise: the encoder sees batches padded to different widths.

The real CS224N data (``mtlib.training.loop.prepare_data`` with ``load_config(params.yaml,
base_model, cpu)``), ``--examples`` training and ``--dev-examples`` dev rows per task,
the config's batch sizes (sst 32, para 16, sts 32) and heads, lr 1e-3.

Times are wall-clock seconds of the whole ``pretrain_heads`` call. A typical epoch's cost
is the median over epochs 2.. of the history's seconds; the one-off cost of (b) and (c) is
the call's time minus its epochs (hashing the encoder's weights, then encoding + writing,
or reading). The ratio for the report's 25 epochs is projected from them.

Usage
  python -m benchmarks.bench_pretrain_cache                      # minilm, ~2-3 min on 2 cores
  python -m benchmarks.bench_pretrain_cache --threads 1          # better when the other core is busy
  python -m benchmarks.bench_pretrain_cache --backbone tiny-random --examples 2000
  python -m benchmarks.bench_pretrain_cache --head lstm --epochs 5
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mtlib.model.backbone import load_tokenizer
from mtlib.config import load_config
from mtlib.tasks import TASK_NAMES
from mtlib.model.multitask import build_model
from mtlib.training.pretrain import HeadPretraining, pretrain_heads
from mtlib.data.prepare import prepare_data

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-3  # (a) vs (b): float noise from padding widths, far below this


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", choices=("minilm", "tiny-random"), default="minilm")
    p.add_argument("--examples", type=int, default=200, help="training rows per task (default 200)")
    p.add_argument("--dev-examples", type=int, default=60, help="dev rows per task (default 60)")
    p.add_argument("--epochs", type=int, default=3, help="epochs in every run, no early stopping (default 3)")
    p.add_argument("--head", default=None, help="head kind for every task (default: the config's, linear)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none", help="encoder autocast (default none)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--project-epochs", type=int, default=25, help="epochs for the projected ratio (default 25)")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--data", default=None, help="data folder (default: $MTLIB_DATA, else ../shared/data/cs224n)")
    args = p.parse_args(argv)
    if min(args.examples, args.dev_examples, args.epochs, args.threads) < 1:
        p.error("--examples, --dev-examples, --epochs and --threads must be >= 1")
    return args


def timed_run(model, initial: dict, data, cfg, args, pad_id: int, **kwargs) -> tuple[float, dict, dict]:
    model.load_state_dict(initial)
    start = time.perf_counter()
    how = HeadPretraining(lr=1e-3, epochs=args.epochs, patience=None, batch_size=cfg.train.batch_size,
                          seed=cfg.train.seed, amp=args.amp, pad_id=pad_id,
                          eval_batch_size=cfg.train.eval_batch_size, **kwargs)
    history = pretrain_heads(model, data["train"], data["dev"], how)
    seconds = time.perf_counter() - start
    return seconds, history, {k: v.clone() for k, v in model.heads.state_dict().items()}


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def epoch_seconds(history: dict) -> float:
    """A typical epoch's seconds (median of the epochs after the first), summed over tasks."""
    return sum(statistics.median([r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]])
               for rows in history.values())


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    overrides = [f"backbone.name={args.backbone}"]
    overrides += [f"data.train_size.{t}={args.examples}" for t in TASK_NAMES]
    overrides += [f"data.dev_size.{t}={args.dev_examples}" for t in TASK_NAMES]
    if args.head:
        overrides.append(f"model.head.kind={args.head}")
    cfg = load_config(args.params, "base_model", "cpu", overrides=overrides)
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer, args.data)
    model = build_model(cfg)
    initial = copy.deepcopy(model.state_dict())
    pad_id = tokenizer.pad_token_id

    sizes = {t: (len(data["train"][t]), len(data["dev"][t])) for t in TASK_NAMES}
    print(f"backbone {args.backbone}, heads {[type(h).__name__ for h in model.heads.values()]}, "
          f"pair mode {cfg.model.pair_mode}, max_length {cfg.backbone.max_length}, amp {args.amp}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    batch_sizes = {t: cfg.train.batch_size[t] for t in TASK_NAMES}
    print(f"rows (train, dev) per task {sizes}; batch sizes {batch_sizes}; eval/encode batch "
          f"{cfg.train.eval_batch_size}; {args.epochs} epochs, lr 1e-3, seed {cfg.train.seed}")
    if hasattr(os, "getloadavg"):
        print(f"load average at start {os.getloadavg()[0]:.2f} ({os.cpu_count()} logical CPUs)")

    with tempfile.TemporaryDirectory() as cache_dir:
        recompute, history_a, heads_a = timed_run(model, initial, data, cfg, args, pad_id, cache=False)
        cold, history_b, heads_b = timed_run(model, initial, data, cfg, args, pad_id, cache_dir=cache_dir)
        warm, history_c, heads_c = timed_run(model, initial, data, cfg, args, pad_id, cache_dir=cache_dir)
        cache_mib = sum(f.stat().st_size for f in Path(cache_dir).glob("*.safetensors")) / 2 ** 20

    diff_ab, diff_bc = max_difference(heads_a, heads_b), max_difference(heads_b, heads_c)
    recompute_epoch, cached_epoch = epoch_seconds(history_a), epoch_seconds(history_b)
    encode_once = max(cold - args.epochs * cached_epoch, 0.0)  # fingerprint + encoding + writing
    load_once = max(warm - args.epochs * epoch_seconds(history_c), 0.0)  # fingerprint + reading
    n = args.project_epochs
    print()
    print(f"{'run':28}{'seconds':>10}{'x faster than (a)':>19}")
    for label, seconds in (("(a) recompute every epoch", recompute), ("(b) cached, cold", cold),
                           ("(c) cached, warm (on disk)", warm)):
        print(f"{label:28}{seconds:>10.2f}{recompute / seconds:>19.1f}")
    print()
    print(f"per epoch, all tasks: recompute {recompute_epoch:.3f}s, cached {cached_epoch:.4f}s "
          f"({recompute_epoch / cached_epoch:.0f}x); one-off: encode {encode_once:.2f}s, load {load_once:.3f}s; "
          f"cache files {cache_mib:.1f} MiB")
    projected_cold = n * recompute_epoch / (encode_once + n * cached_epoch)
    projected_warm = n * recompute_epoch / (load_once + n * cached_epoch)
    print(f"projected for {n} epochs: {projected_cold:.1f}x (cold cache), {projected_warm:.1f}x (warm cache)")
    dev = {t: [round(list(r.values())[2], 4) for r in rows] for t, rows in history_b.items()}
    print(f"dev metric per epoch (b): {dev}")
    print(f"max |final head weight difference|: (a) vs (b) {diff_ab:.2e}, (b) vs (c) {diff_bc:.2e}")
    same_metrics = all(abs(list(x.values())[2] - list(y.values())[2]) < 1e-6
                       for t in history_a for x, y in zip(history_a[t], history_b[t]))
    print(f"same dev metrics every epoch (a) vs (b): {'yes' if same_metrics else 'NO'}")
    if diff_ab > TOLERANCE or diff_bc != 0.0:
        print(f"FAILED: the runs disagree (tolerance {TOLERANCE} for (a) vs (b), 0 for (b) vs (c))")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
