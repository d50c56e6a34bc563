#!/usr/bin/env python
"""Padding benchmark: what dynamic padding + length bucketing and bf16 autocast buy on a CPU.

Three variants of the BaseModel (``base_model`` on the ``cpu`` profile: the packaged
all-MiniLM-L6-v2, ``minilm``) train and evaluate on the real CS224N data mix:

  (a) every batch padded to ``backbone.max_length`` (128) tokens, fp32;
  (b) dynamic padding (each batch padded to its own longest row) + length bucketing, fp32;
  (c) (b) + ``torch.autocast('cpu', dtype=torch.bfloat16)``.

Identical work in every variant
  * Training batches come from the real machinery: ``TaskSampler`` (cfg.train.sampler,
    seed cfg.train.seed) picks each micro-batch's task and the task's bucketed
    ``BatchStream`` (the one train.py builds) picks its rows. That row plan is computed
    once per process from the seed alone, and the SAME (task, rows) sequence is fed to
    every variant; only the padding width (and autocast) differ. In (a) each batch is
    padded to 128, so its cost cannot depend on how rows are grouped: (a) is what
    "pad to 128, bucketing off" costs, on exactly the examples (b) and (c) see.
  * The first ``--warmup`` updates are run but not timed; the next ``--steps`` are.
  * Every variant builds the model with ``build_model(cfg)`` (pretrained encoder, heads
    seeded by cfg.train.seed) and reseeds torch before training: identical initial weights.
  * The dev sample is ``--eval-examples`` rows drawn with a fixed seed from the dev splits
    that prepare_data gives (split evenly across sst/para/sts), scored in length-sorted
    batches of cfg.train.eval_batch_size, as ``eval_batches`` does.
  The parent process checks that all variants report the same plan digest, dev-sample
  digest and initial-weight checksum, and compares an eval-mode loss on the first
  training batch across variants (a vs b should agree to float rounding).

Measurement
  * Train: forward + backward (+ autocast in (c)) + grad clipping (cfg.train.max_grad_norm)
    + AdamW step + zero_grad, timed per update with perf_counter. Throughputs are TOTALS
    over the measured updates (sum of examples or real tokens / sum of seconds); the
    median update time is printed as well. Batches are collated before the timer starts
    (collation cost is excluded in all variants).
  * Useful tokens = non-pad tokens (attention mask 1), the same count in every variant.
  * Eval: torch.no_grad() forward (+ argmax/clamp) over the dev sample, one timed pass
    after one untimed batch; batches collated before timing.
  * Memory: each variant runs in a fresh subprocess (this script re-invokes itself with
    ``--variant``) and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the process
    peak RSS) after training and after evaluation, and the RSS just before training (data
    and model loaded): "train+eval delta" is the peak minus that.

Usage
  python -m benchmarks.bench_padding                     # defaults: ~5 min on 2 cores
  python -m benchmarks.bench_padding --steps 5 --eval-examples 64 --json out.json
  python -m benchmarks.bench_padding --variant b         # one variant, in-process, JSON on stdout
"""
from __future__ import annotations

import argparse
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

VARIANTS = {
    "a": {"label": "(a) pad to 128, fp32", "dynamic": False, "amp": "none"},
    "b": {"label": "(b) dynamic + bucketing, fp32", "dynamic": True, "amp": "none"},
    "c": {"label": "(c) dynamic + bucketing, bf16", "dynamic": True, "amp": "bf16"},
}
EVAL_SAMPLE_SEED = 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="measured optimiser updates (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="untimed updates before them (default 5)")
    p.add_argument("--eval-examples", type=int, default=512,
                   help="dev examples scored, split evenly across sst/para/sts (default 512)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--batch", type=int, default=None,
                   help="micro-batch size for every task (default: the config's, sst 32 / para 16 / sts 32)")
    p.add_argument("--eval-batch", type=int, default=None, help="eval batch size (default: cfg.train.eval_batch_size)")
    p.add_argument("--variants", default="a,b,c", help="comma-separated subset of a,b,c (default all)")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--experiment", default="base_model")
    p.add_argument("--data", default=None, help="data folder (default: $MTLIB_DATA, else ../shared/data/cs224n)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write all results to PATH")
    p.add_argument("--variant", choices=sorted(VARIANTS), default=None,
                   help="internal: run ONE variant in this process and write its JSON (to --result or stdout)")
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.eval_examples < 0 or args.threads < 1:
        p.error("--steps >= 1, --warmup >= 0, --eval-examples >= 0, --threads >= 1")
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        p.error(f"--variants: unknown {bad}; choose from a,b,c")
    return args


