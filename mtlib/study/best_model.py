"""The study's best model: chosen on validation, trained at a larger budget, kept and compared.

What notebooks/08_best_model.py does, step by step:

* :func:`choose`: from the VALIDATION scores of the study's fine-tuned rows (each run's
  metrics.json keeps the validation scores of its selected checkpoint; dev is never read),
  the row with the best validation mean over its seeds is the base. Then, task by task, a
  head that validated clearly better in another row replaces the base's head for that task,
  where it reads the task's input the same way (a one-sentence task always; a pair task only
  under the same ``model.pair_mode``) and its per-seed gain on that task's validation score,
  paired by seed, has a 95% t-interval above 0. Everything else (sampler, plan, data, the
  other heads) stays the base's. Ties go to the row listed first in params.yaml. The choice
  is a function of the runs' records and params.yaml alone.
* :func:`best_config`: that configuration at ``best_model.budget_factor`` times the
  profile's micro-batches per epoch (as notebook 07 scales a budget), with
  ``best_model.evaluations`` validation scores, ``best_model.set`` on top, the checkpoint kept
  and the test files predicted. Written as ``config.yaml`` beside the run, from which
  ``mtlib train --config`` retrains exactly that run.
* :func:`write_submission`: the run's test predictions in the course's submission format.
* :func:`comparison`: its dev scores beside the report's best row, the frozen baseline and the
  table's best row, and its per-task difference to the baseline (paired with the baseline's
  run of the same seed; the interval counts the dev sample, as the results table's do).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from scipy import stats

from mtlib.config import Config, ConfigError, config_from_dict, load_config, merge, read_params
from mtlib.io import write_text
from mtlib.record import RunRecord
from mtlib.tasks import TASK_NAMES, TASKS, metric_key

METRICS = {**{task: metric_key(task) for task in TASK_NAMES}, "mean": "mean"}
# The course's submission files (its starter code's names, header and "id , value" rows).
SUBMISSION = {"sst": ("sst-test-output.csv", "Predicted_Sentiment"),
              "sts": ("sts-test-output.csv", "Predicted_Similiary")}
EXPERIMENT = "best_model"  # the experiment name its run records


@dataclass(frozen=True)
class Settings:
    """params.yaml's ``best_model``."""

    budget_factor: int
    evaluations: int
    seed: int
    baseline: str
    set: dict


def read_settings(path: str | Path = "params.yaml") -> Settings:
    """params.yaml's ``best_model``, checked; a problem is a ConfigError naming the key."""
    params = read_params(path)
    where = f"{path}: best_model"
    entry = params.get("best_model")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: missing, or not a mapping")
    fields = {f.name for f in dataclasses.fields(Settings)}
    unknown, missing = sorted(set(entry) - fields), sorted(fields - set(entry))
    if unknown or missing:
        raise ConfigError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}; valid keys: {sorted(fields)}")
    for key in ("budget_factor", "evaluations", "seed"):
        value = entry[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}.{key}: must be an integer >= 1, got {value!r}")
    if entry["baseline"] not in params["experiments"]:
        raise ConfigError(f"{where}.baseline: {entry['baseline']!r} is not an experiment of params.yaml")
    if not isinstance(entry["set"], dict):
        raise ConfigError(f"{where}.set: expected a mapping, got {entry['set']!r}")
    return Settings(**entry)


def read_records(runs_dir: str | Path) -> list[RunRecord]:
    """Every run's record under ``runs_dir`` (``<experiment>/seed<k>/metrics.json``), sorted."""
    paths = sorted(Path(runs_dir).glob("*/seed*/metrics.json"))
    return [RunRecord.read(path) for path in paths]


