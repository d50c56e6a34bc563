"""The results table: every run folder gathered, summarised over seeds, set beside the report.

``collect_runs`` reads ``results/runs/<experiment>/seed<k>/metrics.json``; ``summarise``
turns those rows into one row per experiment (mean, std and a 95% t-interval over seeds,
the report's number, a paired difference to the baseline); ``write_table`` writes
results/table.csv and results/table.md.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mtlib.io import write_csv, write_text
from mtlib.tasks import TASK_NAMES, metric_key

# Column name in our frames -> key in metrics.json's "dev".
METRICS = {**{task: metric_key(task) for task in TASK_NAMES}, "mean": "mean"}

# Table 2 (dev set) of Pritsky, Somerville and Huynh, "BERT: A Master of All Trades or
# Jack of None?", Stanford CS224N default final project report, 2023, as restated in
# ../shared/docs/STUDY.md. Row label -> (sst acc, para acc, sts Pearson r, mean). Each
# setting was run once.
REPORT_TABLE2: dict[str, tuple[float, float, float, float]] = {
    "random predictor": (0.197, 0.528, 0.021, 0.249),
    "BERT + embedding concat": (0.378, 0.693, 0.174, 0.415),
    "+ annealed schedule": (0.492, 0.764, 0.337, 0.531),
    "BaseModel: BERT + sentence concat": (0.465, 0.731, 0.749, 0.648),
    "BaseModel + annealed schedule": (0.499, 0.869, 0.856, 0.741),
    "+ 1 hidden layer": (0.504, 0.876, 0.862, 0.747),
    "+ data augmentation": (0.513, 0.879, 0.868, 0.753),
    "AdvancedModel (+ individual pretraining)": (0.520, 0.882, 0.872, 0.758),
    "BaseModel + 1 hidden + PCGrad": (0.484, 0.871, 0.832, 0.729),
    "BaseModel + 1 hidden + GradVac": (0.514, 0.853, 0.845, 0.737),
    "BaseModel + 1 hidden + GradVac + SMART": (0.509, 0.864, 0.846, 0.740),
    "BaseModel + 1 hidden + Gradient Compromise": (0.516, 0.834, 0.848, 0.733),
    "BaseModel + 1 hidden + RNN 128": (0.428, 0.841, 0.812, 0.694),
    "... + RNN 128 + [CLS]": (0.482, 0.849, 0.865, 0.732),
    "... + LSTM 128 + [CLS]": (0.491, 0.827, 0.858, 0.725),
    "... + LSTM 256 + [CLS]": (0.500, 0.842, 0.872, 0.738),
    "... + LSTM 256 (STS only) + [CLS]": (0.517, 0.860, 0.876, 0.751),
    "AdvancedModel + PAL from the start": (0.247, 0.640, 0.523, 0.470),
    "AdvancedModel + PAL after fine-tuning (best)": (0.524, 0.882, 0.876, 0.761),
    "+ SST adjustment matrix": (0.521, 0.882, 0.876, 0.760),
}
# The same report's best model on the test set (same source).
REPORT_BEST_TEST = ("AdvancedModel + PAL after fine-tuning (best)", (0.533, 0.883, 0.885, 0.767))

MINILM_CAVEAT = (
    "Caveat: these runs use all-MiniLM-L6-v2, not bert-base-uncased. MiniLM was trained "
    "contrastively on about a billion sentence pairs, among them Quora duplicate questions "
    "and NLI pairs, so it has in effect already seen the paraphrase task and, to a lesser "
    "degree, the similarity task. Its para (and to a lesser degree sts) scores are "
    "optimistic and must not be compared with the report's bert-base numbers."
)

RUN_COLUMNS = ["experiment", "seed", *METRICS, "best_update", "updates", "stopped_early",
               "train_seconds", "train_examples_per_second", "train_tokens_per_second",
               "eval_examples_per_second", "params_total", "params_trainable", "params_shared",
               "params_task_specific", *(f"params_{t}" for t in TASK_NAMES), "backbone", "profile",
               "path"]


PARAM_COLUMNS = ["params_total", "params_trainable", "params_task_specific"]

SUMMARY_COLUMNS = ["experiment", "label", "n_seeds", "n_paired",
                   *(f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci95", "report", "diff", "diff_ci95")),
                   *PARAM_COLUMNS, "train_seconds", "backbone", "profile"]


class MetricsError(ValueError):
    """A metrics.json that cannot be read as a run's metrics; the message names the file."""


def is_minilm(backbone: str) -> bool:
    """True for the packaged all-MiniLM-L6-v2 (alias ``minilm`` or its hub id), not ``tiny-random``."""
    name = str(backbone).lower()
    return name == "minilm" or "all-minilm" in name or "all_minilm" in name


# ---------------------------------------------------------------------------------------
# Reading run folders