# --------------------------------------------------------------------------- one variant
def load_everything(args):
    """Config, tokenizer, encoded data (train + dev), as mtlib's training does."""
    from mtlib.model.backbone import load_tokenizer
    from mtlib.config import load_config
    from mtlib.data.files import find_data_dir
    from mtlib.data.prepare import prepare_data

    overrides = [f"data.cache_dir={ROOT / 'data' / 'cache'}"]  # the project's cache, whatever the cwd
    cfg = load_config(args.params, args.experiment, args.profile, overrides=overrides)
    data_dir = find_data_dir(args.data or cfg.data.dir, root=ROOT)
    tokenizer = load_tokenizer(cfg.backbone)
    data = prepare_data(cfg, tokenizer, data_dir, splits=("train", "dev"))
    return cfg, tokenizer, data, data_dir


def training_plan(cfg, data, pad_id: int, updates: int, batch: int | None) -> list[list[tuple[str, object]]]:
    """Per update, the (task, rows) of its micro-batches: real sampler + bucketed streams, seeded."""
    from mtlib.tasks import TASK_NAMES
    from mtlib.data.encode import BatchStream
    from mtlib.training.samplers import TaskSampler
    from mtlib.training.plans import updates_per_epoch

    t = cfg.train
    sizes = {task: len(data["train"][task]) for task in TASK_NAMES}
    sampler = TaskSampler(t.sampler, sizes, t.epochs, t.seed)
    streams = {task: BatchStream(data["train"][task], batch or t.batch_size[task], t.seed, pad_id, bucketing=True)
               for task in TASK_NAMES}
    plan = []
    for update in range(updates):
        epoch = min(update // updates_per_epoch(t) + 1, t.epochs)
        micro = []
        for _ in range(t.accumulation):
            task = sampler.draw(epoch)
            micro.append((task, streams[task].next().index))
        plan.append(micro)
    return plan


def eval_sample(dev, n: int, batch_size: int) -> list[tuple[str, object]]:
    """(task, rows) eval batches: n rows split evenly over tasks, fixed seed, length-sorted."""
    import numpy as np
    import torch

    tasks = list(dev)
    generator = torch.Generator().manual_seed(EVAL_SAMPLE_SEED)
    batches = []
    for k, task in enumerate(tasks):
        split = dev[task]
        want = min(len(split), n // len(tasks) + (1 if k < n % len(tasks) else 0))
        rows = torch.randperm(len(split), generator=generator)[:want].numpy()
        rows = rows[np.argsort(split.lengths()[rows], kind="stable")]
        batches += [(task, rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    return batches


def digest(batches) -> str:
    h = hashlib.sha256()
    for task, rows in batches:
        h.update(task.encode())
        h.update(",".join(map(str, rows)).encode())
        h.update(b";")
    return h.hexdigest()[:16]


def run_variant(args) -> dict:
    wall_start = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from mtlib.data.encode import collate
    from mtlib.training.precision import autocast
    from mtlib.model.multitask import build_model
    from mtlib.tasks import TASKS

    spec = VARIANTS[args.variant]
    device = torch.device("cpu")
    cfg, tokenizer, data, data_dir = load_everything(args)
    t = cfg.train
    pad_id = tokenizer.pad_token_id
    pad_to = None if spec["dynamic"] else cfg.backbone.max_length
    amp = spec["amp"]

    plan = training_plan(cfg, data, pad_id, args.warmup + args.steps, args.batch)
    flat_plan = [mb for update in plan for mb in update]
    eval_plan = eval_sample(data["dev"], args.eval_examples, args.eval_batch or t.eval_batch_size)
    train_batches = [[collate(data["train"][task], rows, pad_id, pad_to) for task, rows in update] for update in plan]
    eval_batches = [collate(data["dev"][task], rows, pad_id, pad_to) for task, rows in eval_plan]
    del data  # only the collated batches are needed from here on

    model = build_model(cfg).to(device)
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    attn = getattr(model.encoder.config, "_attn_implementation", None)

    # A same-weights check: eval-mode loss on the first training batch (no dropout).
    model.eval()
    with torch.no_grad(), autocast(amp, device):
        initial_loss = float(model.loss(train_batches[0][0]))
    model.train()

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=t.lr, weight_decay=t.weight_decay)
    torch.manual_seed(t.seed)  # dropout masks: same seed in every variant (shapes differ, though)
    rss_before = current_rss_mib()
    peak_before = maxrss_mib()

    records = []
    for k, micro in enumerate(train_batches):
        start = time.perf_counter()
        losses = []
        for batch in micro:
            with autocast(amp, device):
                loss = model.loss(batch) / t.accumulation
            loss.backward()
            losses.append(float(loss.detach()) * t.accumulation)
        mid = time.perf_counter()
        if t.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        records.append({
            "seconds": end - start, "fwd_bwd_seconds": mid - start, "optimizer_seconds": end - mid,
            "examples": sum(len(b) for b in micro), "real_tokens": sum(b.real_tokens() for b in micro),
            "padded_tokens": sum(b.padded_tokens() for b in micro),
            "tasks": [b.task for b in micro], "loss": float(np.mean(losses)), "measured": k >= args.warmup,
        })
    peak_after_train = maxrss_mib()

    measured = [r for r in records if r["measured"]]
    seconds = sum(r["seconds"] for r in measured)
    examples = sum(r["examples"] for r in measured)
    real = sum(r["real_tokens"] for r in measured)
    padded = sum(r["padded_tokens"] for r in measured)
    per_task = {}
    for r in measured:
        for task in r["tasks"]:
            per_task[task] = per_task.get(task, 0) + 1
    train = {
        "warmup_updates": args.warmup, "measured_updates": len(measured),
        "micro_batches_per_task": per_task,
        "examples": examples, "real_tokens": real, "padded_tokens": padded,
        "padding_efficiency": real / padded,
        "seconds": seconds,
        "examples_per_second": examples / seconds,
        "useful_tokens_per_second": real / seconds,
        "padded_tokens_per_second": padded / seconds,
        "median_update_seconds": statistics.median(r["seconds"] for r in measured),
        "fwd_bwd_seconds": sum(r["fwd_bwd_seconds"] for r in measured),
        "optimizer_seconds": sum(r["optimizer_seconds"] for r in measured),
        "first_loss": records[0]["loss"], "last_loss": records[-1]["loss"],
        "updates": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in records],
    }

    evaluation = None
    if eval_batches:
        model.eval()
        with torch.no_grad():
            with autocast(amp, device):  # untimed warm-up batch
                model(eval_batches[0])
            start = time.perf_counter()
            for batch in eval_batches:
                with autocast(amp, device):
                    output = model(batch)
                TASKS[batch.task].predict(output)
            eval_seconds = time.perf_counter() - start
        e_examples = sum(len(b) for b in eval_batches)
        e_real = sum(b.real_tokens() for b in eval_batches)
        e_padded = sum(b.padded_tokens() for b in eval_batches)
        evaluation = {
            "examples": e_examples, "batches": len(eval_batches), "real_tokens": e_real, "padded_tokens": e_padded,
            "padding_efficiency": e_real / e_padded, "seconds": eval_seconds,
            "examples_per_second": e_examples / eval_seconds, "useful_tokens_per_second": e_real / eval_seconds,
        }
    peak_after_eval = maxrss_mib()

    return {
        "variant": args.variant, "label": spec["label"], "pad_to": pad_to,
        "padding": "dynamic (batch's longest row)" if pad_to is None else f"fixed {pad_to}",
        "rows": "bucketed BatchStream + TaskSampler plan, identical in every variant", "amp": amp,
        "autocast": "torch.autocast('cpu', dtype=torch.bfloat16)" if amp == "bf16" else None,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "attn_implementation": attn,
        "backbone": cfg.backbone.name, "max_length": cfg.backbone.max_length, "profile": cfg.profile,
        "experiment": cfg.experiment, "seed": t.seed, "lr": t.lr, "accumulation": t.accumulation,
        "batch_size": {task: args.batch or t.batch_size[task] for task in ("sst", "para", "sts")},
        "eval_batch_size": args.eval_batch or t.eval_batch_size, "data_dir": str(data_dir),
        "plan_digest": digest(flat_plan), "eval_digest": digest(eval_plan), "param_checksum": checksum,
        "initial_loss": initial_loss,
        "train": train, "eval": evaluation,
        "memory_mib": {
            "rss_before_training": rss_before, "peak_before_training": peak_before,
            "peak_after_training": peak_after_train, "peak": peak_after_eval,
            "train_eval_delta": None if rss_before is None else peak_after_eval - rss_before,
        },
        "process_wall_seconds": time.perf_counter() - wall_start,
        "loadavg_end": loadavg(),
    }


# --------------------------------------------------------------------------- driver
def forwarded(args) -> list[str]:
    out = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--eval-examples", str(args.eval_examples),
           "--threads", str(args.threads), "--params", args.params, "--profile", args.profile,
           "--experiment", args.experiment]
    for flag, value in (("--batch", args.batch), ("--eval-batch", args.eval_batch), ("--data", args.data)):
        if value is not None:
            out += [flag, str(value)]
    return out


def run_child(args, variant: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / f"{variant}.json"
        cmd = [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", "--variant", variant, "--result", str(result),
               *forwarded(args)]
        proc = subprocess.run(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not result.exists():
            sys.stderr.write(proc.stdout)
            raise SystemExit(f"variant {variant} failed (exit {proc.returncode}): {' '.join(cmd)}")
        return json.loads(result.read_text())


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def ratio(x, base):
    return None if x is None or not base else x / base


def report(info: dict, results: dict, args) -> dict:
    first = next(iter(results.values()))
    print(f"CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs; flags: {', '.join(info['cpu_flags']) or '-'})")
    print(f"torch {info['torch']}, {info['threads']} threads (each variant: fresh process, torch.set_num_threads, "
          f"OMP_NUM_THREADS={info['threads']}); python {info['python']}; {info['platform']}")
    print(f"load average at start {fmt(info['loadavg_start'][0], 2) if info['loadavg_start'] else '-'}, "
          f"after last variant {fmt(info['loadavg_end'][0], 2) if info.get('loadavg_end') else '-'}")
    print(f"model: {first['experiment']} on profile {first['profile']}: backbone {first['backbone']}, "
          f"max_length {first['max_length']}, attention {first['attn_implementation']}, "
          f"batch {first['batch_size']}, accumulation {first['accumulation']}, AdamW lr {first['lr']}")
    tr = first["train"]
    print(f"train: {tr['warmup_updates']} warm-up + {tr['measured_updates']} measured updates "
          f"(micro-batches per task {tr['micro_batches_per_task']}), {tr['examples']} examples, "
          f"{tr['real_tokens']} useful tokens; throughput = TOTAL over the measured updates")
    if first["eval"]:
        print(f"eval: {first['eval']['examples']} dev examples in {first['eval']['batches']} batches of "
              f"<= {first['eval_batch_size']}, one timed pass after one untimed batch")

    same = {k: {r[k] for r in results.values()} for k in ("plan_digest", "eval_digest", "param_checksum")}
    ok = all(len(v) == 1 for v in same.values())
    verdict = ("yes" if ok else "NO") if len(results) > 1 else "n/a (one variant)"
    print(f"identical work: {verdict} (plan {'/'.join(sorted(same['plan_digest']))}, "
          f"dev sample {'/'.join(sorted(same['eval_digest']))}, initial-weight checksum "
          f"{'/'.join(f'{c:.6f}' for c in sorted(same['param_checksum']))})")
    print("eval-mode loss on the first batch before training: "
          + ", ".join(f"{v} {r['initial_loss']:.6f}" for v, r in results.items()))
    print()

    base = results.get("a")
    head = (f"{'variant':32}{'pad eff':>8}{'train ex/s':>11}{'x(a)':>6}{'useful tok/s':>13}{'x(a)':>6}"
            f"{'median upd s':>13}{'eval ex/s':>10}{'x(a)':>6}{'peak RSS MiB':>13}{'x(a)':>6}{'delta MiB':>10}")
    print(head)
    print("-" * len(head))
    ratios = {}
    for v, r in results.items():
        tr, ev, mem = r["train"], r["eval"], r["memory_mib"]
        rr = {
            "train_examples_per_second": ratio(tr["examples_per_second"], base and base["train"]["examples_per_second"]),
            "train_useful_tokens_per_second": ratio(tr["useful_tokens_per_second"],
                                                    base and base["train"]["useful_tokens_per_second"]),
            "eval_examples_per_second": ratio(ev and ev["examples_per_second"],
                                              base and base["eval"] and base["eval"]["examples_per_second"]),
            "peak_rss": ratio(mem["peak"], base and base["memory_mib"]["peak"]),
            "train_eval_delta": ratio(mem["train_eval_delta"], base and base["memory_mib"]["train_eval_delta"]),
        }
        ratios[v] = rr
        print(f"{r['label']:32}{tr['padding_efficiency']:>8.1%}{fmt(tr['examples_per_second']):>11}"
              f"{fmt(rr['train_examples_per_second'], 2):>6}{fmt(tr['useful_tokens_per_second'], 0):>13}"
              f"{fmt(rr['train_useful_tokens_per_second'], 2):>6}{fmt(tr['median_update_seconds'], 3):>13}"
              f"{fmt(ev and ev['examples_per_second']):>10}{fmt(rr['eval_examples_per_second'], 2):>6}"
              f"{fmt(mem['peak'], 0):>13}{fmt(rr['peak_rss'], 2):>6}{fmt(mem['train_eval_delta'], 0):>10}")
    print()
    print("pad eff = useful / padded tokens in the measured training batches; x(a) = ratio to (a), same run.")
    print("peak RSS = ru_maxrss of the variant's own process (data + model + training + eval); "
          "delta = peak minus RSS just before training.")
    print("train time split (measured updates): "
          + "; ".join(f"{v}: fwd+bwd {r['train']['fwd_bwd_seconds']:.1f}s, clip+AdamW {r['train']['optimizer_seconds']:.1f}s"
                      for v, r in results.items()))
    if not ok:
        print("WARNING: the variants did not process identical work; the ratios are not comparable.")
    return ratios


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.variant:
        result = run_variant(args)
        text = json.dumps(result, indent=2)
        if args.result:
            Path(args.result).write_text(text)
        else:
            print(text)
        return 0

    import torch  # noqa: F401  (version for the header)
    info = machine_info(args.threads)
    variants = args.variants.split(",")
    results = {}
    started = time.perf_counter()
    for v in variants:
        print(f"running {VARIANTS[v]['label']} ...", file=sys.stderr, flush=True)
        results[v] = run_child(args, v)
        r = results[v]
        print(f"  done in {r['process_wall_seconds']:.0f}s: train {r['train']['examples_per_second']:.1f} ex/s, "
              f"peak RSS {r['memory_mib']['peak']:.0f} MiB", file=sys.stderr, flush=True)
    info["loadavg_end"] = loadavg()
    info["total_wall_seconds"] = time.perf_counter() - started
    ratios = report(info, results, args)
    print(f"total wall time {info['total_wall_seconds']:.0f}s")
    if args.json:
        out = {"machine": info, "args": {k: v for k, v in vars(args).items() if k not in ("variant", "result")},
               "variants": results, "ratios_vs_a": ratios if "a" in results else None}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
