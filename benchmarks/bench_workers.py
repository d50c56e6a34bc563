"""More one-thread workers than cores: does running every seed of a stage at once beat rounds of two?

A fine-tuning stage trains its seeds in rounds of ``cores`` one-thread workers
(mtlib.training.sweep): 5 seeds on 2 cores take 3 rounds, as 6 do. Starting every seed at once
would remove the half-empty round, if time-slicing more processes than cores cost nothing.
This measures the cost: the same jobs (forward + backward + AdamW steps of a MiniLM-shaped
encoder, randomly initialised, bf16 autocast, batches of 32 x 32 tokens) run with ``cores``
workers and with ``jobs`` workers, alternated round by round; it prints each wall time and
the median ratio.

    python -m benchmarks.bench_workers [--jobs 4] [--steps 25] [--rounds 2]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time


def _job(steps: int) -> float:
    import torch
    from transformers import BertConfig, BertModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                 intermediate_size=1536, vocab_size=30522))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    tokens = torch.randint(0, 30000, (32, 32))
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=tokens).last_hidden_state.float().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    mp.set_start_method("spawn")
    seconds: dict[int, list[float]] = {cores: [], args.jobs: []}
    for round_ in range(args.rounds):
        for workers in seconds:
            start = time.perf_counter()
            with mp.Pool(workers) as pool:
                pool.map(_job, [args.steps] * args.jobs)
            seconds[workers].append(time.perf_counter() - start)
            print(f"round {round_}: {workers} workers, {args.jobs} jobs x {args.steps} steps: "
                  f"{seconds[workers][-1]:.1f} s", flush=True)
    few, many = statistics.median(seconds[cores]), statistics.median(seconds[args.jobs])
    print(f"median: {cores} workers {few:.1f} s, {args.jobs} workers {many:.1f} s; "
          f"{args.jobs} workers take {many / few:.2f}x the time for the same work")


if __name__ == "__main__":
    main()