def validation_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run: experiment, seed and its validation scores (``sst``, ``para``, ``sts``,
    ``mean``); runs without validation scores are left out."""
    rows = [{"experiment": r.experiment, "seed": r.seed, **{m: r.validation.get(key, math.nan)
                                                              for m, key in METRICS.items()}}
            for r in records if r.validation]
    return pd.DataFrame(rows, columns=["experiment", "seed", *METRICS])


def candidates(params: str | Path, profile: str | None, records: Sequence[RunRecord],
               overrides: Sequence[str] = ()) -> dict[str, Config]:
    """The rows the best model may be built from, in params.yaml's order: those whose runs
    (``records``) made updates, on the pretrained encoder, for all three tasks, from scratch
    (no ``train.init_from``: the model must be trainable from its config alone)."""
    trained = {r.experiment for r in records if r.updates}
    out = {}
    for name in read_params(params)["experiments"]:
        if name not in trained:
            continue
        cfg = load_config(params, name, profile, overrides=list(overrides))
        t = cfg.train
        if not t.init_from and cfg.backbone.pretrained and set(t.tasks) == set(TASK_NAMES):
            out[name] = cfg
    return out


@dataclass(frozen=True)
class Choice:
    base: str                    # the row whose configuration is trained
    heads: dict[str, str]        # task -> the row whose head it takes
    overrides: dict              # what changes in the base's config (model.head_overrides)
    reasons: list[str]           # why, one line per decision
    table: pd.DataFrame          # the candidates' validation scores, mean over seeds


def _same_input(task: str, a: Config, b: Config) -> bool:
    return not TASKS[task].is_pair or a.model.pair_mode == b.model.pair_mode


def paired_lower_bound(gains: pd.Series, confidence: float = 0.95) -> float:
    """The lower end of the two-sided t-interval of the mean of paired per-seed ``gains``
    (NaN with fewer than two)."""
    gains = gains.dropna().astype(float)
    if len(gains) < 2:
        return math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(gains) - 1)) * float(gains.std(ddof=1)) / math.sqrt(len(gains))
    return float(gains.mean()) - half


def choose(scores: pd.DataFrame, configs: Mapping[str, Config]) -> Choice:
    """The best model's configuration (see the module docstring) from ``scores``
    (:func:`validation_frame`) of the rows ``configs`` (:func:`candidates`, in params.yaml's order)."""
    scores = scores[scores["experiment"].isin(list(configs))]
    if scores.empty:
        raise ValueError("no fine-tuned row of the study has validation scores: run the study's rows first")
    order = {name: i for i, name in enumerate(configs)}
    table = scores.groupby("experiment")[list(METRICS)].mean()
    table["seeds"] = scores.groupby("experiment")["seed"].nunique()
    table = table.loc[sorted(table.index, key=lambda e: (-table.at[e, "mean"], order[e]))]
    base = table.index[0]
    reasons = [f"base: {base}, the best validation mean ({table.at[base, 'mean']:.4f} over "
               f"{table.at[base, 'seeds']} seeds; next {table.index[1]} {table.iloc[1]['mean']:.4f})"
               if len(table) > 1 else f"base: {base}, the only fine-tuned row with validation scores"]
    by_seed = scores.set_index(["experiment", "seed"])
    heads, overrides = {task: base for task in TASK_NAMES}, {}
    base_cfg = configs[base]
    for task in TASK_NAMES:
        donor = sorted(table.index, key=lambda e: (-table.at[e, task], order[e]))[0]
        if donor == base:
            reasons.append(f"{task}: the base's head ({base_cfg.model.head_for(task).kind}) validated best on {task}")
            continue
        head = dataclasses.asdict(configs[donor].model.head_for(task))
        what = (f"{task}: {donor} validated best on {task} "
                f"({table.at[donor, task]:.4f} against {table.at[base, task]:.4f})")
        if head == dataclasses.asdict(base_cfg.model.head_for(task)):
            reasons.append(f"{what}, with the base's own head: kept")
            continue
        if not _same_input(task, base_cfg, configs[donor]):
            reasons.append(f"{what}, but encodes the pair otherwise ({configs[donor].model.pair_mode}): "
                           "base's head kept")
            continue
        gains = by_seed.loc[donor, task] - by_seed.loc[base, task]
        lower = paired_lower_bound(gains)
        if not lower > 0:
            reasons.append(f"{what}; its gain over {len(gains.dropna())} paired seeds is not clear "
                           f"(95% lower bound {lower:+.4f}): base's head kept")
            continue
        heads[task] = donor
        overrides = merge(overrides, {"model": {"head_overrides": {task: head}}})
        reasons.append(f"{what}; paired gain's 95% lower bound {lower:+.4f} > 0: its {head['kind']} head taken")
    return Choice(base, heads, overrides, reasons, table)


def best_config(params: str | Path, profile: str | None, choice: Choice, settings: Settings,
                overrides: Sequence[str] = ()) -> Config:
    """The configuration the stage trains (see the module docstring), as experiment ``best_model``."""
    cfg = load_config(params, choice.base, profile, settings.seed, list(overrides))
    t = cfg.train
    per_epoch = t.batches_per_epoch * settings.budget_factor
    budget = {"train": {"batches_per_epoch": per_epoch,
                        "eval_every": max(1, t.epochs * per_epoch // settings.evaluations),
                        "keep_checkpoint": True, "predict_test": True}}
    tree = {**cfg.to_dict(), "experiment": EXPERIMENT}
    for layer in (choice.overrides, budget, settings.set):
        tree = merge(tree, layer)
    return config_from_dict(tree, where=f"{params}: best_model (base {choice.base}, profile {cfg.profile})")


def write_config(path: str | Path, cfg: Config) -> None:
    """``cfg`` as YAML (the form a run folder's config.yaml takes), written atomically."""
    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def submission_text(ids: Sequence[str], values: Sequence, header: str) -> str:
    """A course submission file: a header ``id \\t <header> `` and one ``<id> , <value> `` row per example."""
    return "".join([f"id \t {header} \n", *(f"{i} , {v} \n" for i, v in zip(ids, values))])


def write_submission(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """The run's test predictions (``predictions/<task>-test.csv``) as the course's submission
    files in ``out_dir``; returns their paths."""
    written = []
    for task, (name, header) in SUBMISSION.items():
        source = Path(run_dir) / "predictions" / f"{task}-test.csv"
        if not source.exists():
            raise FileNotFoundError(f"{source}: missing (was the run trained with train.predict_test=true?)")
        frame = pd.read_csv(source, dtype={"id": str})
        write_text(Path(out_dir) / name, submission_text(frame["id"], frame[TASKS[task].label_column], header))
        written.append(Path(out_dir) / name)
    return written


def read_submission(path: str | Path) -> pd.DataFrame:
    """A submission file back as a frame of ``id`` and ``value`` (strings)."""
    lines = Path(path).read_text().splitlines()
    rows = [line.split(" , ") for line in lines[1:]]
    return pd.DataFrame({"id": [r[0] for r in rows], "value": [r[1].strip() for r in rows]})


def _row(name: str, label: str, scores: Mapping[str, float], seeds: int | None) -> dict:
    return {"row": name, "label": label, "seeds": seeds, **{m: round(float(scores[m]), 4) for m in METRICS}}


def comparison(best: RunRecord, records: Sequence[RunRecord], experiments: Mapping, baseline: str,
               deltas: pd.DataFrame | None = None) -> dict:
    """The dev scores shown beside the best model: the report's best row of Table 2 (params.yaml's
    ``report`` numbers), the frozen ``baseline`` and the table's best row (means over seeds),
    and ``deltas`` (:func:`baseline_deltas`) when given."""
    frame = pd.DataFrame([{"experiment": r.experiment, **{m: r.dev.get(key, math.nan) for m, key in METRICS.items()}}
                          for r in records])
    means = frame.groupby("experiment")[list(METRICS)].mean().dropna()
    seeds = frame.groupby("experiment").size()
    if baseline not in means.index:
        raise ValueError(f"{baseline}: no run with dev scores; the best model is compared with it")
    order = {name: i for i, name in enumerate(experiments)}
    table_best = sorted(means.index, key=lambda e: (-means.at[e, "mean"], order.get(e, len(order)), e))[0]
    reported = {name: e["report"] for name, e in experiments.items() if e.get("report")}
    report_best = max(reported, key=lambda name: (reported[name]["mean"], -order[name]))
    rows = [_row(EXPERIMENT, f"best model ({best.profile}, {best.updates} updates)",
                 {m: best.dev[key] for m, key in METRICS.items()}, 1),
            _row("report", f"the report's best: {reported[report_best]['label']} (bert-base, one run)",
                 reported[report_best], None),
            _row(baseline, f"{baseline}: the frozen encoder", means.loc[baseline], int(seeds[baseline])),
            _row(table_best, f"the table's best row: {table_best}", means.loc[table_best], int(seeds[table_best]))]
    out = {"split": "dev", "rows": rows}
    if deltas is not None:
        out["baseline"], out["seed"] = baseline, best.seed
        out["delta"] = deltas.to_dict(orient="index")
    return out


def baseline_deltas(summary: pd.DataFrame) -> pd.DataFrame:
    """Per metric, the best model's difference to its parent row in ``summary``
    (mtlib.study.report.summarise of the two with the best model's parent set): the
    difference, its dev-sample 95% interval, and whether that interval excludes 0."""
    row = summary.set_index("experiment").loc[EXPERIMENT]
    out = {}
    for m in METRICS:
        lo, hi = float(row[f"{m}_diff_dev_lo"]), float(row[f"{m}_diff_dev_hi"])
        out[m] = {"diff": round(float(row[f"{m}_diff"]), 4), "lo": round(lo, 4), "hi": round(hi, 4),
                  "resolved": bool(lo > 0 or hi < 0)}
    return pd.DataFrame(out).T


def readme_block(scores: Mapping) -> str:
    """README's best-model block from the stage's scores file (:func:`comparison`)."""
    header = ["model", "seeds", "sst acc", "para acc", "sts r", "mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in scores["rows"]:
        cells = [r["label"], "–" if r["seeds"] is None else str(r["seeds"]),
                 *(f"{r[m]:.3f}" for m in METRICS)]
        lines.append("| " + " | ".join(cells) + " |")
    if "delta" in scores:
        parts = []
        for m in METRICS:
            d = scores["delta"][m]
            text = f"{m} {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"
            parts.append(f"**{text}**" if d["resolved"] else text)
        lines += ["", f"Best model − `{scores['baseline']}` (dev, paired with its seed-{scores['seed']} run; "
                      "95% interval over dev examples, bold where it excludes 0): " + "; ".join(parts) + "."]
    return "\n".join(lines)