def _number(value, path: Path, key: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetricsError(f"{path}: malformed metrics.json: {key} is {value!r}, not a number")
    return float(value)


def _seed_from_folder(folder: Path) -> int | None:
    match = re.fullmatch(r"seed(\d+)", folder.name)
    return int(match.group(1)) if match else None


def read_metrics(path: str | Path) -> dict:
    """One row of :func:`collect_runs` from a metrics.json; :class:`MetricsError` names the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MetricsError(f"{path}: malformed metrics.json: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("dev"), dict):
        raise MetricsError(f"{path}: malformed metrics.json: no 'dev' object of scores")
    params = data.get("params", {})
    if not isinstance(params, dict) or not isinstance(params.get("task_specific", {}), dict):
        raise MetricsError(f"{path}: malformed metrics.json: 'params' is not an object of counts")
    specific = params.get("task_specific", {})

    seed = data.get("seed")
    if seed is None:
        seed = _seed_from_folder(path.parent)
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not float(seed).is_integer():
        raise MetricsError(f"{path}: malformed metrics.json: seed is {seed!r}, not an integer "
                           "(and the folder is not named seed<k>)")
    row = {"experiment": str(data.get("experiment") or path.parent.parent.name), "seed": int(seed)}
    for column, key in METRICS.items():
        row[column] = _number(data["dev"].get(key), path, f"dev[{key!r}]")
    for key in ("best_update", "updates", "train_seconds", "train_examples_per_second",
                "train_tokens_per_second", "eval_examples_per_second"):
        row[key] = _number(data.get(key), path, key)
    row["stopped_early"] = data.get("stopped_early")
    for key in ("total", "trainable", "shared"):
        row[f"params_{key}"] = _number(params.get(key), path, f"params[{key!r}]")
    per_task = {t: _number(specific.get(t), path, f"params['task_specific'][{t!r}]") for t in TASK_NAMES}
    row["params_task_specific"] = float(np.nansum(list(per_task.values()))) if specific else math.nan
    row.update({f"params_{t}": n for t, n in per_task.items()})
    row.update(backbone=data.get("backbone"), profile=data.get("profile"), path=str(path.parent))
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
    rows = [read_metrics(p) for p in _run_files(root, "metrics.json")]
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    counts = [c for c in RUN_COLUMNS if c.startswith("params_")] + ["best_update", "updates"]
    runs[counts] = runs[counts].astype(float).astype("Int64")  # counts stay integers; NA where absent
    duplicated = runs[runs.duplicated(["experiment", "seed"], keep=False)]
    if len(duplicated):
        raise ValueError("two run folders claim the same experiment and seed: " + ", ".join(duplicated["path"]))
    return runs.sort_values(["experiment", "seed"], ignore_index=True)


def collect_histories(root: str | Path) -> pd.DataFrame:
    """Every history.csv under ``root`` in long form: ``experiment``, ``seed``, then its columns.

    Experiment and seed come from the folder layout ``<experiment>/seed<k>/history.csv``.
    """
    root = Path(root)
    frames = []
    for path in _run_files(root, "history.csv"):
        seed = _seed_from_folder(path.parent)
        if seed is None:
            raise ValueError(f"{path}: not inside a seed<k> folder")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: malformed history.csv: {error}") from error
        frames.append(frame.assign(experiment=path.parent.parent.name, seed=seed))
    if not frames:
        return pd.DataFrame(columns=["experiment", "seed"])
    long = pd.concat(frames, ignore_index=True)
    return long[["experiment", "seed", *[c for c in long.columns if c not in ("experiment", "seed")]]]


# ---------------------------------------------------------------------------------------
# Statistics over seeds

def t_half_width(values, confidence: float = 0.95) -> float:
    """Half-width of the two-sided t-interval for the mean: t_{n-1} s / sqrt(n); NaN for n < 2."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    n = len(values)
    if n < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))


