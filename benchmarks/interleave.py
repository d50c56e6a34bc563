"""Timing variants against each other on a shared machine: interleaved rounds, medians, ratios.

Other people's jobs come and go while a benchmark runs, so timing variant A for a minute and
then variant B for a minute measures the load as much as the variants. Here every round runs
each variant once (in an order rotated from round to round); a variant's figure is the
median of its rounds, and a ratio is the median of the per-round ratios, so that a burst of
load that hits one round hits every variant of it.
"""
from __future__ import annotations

import statistics
from typing import Callable


def run_rounds(variants: dict[str, Callable[[int], tuple[float, float]]], rounds: int) -> dict[str, list[tuple[float, float]]]:
    """``variants[name](round)`` does one round of work and returns (units of work, seconds);
    returns every round's (units, seconds) per variant."""
    names = list(variants)
    records: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            records[name].append(variants[name](r))
    return records


def summary(records: dict[str, list[tuple[float, float]]], baselines: dict[str, str | None]) -> dict[str, dict]:
    """Per variant: the median and the total rate (units/s), and the median over rounds of its
    rate divided by its baseline's rate in the same round (``baselines[name]``; None: none)."""
    out = {}
    for name, rounds in records.items():
        rates = [units / seconds for units, seconds in rounds]
        base = baselines.get(name)
        ratio = None
        if base is not None:
            ratio = statistics.median(u / s / (bu / bs) for (u, s), (bu, bs) in zip(rounds, records[base]))
        out[name] = {"median_rate": statistics.median(rates), "min_rate": min(rates), "max_rate": max(rates),
                     "total_rate": sum(u for u, _ in rounds) / sum(s for _, s in rounds), "rounds": len(rounds),
                     "baseline": base, "ratio": ratio}
    return out
