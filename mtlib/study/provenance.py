"""What was run, and where: the facts every page of the report opens with, and the
all-MiniLM-L6-v2 caveat whenever that backbone is involved.

The notebooks that compute (01-04) describe their configuration on the machine running them
(:func:`config_header`). Every run records its machine in metrics.json (``machine``, beside
``precision``: mtlib.training.precision.describe_machine), so the notebooks that read runs
back (05, 06) describe the runs themselves (:func:`runs_header`), wherever each was made.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from mtlib.config import load_config, resolve_seeds
from mtlib.record import PRECISIONS, RunRecord
from mtlib.training.precision import describe_machine, resolve_amp, resolve_device

MINILM_CAVEAT = (
    "Caveat: these runs use all-MiniLM-L6-v2, not bert-base-uncased. MiniLM was trained "
    "contrastively on about a billion sentence pairs, among them Quora duplicate questions "
    "(the source of this study's 42,149-pair Quora training subset and of its Quora dev "
    "pairs) and NLI pairs, so it has in effect already seen the paraphrase task and, to a "
    "lesser degree, the similarity task. Its para (and to a lesser degree sts) scores are "
    "contaminated, not just optimistic, and must not be compared with the report's "
    "bert-base numbers."
)
MANY = 4  # more experiments than this are counted, not listed


#: The row that scores the pair tasks with the untrained backbone: the cosine similarity of
#: its sentence embeddings, nothing trained (what the backbone knew before this study).
FROZEN_ROW = "frozen_cosine"
PAIR_TASKS = {"para": "Quora accuracy", "sts": "STS Pearson r"}


def backbone_head_start(summary: pd.DataFrame, fine_tuned: Sequence[str], frozen: str = FROZEN_ROW) -> pd.DataFrame:
    """The size of the backbone caveat, from the results table (mtlib.study.report.summarise's
    frame): per pair task, the dev score of ``frozen`` (the untrained backbone's cosine
    similarity), the best of the ``fine_tuned`` rows and its name, the difference, and how
    many fine-tuned rows score below the frozen backbone. Empty where ``frozen`` did not run
    or has no pair scores (tables from before the row existed, or a profile without it)."""
    columns = ["frozen", "best_row", "best", "gain", "below", "rows"]
    table = summary.set_index("experiment")
    if frozen not in table.index:
        return pd.DataFrame(columns=columns).rename_axis("task")
    rows = {}
    for task in PAIR_TASKS:
        base = float(table.loc[frozen, f"{task}_mean"])
        scores = table.loc[[e for e in fine_tuned if e in table.index and e != frozen], f"{task}_mean"]
        scores = scores.astype(float).dropna()
        if math.isnan(base) or scores.empty:
            continue
        rows[task] = {"frozen": base, "best_row": scores.idxmax(), "best": float(scores.max()),
                      "gain": float(scores.max() - base), "below": int((scores < base).sum()), "rows": len(scores)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("task")


def backbone_caveat(head_start: pd.DataFrame, frozen: str = FROZEN_ROW) -> str:
    """:func:`backbone_head_start`'s table in words (Markdown): how far the untrained
    backbone already gets on the pair tasks, and what fine-tuning adds to it."""
    if head_start.empty:
        return (f"The `{frozen}` row (the untrained backbone's cosine similarity) has no pair-task scores here, "
                "so what the backbone knew before any training is not measured on this profile.")
    parts = [f"{PAIR_TASKS[task]}: {row.frozen:.3f} untrained; the best fine-tuned row, `{row.best_row}`, "
             f"{row.best:.3f} ({row.gain:+.3f}); {row.below} of {row.rows} fine-tuned rows score below the "
             "untrained backbone" for task, row in head_start.iterrows()]
    return (f"What the backbone knew: its cosine similarity with nothing trained (row `{frozen}`) scores on dev "
            + "; ".join(parts) + ". Gains on the pair tasks are read against this, not against zero: they "
            "measure what fine-tuning adds to (or takes from) what the backbone brought.")


def is_minilm(backbone: str) -> bool:
    """True for the packaged all-MiniLM-L6-v2 (alias ``minilm`` or its hub id), not ``tiny-random``."""
    name = str(backbone).lower()
    return name == "minilm" or "all-minilm" in name or "all_minilm" in name


def _listed(values: Iterable, none: str = "–") -> str:
    unique = list(dict.fromkeys(str(v) for v in values if v is not None))
    return ", ".join(unique) if unique else none


def header(facts: Mapping[str, str], backbones: Iterable[str]) -> str:
    """``facts`` as a Markdown table of what was run, and the MiniLM caveat below it when
    one of ``backbones`` is all-MiniLM-L6-v2."""
    lines = ["**What was run**", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {str(value).replace('|', '/')} |" for name, value in facts.items()]
    if any(is_minilm(b) for b in backbones):
        lines += ["", f"> {MINILM_CAVEAT}"]
    return "\n".join(lines) + "\n"


def config_header(params: str | Path, experiment: str, profile: str | None = None, seeds=None,
                  computes: bool = True) -> str:
    """The header of a notebook that computes here: ``experiment`` (or several, comma-separated)
    on ``profile`` (None: params.yaml's) for ``seeds`` (as :func:`mtlib.config.resolve_seeds`
    reads them), with the precision their configs resolve to on this machine
    (``computes=False``: none is used)."""
    seeds = resolve_seeds(seeds, params)
    names = [name.strip() for name in experiment.split(",") if name.strip()]
    configs = [load_config(params, name, profile, seeds[0]) for name in names]
    cfg = configs[0]
    device = resolve_device(cfg.train.device)
    precision = (_listed(PRECISIONS[resolve_amp(c.train.amp, device)] for c in configs) if computes
                 else "– (no model is run)")
    return header({"profile": cfg.profile, "experiment": _listed(names), "seeds": _listed(seeds),
                   "backbone": cfg.backbone.name, "precision": precision,
                   "machine": describe_machine(device, cfg.train.num_threads)}, [cfg.backbone.name])


def runs_header(metrics_files: Sequence[str | Path]) -> str:
    """The header of a notebook that reads runs back: the profile, experiments, seeds,
    backbone, precision and machine that the runs' metrics.json files record."""
    runs = [RunRecord.read(path) for path in metrics_files]
    if not runs:
        raise FileNotFoundError("no runs to describe (no metrics.json given)")
    backbones = [run.backbone for run in runs]
    experiments = list(dict.fromkeys(run.experiment or "?" for run in runs))
    return header({"profile": _listed(run.profile for run in runs),
                   "experiment": _listed(experiments) if len(experiments) <= MANY else f"{len(experiments)} experiments",
                   "seeds": _listed(sorted({run.seed for run in runs} - {None})),
                   "backbone": _listed(backbones),
                   "precision": _listed(run.precision_label for run in runs),
                   "machine": _listed((run.machine for run in runs), none="not recorded")}, backbones)
