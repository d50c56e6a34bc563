"""The results table: every run folder gathered, summarised over seeds, set beside the report.

``collect_runs`` reads ``results/runs/<experiment>/seed<k>/metrics.json``, ``bootstrap_runs``
scores every run's dev predictions on example resamples (mtlib.study.stats), ``summarise``
turns both into one row per experiment and ``write_table`` writes results/table.csv and
results/table.md; notebooks/05_results.py shows them in use.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mtlib.data.files import file_name, find_data_dir, read_task_file
from mtlib.io import write_csv, write_text
from mtlib.record import RecordError, RunRecord, folder_seed, read_history
from mtlib.study.stats import REPLICATES, Interval, Replicates, interval, replicate_scores, t_half_width
from mtlib.tasks import TASK_NAMES, TASKS, metric_key
from mtlib.study.provenance import MINILM_CAVEAT, is_minilm
from mtlib.training.runs import read_run_config

# Column name in our frames -> key in metrics.json's "dev".
METRICS = {**{task: metric_key(task) for task in TASK_NAMES}, "mean": "mean"}

RUN_COLUMNS = ["experiment", "seed", *METRICS, "best_update", "updates", "stopped_early",
               "train_seconds", "train_examples_per_second", "train_tokens_per_second",
               "eval_examples_per_second", "params_total", "params_trainable", "params_shared",
               "params_task_specific", *(f"params_{t}" for t in TASK_NAMES), "backbone", "profile",
               "path"]
PARAM_COLUMNS = ["params_total", "params_trainable", "params_task_specific"]

# Per metric m: m_mean, m_std (over seeds), m_ci95 (t half-width, seeds alone), m_lo/m_hi (95%
# interval, seeds and dev sample), m_dev_lo/m_dev_hi (dev sample alone), m_report; then the
# paired difference to the parent (over the seeds both ran): m_diff, m_diff_std, m_diff_ci95,
# m_diff_lo/m_diff_hi, m_diff_dev_lo/m_diff_dev_hi, m_diff_dev_se (shared dev-sample standard
# error) and m_resolved (m_diff's 95% interval excludes 0).
STAT_SUFFIXES = ("mean", "std", "ci95", "lo", "hi", "dev_lo", "dev_hi", "report",
                 "diff", "diff_std", "diff_ci95", "diff_lo", "diff_hi", "diff_dev_lo", "diff_dev_hi",
                 "diff_dev_se", "resolved")
SUMMARY_COLUMNS = ["experiment", "label", "parent", "n_seeds", "n_paired",
                   *(f"{m}_{s}" for m in METRICS for s in STAT_SUFFIXES),
                   *PARAM_COLUMNS, "train_seconds", "backbone", "profile"]
# Recomputing a run's dev score from its predictions file must give metrics.json's number:
# exactly for class predictions; for STS, whose predictions are written rounded to 4
# decimals (mtlib.training.evaluate.prediction_frame), up to 0.01 plus what the rounding
# can move r by. Rounding moves each prediction by at most h = 5e-5, which turns the
# centred prediction vector by an angle of at most h / std(predictions), and r (the cosine
# of that vector with the centred labels) by no more: ~1e-6 for a trained model, but without
# bound for a nearly constant one, such as a cosine head on the smoke profile's random
# encoder. Predictions joined to the wrong rows move r by far more.
SCORE_TOLERANCE = 0.01
ROUNDING = 5e-5


def score_tolerance(integer_labels: bool, values: np.ndarray) -> float:
    """How far a score recomputed from a predictions file may be from metrics.json's."""
    if integer_labels:
        return 1e-9
    spread = float(np.std(values))
    return SCORE_TOLERANCE + (math.inf if spread == 0 else 2 * ROUNDING / spread)


# ---------------------------------------------------------------------------------------
# Reading run folders