def paired_difference(values: pd.Series, baseline: pd.Series, confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean of per-seed differences ``values - baseline`` over the seeds both have, its
    t-interval half-width (a paired t-interval), and the number of shared seeds.

    Both series are indexed by seed. Pairing removes the seed-to-seed variation the two
    experiments share (data order, initialisation), which an unpaired interval counts twice.
    """
    differences = (values - baseline).dropna()
    if differences.empty:
        return math.nan, math.nan, 0
    return float(differences.mean()), t_half_width(differences, confidence), len(differences)


def _one_value(column: pd.Series):
    values = sorted({str(v) for v in column.dropna()})
    return ", ".join(values) if values else None


def summarise(runs: pd.DataFrame, labels: dict[str, str] | None = None,
              baseline: str | None = "base_model") -> pd.DataFrame:
    """One row per experiment of ``runs`` (from :func:`collect_runs`).

    ``labels`` maps an experiment to its row of :data:`REPORT_TABLE2` (an unknown label is
    an error); experiments without one get NaN report numbers. Rows follow ``labels``'
    order, then the other experiments alphabetically. For each metric m in sst, para, sts,
    mean the columns are ``m_mean``, ``m_std`` (ddof=1), ``m_ci95`` (95% t-interval
    half-width; NaN for one seed), ``m_report``, and ``m_diff`` / ``m_diff_ci95``: the mean
    of per-seed differences to ``baseline`` over the seeds both share, with a paired 95%
    t-interval (NaN where no seed is shared or ``baseline`` did not run).
    """
    labels = dict(labels or {})
    unknown = sorted(label for label in labels.values() if label not in REPORT_TABLE2)
    if unknown:
        raise KeyError(f"labels {unknown} are not rows of REPORT_TABLE2; valid rows: {list(REPORT_TABLE2)}")
    order = [e for e in labels if e in set(runs["experiment"])]
    order += sorted(set(runs["experiment"]) - set(order))
    base = runs[runs["experiment"] == baseline].set_index("seed") if baseline is not None else None

    rows = []
    for experiment in order:
        group = runs[runs["experiment"] == experiment].set_index("seed")
        label = labels.get(experiment)
        report = REPORT_TABLE2.get(label, (math.nan,) * 4)
        row = {"experiment": experiment, "label": label, "n_seeds": len(group),
               "n_paired": len(group.index.intersection(base.index)) if base is not None else 0}
        for i, metric in enumerate(METRICS):
            values = group[metric].astype(float)
            row[f"{metric}_mean"] = float(values.mean()) if values.notna().any() else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if values.notna().sum() > 1 else math.nan
            row[f"{metric}_ci95"] = t_half_width(values)
            row[f"{metric}_report"] = report[i]
            if base is not None:
                diff, half, _ = paired_difference(values, base[metric].astype(float))
            else:
                diff, half = math.nan, math.nan
            row[f"{metric}_diff"], row[f"{metric}_diff_ci95"] = diff, half
        for key in PARAM_COLUMNS:
            row[key] = group[key].max()
        row["train_seconds"] = float(group["train_seconds"].mean())
        row["backbone"] = _one_value(group["backbone"])
        row["profile"] = _one_value(group["profile"])
        rows.append(row)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    summary[PARAM_COLUMNS] = summary[PARAM_COLUMNS].astype("Int64")
    return summary


# ---------------------------------------------------------------------------------------
# Writing the table

def _plus_minus(value: float, spread: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "–"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text if math.isnan(spread) else f"{text} ± {spread:.3f}"


def _count(n) -> str:
    if pd.isna(n):
        return "–"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{int(n)}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def table_markdown(summary: pd.DataFrame, caveat: str | None = None, baseline: str | None = "base_model") -> str:
    """The summary as a Markdown page: caveat(s), a legend line, then one table row per experiment."""
    backbones = {b for value in summary["backbone"].dropna() for b in str(value).split(", ")}
    notes = [caveat] if caveat else []
    if any(is_minilm(b) for b in backbones) and MINILM_CAVEAT not in notes:
        notes.insert(0, MINILM_CAVEAT)
    lines = ["# Results (dev set)", ""]
    lines += [f"> {note}\n" for note in notes]
    lines.append(
        "Each cell: mean ± std over seeds (ddof=1; 95% t-intervals are in table.csv); the "
        "report's single-run number in brackets. Δ mean: paired difference to "
        f"`{baseline}` over shared seeds ± 95% paired t-interval half-width.")
    lines.append("")
    header = ["experiment", "report row", "seeds", "sst acc", "para acc", "sts r", "mean",
              "Δ mean", "task-specific params", "trainable params", "train s", "backbone", "profile"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.itertuples(index=False):
        r = row._asdict()
        cells = [r["experiment"], r["label"] if isinstance(r["label"], str) else "–", r["n_seeds"]]
        for metric in METRICS:
            cell = _plus_minus(r[f"{metric}_mean"], r[f"{metric}_std"])
            if not math.isnan(r[f"{metric}_report"]):
                cell += f" [{r[f'{metric}_report']:.3f}]"
            cells.append(cell)
        cells.append(_plus_minus(r["mean_diff"], r["mean_diff_ci95"], signed=True))
        cells += [_count(r["params_task_specific"]), _count(r["params_trainable"]),
                  "–" if math.isnan(r["train_seconds"]) else f"{r['train_seconds']:.0f}",
                  r["backbone"] or "–", r["profile"] or "–"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(summary: pd.DataFrame, csv_path: str | Path, md_path: str | Path,
                caveat: str | None = None, baseline: str | None = "base_model") -> None:
    """Write results/table.csv and results/table.md atomically (temporary file, then os.replace).

    ``caveat`` is printed at the top of the Markdown; :data:`MINILM_CAVEAT` is added on its
    own whenever a row's backbone is all-MiniLM-L6-v2, so it cannot be forgotten.
    """
    write_csv(csv_path, summary)
    write_text(md_path, table_markdown(summary, caveat, baseline))
