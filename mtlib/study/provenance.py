"""What was run, and where: the facts every page of the report opens with, and the
all-MiniLM-L6-v2 caveat whenever that backbone is involved.

The notebooks that compute (01-04) describe their configuration on the machine running them
(:func:`config_header`). Every run records its machine in metrics.json (``machine``, beside
``precision``: mtlib.training.precision.describe_machine), so the notebooks that read runs
back (05, 06) describe the runs themselves (:func:`runs_header`), wherever each was made.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mtlib.config import load_config, resolve_seeds
from mtlib.record import PRECISIONS, RunRecord
from mtlib.training.precision import describe_machine, resolve_amp, resolve_device

MINILM_CAVEAT = (
    "Caveat: these runs use all-MiniLM-L6-v2, not bert-base-uncased. MiniLM was trained "
    "contrastively on about a billion sentence pairs, among them Quora duplicate questions "
    "and NLI pairs, so it has in effect already seen the paraphrase task and, to a lesser "
    "degree, the similarity task. Its para (and to a lesser degree sts) scores are "
    "optimistic and must not be compared with the report's bert-base numbers."
)
MANY = 4  # more experiments than this are counted, not listed


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