def _number(value, path: Path, key: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{path}: malformed metrics.json: {key} is {value!r}, not a number")
    return float(value)


def read_metrics(path: str | Path) -> dict:
    """One row of :func:`collect_runs` from a metrics.json; :class:`RecordError` names the file."""
    path = Path(path)
    record = RunRecord.read(path)
    params = {} if record.params is None else record.params
    if not isinstance(params, dict) or not isinstance(params.get("task_specific", {}), dict):
        raise RecordError(f"{path}: malformed metrics.json: 'params' is not an object of counts")
    specific = params.get("task_specific", {})
    seed = folder_seed(path.parent) if record.seed is None else record.seed
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not float(seed).is_integer():
        raise RecordError(f"{path}: malformed metrics.json: seed is {seed!r}, not an integer "
                           "(and the folder is not named seed<k>)")
    row = {"experiment": str(record.experiment or path.parent.parent.name), "seed": int(seed)}
    row.update({column: _number(record.dev.get(key), path, f"dev[{key!r}]") for column, key in METRICS.items()})
    for key in ("best_update", "updates", "train_seconds", "train_examples_per_second",
                "train_tokens_per_second", "eval_examples_per_second"):
        row[key] = _number(getattr(record, key), path, key)
    row["stopped_early"] = record.stopped_early
    row.update({f"params_{key}": _number(params.get(key), path, f"params[{key!r}]")
                for key in ("total", "trainable", "shared")})
    per_task = {t: _number(specific.get(t), path, f"params['task_specific'][{t!r}]") for t in TASK_NAMES}
    row["params_task_specific"] = float(np.nansum(list(per_task.values()))) if specific else math.nan
    row.update({f"params_{t}": n for t, n in per_task.items()})
    row.update(backbone=record.backbone, profile=record.profile, path=str(path.parent))
    return row


def _run_files(root: Path, name: str) -> list[Path]:
    """``name`` files under ``root``, skipping hidden folders (atomic_dir's .tmp and .old copies)."""
    return sorted(p for p in root.rglob(name)
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


def collect_runs(root: str | Path) -> pd.DataFrame:
    """One row per run folder (a folder holding metrics.json) under ``root``, sorted by experiment, seed."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of runs")
    runs = pd.DataFrame([read_metrics(p) for p in _run_files(root, "metrics.json")], columns=RUN_COLUMNS)
    counts = [c for c in RUN_COLUMNS if c.startswith("params_")] + ["best_update", "updates"]
    runs[counts] = runs[counts].astype(float).astype("Int64")  # counts stay integers; NA where absent
    duplicated = runs[runs.duplicated(["experiment", "seed"], keep=False)]
    if len(duplicated):
        raise ValueError("two run folders claim the same experiment and seed: " + ", ".join(duplicated["path"]))
    return runs.sort_values(["experiment", "seed"], ignore_index=True)


def collect_histories(root: str | Path) -> pd.DataFrame:
    """Every history.csv under ``root`` (mtlib.record.read_history) in one long frame."""
    frames = [read_history(path.parent) for path in _run_files(Path(root), "history.csv")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["experiment", "seed"])


# ---------------------------------------------------------------------------------------
# Dev predictions

def _data_folder(runs: pd.DataFrame, data_dir) -> Path:
    """``data_dir``, else the first run's config.yaml ``data.dir``, else the usual search."""
    if data_dir is None:
        for folder in runs["path"]:
            if (Path(folder) / "config.yaml").exists():
                data_dir = read_run_config(folder).data.dir
                break
    return find_data_dir(data_dir)


def _read_run_predictions(path: Path, task: str, labels: pd.Series) -> pd.Series:
    """One predictions/<task>-dev.csv as a Series indexed by id; every id must be a dev row."""
    column = TASKS[task].label_column
    try:
        frame = pd.read_csv(path, dtype={"id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: malformed predictions file: {error}") from error
    if {"id", column} - set(frame.columns):
        raise ValueError(f"{path}: expected columns 'id' and {column!r}, found {list(frame.columns)}")
    repeated = frame.loc[frame["id"].duplicated(), "id"]
    if len(repeated):
        raise ValueError(f"{path}: id {repeated.iloc[0]!r} is predicted more than once")
    unknown = frame.loc[~frame["id"].isin(labels.index), "id"]
    if len(unknown):
        raise ValueError(f"{path}: {len(unknown)} id(s) are not rows of the {task} dev file, e.g. {unknown.iloc[0]!r}")
    return frame.set_index("id")[column].astype(float)


def collect_predictions(runs: pd.DataFrame, data_dir=None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Every run's dev predictions (``predictions/<task>-dev.csv``) beside the dev labels:
    ``labels`` (task -> (n,)) and ``predictions`` (task -> {(experiment, seed): (n,)}), all
    runs of a task on the same dev rows in the same order. Errors, naming the file: a run
    with a dev score but no predictions, predicted ids not in the dev file, runs scored on
    different rows, or predictions that do not reproduce metrics.json's score."""
    folder = _data_folder(runs, data_dir)
    labels, predictions = {}, {}
    for task in TASK_NAMES:
        scored = runs[runs[task].notna()]
        predictions[task], order, first = {}, None, None
        if scored.empty:
            labels[task] = np.empty(0)
            continue
        dev = read_task_file(folder / file_name(task, "dev"), task).set_index("id")[TASKS[task].label_column]
        for row in scored.itertuples(index=False):
            path = Path(row.path) / "predictions" / f"{task}-dev.csv"
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing, but metrics.json has a dev {METRICS[task]}")
            values = _read_run_predictions(path, task, dev)
            if order is None:
                order, first = values.index.sort_values(), path
            elif len(values) != len(order) or not values.index.isin(order).all():
                raise ValueError(f"{path}: scored on {len(values)} dev rows, not the {len(order)} rows of {first}")
            values = values.reindex(order).to_numpy()
            recomputed = TASKS[task].score(values, dev.reindex(order).to_numpy())
            if abs(recomputed - getattr(row, task)) > score_tolerance(TASKS[task].integer_labels, values):
                raise ValueError(f"{path}: these predictions score {recomputed:.4f}, but metrics.json "
                                 f"says {METRICS[task]} {getattr(row, task):.4f}")
            predictions[task][(row.experiment, int(row.seed))] = values
        labels[task] = dev.reindex(order).to_numpy(dtype=float)
    return labels, predictions


def bootstrap_runs(runs: pd.DataFrame, data_dir=None, replicates: int = REPLICATES, seed: int = 0) -> Replicates:
    """mtlib.study.stats.replicate_scores of every run's dev predictions (:func:`collect_predictions`):
    each run's score on ``replicates`` example resamples of the dev rows, the same resamples
    for every run, drawn from a fixed ``seed`` so the table is reproducible."""
    labels, predictions = collect_predictions(runs, data_dir)
    metrics = {task: TASKS[task].metric_fn for task in TASK_NAMES}
    return replicate_scores(labels, predictions, metrics, replicates, seed)


# ---------------------------------------------------------------------------------------
# Statistics over seeds

def seed_interval(replicates: Replicates, metric: str, experiment: str, seeds,
                  reference: str | None = None) -> Interval:
    """mtlib.study.stats.interval of ``experiment``'s mean ``metric`` over ``seeds`` or, with a
    ``reference``, of the per-seed differences experiment - reference (paired by seed)."""
    point, boot = replicates.values(metric, [(experiment, s) for s in seeds])
    if reference is not None:
        ref_point, ref_boot = replicates.values(metric, [(reference, s) for s in seeds])
        point, boot = point - ref_point, boot - ref_boot
    return interval(point, boot)


def report_row(row: Mapping | None) -> tuple[str | None, tuple[float, ...]]:
    """(label, numbers in :data:`METRICS` order) of an experiment's row of the report's Table 2,
    from its params.yaml entry's ``report`` (mtlib.config.ReportRow); (None, NaNs) where the
    report has no such row. The one reader of the report's numbers."""
    report = (row or {}).get("report")
    if not report:
        return None, (math.nan,) * len(METRICS)
    return report["label"], tuple(float(report[metric]) for metric in METRICS)


def _interval_columns(prefix: str, result: Interval | None) -> dict:
    result = result or Interval(math.nan, math.nan, math.nan, 0)
    return {f"{prefix}lo": result.lo, f"{prefix}hi": result.hi,
            f"{prefix}dev_lo": result.dev_lo, f"{prefix}dev_hi": result.dev_hi}


def _metric_columns(metric: str, group: pd.DataFrame, parent: pd.DataFrame | None,
                    replicates: Replicates | None, names: tuple[str, str | None]) -> dict:
    """The columns of one metric for one row (SUMMARY_COLUMNS' comment)."""
    values = group[metric].astype(float)
    seeds = list(values.dropna().index)
    out = {f"{metric}_mean": float(values.mean()) if seeds else math.nan,
           f"{metric}_std": float(values.std(ddof=1)) if len(seeds) > 1 else math.nan,
           f"{metric}_ci95": t_half_width(values)}
    score = seed_interval(replicates, metric, names[0], seeds) if replicates is not None and seeds else None
    out.update(_interval_columns(f"{metric}_", score))
    differences = (values - parent[metric].astype(float)).dropna() if parent is not None else pd.Series(dtype=float)
    paired = list(differences.index)
    delta = seed_interval(replicates, metric, names[0], paired, names[1]) if replicates is not None and paired else None
    out.update({f"{metric}_diff": float(differences.mean()) if paired else math.nan,
                f"{metric}_diff_std": float(differences.std(ddof=1)) if len(paired) > 1 else math.nan,
                f"{metric}_diff_ci95": t_half_width(differences),
                f"{metric}_diff_dev_se": delta.dev_se if delta else math.nan,
                f"{metric}_resolved": delta.resolved if delta else None})
    out.update(_interval_columns(f"{metric}_diff_", delta))
    return out


def _one_value(column: pd.Series):
    values = sorted({str(v) for v in column.dropna()})
    return ", ".join(values) if values else None


def summarise(runs: pd.DataFrame, rows: Mapping | None = None, replicates: Replicates | None = None) -> pd.DataFrame:
    """One row per experiment of ``runs`` (from :func:`collect_runs`), with the columns of
    :data:`SUMMARY_COLUMNS` (their comment above says what each is).

    ``rows`` is params.yaml's ``experiments``: each experiment's row of the report's Table 2
    (:func:`report_row`) and its parent. Rows follow ``rows``' order, then the other
    experiments alphabetically. The intervals that count the dev sample need ``replicates``
    (:func:`bootstrap_runs`); without them they are NaN and ``m_resolved`` is None."""
    rows = {name: dict(row or {}) for name, row in (rows or {}).items()}
    order = [e for e in rows if e in set(runs["experiment"])]
    order += sorted(set(runs["experiment"]) - set(order))
    groups = {e: runs[runs["experiment"] == e].set_index("seed") for e in set(runs["experiment"])}
    out = []
    for experiment in order:
        group, row = groups[experiment], rows.get(experiment, {})
        parent_name = row.get("parent")
        parent = groups.get(parent_name)
        label, report = report_row(row)
        line = {"experiment": experiment, "label": label, "parent": parent_name, "n_seeds": len(group),
                "n_paired": len(group.index.intersection(parent.index)) if parent is not None else 0}
        for i, metric in enumerate(METRICS):
            line.update(_metric_columns(metric, group, parent, replicates, (experiment, parent_name)))
            line[f"{metric}_report"] = report[i]
        line.update({key: group[key].max() for key in PARAM_COLUMNS})
        line.update(train_seconds=float(group["train_seconds"].mean()), backbone=_one_value(group["backbone"]),
                    profile=_one_value(group["profile"]))
        out.append(line)
    summary = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    summary[PARAM_COLUMNS] = summary[PARAM_COLUMNS].astype("Int64")
    resolved = [f"{m}_resolved" for m in METRICS]
    summary[resolved] = summary[resolved].astype("boolean")
    return summary


def interval_sources(summary: pd.DataFrame, metric: str = "mean") -> pd.DataFrame:
    """Per experiment, the half-widths of the 95% intervals of its score and of its Δ to the
    parent from the seeds alone (t-interval), from the dev sample alone (bootstrap with the
    seeds fixed) and from both: which source of uncertainty dominates each row."""
    frame = pd.DataFrame({"experiment": summary["experiment"],
                          "seeds": summary[f"{metric}_ci95"],
                          "dev_sample": (summary[f"{metric}_dev_hi"] - summary[f"{metric}_dev_lo"]) / 2,
                          "both": (summary[f"{metric}_hi"] - summary[f"{metric}_lo"]) / 2,
                          "delta_seeds": summary[f"{metric}_diff_ci95"],
                          "delta_dev_sample": (summary[f"{metric}_diff_dev_hi"] - summary[f"{metric}_diff_dev_lo"]) / 2,
                          "delta_both": (summary[f"{metric}_diff_hi"] - summary[f"{metric}_diff_lo"]) / 2})
    return frame.set_index("experiment")


# ---------------------------------------------------------------------------------------
# Writing the table

def _bracket(lo: float, hi: float, signed: bool = False) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return ""
    form = "{:+.3f}" if signed else "{:.3f}"
    return f" [{form.format(lo)}, {form.format(hi)}]"


def score_cell(r: Mapping, metric: str) -> str:
    """``mean ± std [lo, hi]``: over seeds, and the 95% interval (seeds and dev sample)."""
    mean, std = r[f"{metric}_mean"], r[f"{metric}_std"]
    if math.isnan(mean):
        return "–"
    text = f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"
    return text + _bracket(r[f"{metric}_lo"], r[f"{metric}_hi"])


def delta_cell(r: Mapping, metric: str) -> str:
    """``+Δ [lo, hi] resolved`` / ``not resolved``; ``(no interval)`` without one; ``–`` without a Δ."""
    diff = r[f"{metric}_diff"]
    if math.isnan(diff):
        return "–"
    flag = r[f"{metric}_resolved"]
    if flag is None or pd.isna(flag):
        return f"{diff:+.3f} (no interval)"
    text = f"{diff:+.3f}{_bracket(r[f'{metric}_diff_lo'], r[f'{metric}_diff_hi'], signed=True)}"
    return f"**{text} resolved**" if flag else f"{text} not resolved"


def _count(n) -> str:
    if pd.isna(n):
        return "–"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{int(n)}"


def _report_cell(r: Mapping) -> str:
    numbers = [r[f"{m}_report"] for m in METRICS]
    return "–" if all(math.isnan(x) for x in numbers) else " / ".join(f"{x:.3f}" for x in numbers)


def markdown_rows(header: list[str], body: list[list]) -> list[str]:
    """A Markdown table's lines: the header, its rule, a row per list of cells (``|`` escaped)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |" for cells in body)]


def table_markdown(summary: pd.DataFrame, caveat: str | None = None, not_run: Sequence[str] = ()) -> str:
    """The summary as a Markdown page: caveat(s), the scores table, the experiments of
    ``not_run`` (rows of the study this profile left out), the Δ-against-parent table."""
    backbones = {b for value in summary["backbone"].dropna() for b in str(value).split(", ")}
    notes = [caveat] if caveat else []
    if any(is_minilm(b) for b in backbones) and MINILM_CAVEAT not in notes:
        notes.insert(0, MINILM_CAVEAT)
    lines = ["# Results (dev set)", ""] + [f"> {note}\n" for note in notes]
    lines += ["Each score: mean ± std over seeds (ddof=1), then its 95% interval [lo, hi], which counts "
              "both the seeds and the dev sample (mtlib/study/stats.py); the report's single-run numbers "
              "(sst / para / sts / mean) in their own column.", ""]
    header = ["experiment", "report row", "seeds", "sst acc", "para acc", "sts r", "mean", "report",
              "task-specific params", "trainable params", "train s", "backbone", "profile"]
    body = [[r["experiment"], r["label"] if isinstance(r["label"], str) else "–", r["n_seeds"],
             *(score_cell(r, m) for m in METRICS), _report_cell(r), _count(r["params_task_specific"]),
             _count(r["params_trainable"]), "–" if math.isnan(r["train_seconds"]) else f"{r['train_seconds']:.0f}",
             r["backbone"] or "–", r["profile"] or "–"]
            for r in (row._asdict() for row in summary.itertuples(index=False))]
    lines += markdown_rows(header, body)
    if not_run:
        lines += ["", f"Rows of the study not run at this profile (to fit its time budget): {', '.join(not_run)}."]
    lines += ["", "## Difference to the row each builds on", "",
              "Δ: mean over the seeds both ran of (row − parent), then its 95% interval (seeds and dev "
              "sample, paired by seed and by dev example); **resolved** when the interval excludes 0.", ""]
    body = [[r["experiment"], r["parent"], r["n_paired"], *(delta_cell(r, m) for m in METRICS)]
            for r in (row._asdict() for row in summary.itertuples(index=False)) if isinstance(r["parent"], str)]
    lines += markdown_rows(["experiment", "parent", "paired seeds", "Δ sst", "Δ para", "Δ sts", "Δ mean"], body)
    return "\n".join(lines) + "\n"


def write_table(summary: pd.DataFrame, csv_path: str | Path, md_path: str | Path, caveat: str | None = None,
                not_run: Sequence[str] = ()) -> None:
    """Write results/table.csv and results/table.md (:func:`table_markdown`, which adds
    :data:`MINILM_CAVEAT` on its own whenever a row's backbone is all-MiniLM-L6-v2, so it cannot be forgotten)."""
    write_csv(csv_path, summary)
    write_text(md_path, table_markdown(summary, caveat, not_run))
