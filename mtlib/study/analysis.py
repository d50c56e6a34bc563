"""Data and error analysis for the notebooks: small frames in, small frames out.

Everything a notebook would otherwise copy-paste lives here, in the order of the sections
below. Nothing here builds a model or trains, so the results and error notebooks re-run in
seconds.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mtlib.data.augment import OPERATIONS, eda, length_filter
from mtlib.data.files import file_name, find_data_dir, load_split, read_task_file
from mtlib.tasks import TASKS
from mtlib.training.runs import read_run_config
from mtlib.training.samplers import SAMPLERS

#: Display names of the classification labels (the figures use the same, with line breaks).
LABEL_NAMES = {
    "sst": ("negative", "somewhat negative", "neutral", "somewhat positive", "positive"),
    "para": ("not duplicate", "duplicate"),
}
#: STS scores are binned into [0, 1), [1, 2), ..., [4, 5] wherever a "class" is needed.
STS_BINS = (0, 1, 2, 3, 4, 5)
AUGMENTED_ID = re.compile(r"-aug\d+$")  # ids mtlib.data.augment.balance_classes gives new rows


# ---------------------------------------------------------------------------------------
# Loading the profile's data

def training_frames(cfg, data_dir=None) -> dict[str, pd.DataFrame]:
    """``{task: frame}``: the training data as mtlib.data.prepare.prepare_data loads it for ``cfg``
    (the profile's sample, seeded by the training seed), before filtering or augmentation."""
    folder = find_data_dir(data_dir or cfg.data.dir)
    return {task: load_split(folder, task, "train", cfg.data.train_size[task], cfg.train.seed) for task in TASKS}


# ---------------------------------------------------------------------------------------
# Classes and lengths

def sts_bins(scores) -> pd.Categorical:
    """STS scores as the bins [0, 1), [1, 2), [2, 3), [3, 4), [4, 5] (5.0 falls in the last)."""
    scores = np.clip(np.asarray(scores, dtype=float), STS_BINS[0], STS_BINS[-1])
    index = np.minimum(np.floor(scores).astype(int), len(STS_BINS) - 2)
    names = [f"[{a}, {b})" for a, b in zip(STS_BINS[:-1], STS_BINS[1:])]
    names[-1] = names[-1].replace(")", "]")  # 5.0 falls in the last bin
    return pd.Categorical.from_codes(index, names)


def class_counts(labels, task: str) -> pd.Series:
    """Examples per class (SST 0..4, Quora 0..1, STS per score bin), every class present."""
    if not TASKS[task].integer_labels:
        return pd.Series(sts_bins(labels)).value_counts(sort=False).rename_axis("class")
    counts = pd.Series(np.asarray(labels, dtype=int)).value_counts()
    return counts.reindex(range(len(LABEL_NAMES[task])), fill_value=0).rename_axis("class")


def class_table(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (task, class): count and share of the task's examples."""
    rows = []
    for task, frame in frames.items():
        counts = class_counts(frame[TASKS[task].label_column], task)
        names = LABEL_NAMES.get(task, counts.index)
        for name, count in zip(names, counts):
            rows.append({"task": task, "class": str(name), "count": int(count), "share": count / counts.sum()})
    return pd.DataFrame(rows, columns=["task", "class", "count", "share"])


def length_summary(lengths: Mapping[str, Sequence[int]], percentile: float = 98.0) -> pd.DataFrame:
    """Per task: examples, mean, median, the ``percentile``-th percentile and the maximum length."""
    rows = []
    for task, values in lengths.items():
        values = np.asarray(values, dtype=float)
        rows.append({"task": task, "n": len(values), "mean": values.mean(), "median": float(np.median(values)),
                     f"p{percentile:g}": float(np.percentile(values, percentile)), "max": int(values.max())})
    return pd.DataFrame(rows).set_index("task")


def length_filter_counts(lengths: Mapping[str, Sequence[int]], fraction: float) -> pd.DataFrame:
    """What mtlib.data.augment.length_filter does to each task: rows, dropped, kept, and the
    longest kept and shortest dropped length (NaN when nothing is dropped)."""
    rows = []
    for task, values in lengths.items():
        values = np.asarray(values)
        kept, dropped = length_filter(pd.DataFrame({"length": values}), values, fraction)
        gone = np.setdiff1d(np.arange(len(values)), kept.index.to_numpy())
        rows.append({"task": task, "rows": len(values), "dropped": dropped, "kept": len(kept),
                     "longest_kept": int(kept["length"].max()) if len(kept) else math.nan,
                     "shortest_dropped": int(values[gone].min()) if len(gone) else math.nan})
    return pd.DataFrame(rows).set_index("task")


# ---------------------------------------------------------------------------------------
# Augmentation

def is_augmented(ids) -> np.ndarray:
    """True for the rows EDA balancing added (ids ``<source id>-aug<k>``)."""
    return np.array([bool(AUGMENTED_ID.search(str(i))) for i in ids], dtype=bool)


def augmentation_counts(ids, labels, task: str) -> pd.DataFrame:
    """Per class (index: the label, 0..k-1): its name, examples before balancing (the
    original rows), after, and added."""
    labels = np.asarray(labels)
    added = is_augmented(ids)
    frame = pd.DataFrame({"before": class_counts(labels[~added], task), "after": class_counts(labels, task)})
    frame["added"] = frame["after"] - frame["before"]
    frame.insert(0, "name", list(LABEL_NAMES[task]) if task in LABEL_NAMES else [str(i) for i in frame.index])
    return frame


def data_counts_table(counts: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """mtlib.training.loop.prepare_data's ``counts`` ({step: {task: rows}}) as a tasks x steps table."""
    return pd.DataFrame(counts).astype("Int64").rename_axis("task")


def eda_examples(sentences: Sequence[str], seed: int, alpha: float = 0.1, nltk_data=None) -> pd.DataFrame:
    """Each EDA operation applied once to each sentence (seeded): sentence, operation, result."""
    rows = [{"sentence": s, "operation": op.replace("_", " "), "augmented": eda(s, seed + i, alpha, op, nltk_data)}
            for i, s in enumerate(sentences) for op in OPERATIONS]
    return pd.DataFrame(rows, columns=["sentence", "operation", "augmented"])


# ---------------------------------------------------------------------------------------
# Samplers

def sampler_probabilities(sizes: Mapping[str, int], epochs: int,
                          samplers: Sequence[str] | None = None) -> dict[str, dict[int, dict[str, float]]]:
    """``{sampler: {epoch: {task: P(task)}}}`` for every sampler of mtlib.training.samplers.SAMPLERS
    (or those named), epochs 1..``epochs``: the input of figures.plot_sampler_probabilities."""
    names = list(samplers) if samplers is not None else list(SAMPLERS)
    return {name: {e: SAMPLERS[name].probabilities(dict(sizes), e, epochs) for e in range(1, epochs + 1)} for name in names}


def sampler_table(probabilities: Mapping[str, Mapping[int, Mapping[str, float]]]) -> pd.DataFrame:
    """The same as a (sampler, epoch) x task table."""
    frames = {name: pd.DataFrame(per_epoch).T for name, per_epoch in probabilities.items()}
    return pd.concat(frames, names=["sampler", "epoch"])


# ---------------------------------------------------------------------------------------
# Head pretraining

def pretrain_frame(history: Mapping[str, Sequence[Mapping]]) -> pd.DataFrame:
    """mtlib.training.pretrain.pretrain_heads' history as one long frame:
    task, epoch, loss, metric (its name, e.g. sst/acc), score (its value), kept (the epoch the
    head was kept at), seconds."""
    rows = []
    for task, epochs in history.items():
        metric = f"{task}/{TASKS[task].metric}"
        for row in epochs:
            rows.append({"task": task, "epoch": int(row["epoch"]), "loss": float(row["loss"]), "metric": metric,
                         "score": float(row[metric]), "kept": bool(row.get("kept", False)),
                         "seconds": float(row["seconds"])})
    return pd.DataFrame(rows, columns=["task", "epoch", "loss", "metric", "score", "kept", "seconds"])


# ---------------------------------------------------------------------------------------
# Runs

def best_experiment(runs: pd.DataFrame, metric: str = "mean", exclude: Sequence[str] = ()) -> str:
    """The experiment with the best ``metric`` averaged over its seeds (mtlib.study.report.collect_runs'
    frame); runs without the metric (single-task runs have no dev mean) are skipped."""
    means = runs[~runs["experiment"].isin(exclude)].groupby("experiment")[metric].mean().dropna()
    if means.empty:
        raise ValueError(f"no run has a dev {metric!r} to choose by")
    return str(means.idxmax())


def curve_groups(rows: Mapping[str, Mapping], ran: Sequence[str]) -> dict[str, list[str]]:
    """``{group: [experiment, ...]}``, one figure of learning curves per group that
    params.yaml's ``experiments`` give (rows with no group have no curve: the random
    predictor does not train, single-task runs have no dev mean). Only experiments in
    ``ran`` count; each group lists its members in ``rows`` order, preceded by the parents
    they build on that ran in another group, so every curve is drawn beside its reference."""
    groups: dict[str, list[str]] = {}
    for name, row in rows.items():
        if name in ran and row.get("group"):
            groups.setdefault(row["group"], []).append(name)
    for group, members in groups.items():
        parents = [rows[m].get("parent") for m in members]
        extra = [p for p in dict.fromkeys(parents) if p and p in ran and p not in members and rows.get(p, {}).get("group")]
        groups[group] = extra + members
    return groups


def select_experiments(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` (e.g. collect_histories') whose experiment is in ``names``, in
    that order (figures draw experiments in the order they come)."""
    rank = {name: i for i, name in enumerate(names)}
    rows = frame[frame["experiment"].isin(rank)]
    return rows.iloc[np.argsort(rows["experiment"].map(rank).to_numpy(), kind="stable")]


# ---------------------------------------------------------------------------------------
# Errors

def read_predictions(run_dir, task: str, split: str = "dev", data_dir=None) -> pd.DataFrame:
    """A run's ``predictions/<task>-<split>.csv`` joined with the task file's text and labels.

    Columns: id, the text column(s), label, prediction, probability (the model's probability
    of the predicted class, where the run stored it: classification dev files), words
    (whitespace words of the input, both sentences for a pair), correct (classification)
    and abs_error. The data
    folder is ``data_dir``, else the run's config.yaml ``data.dir``, else the usual search.
    """
    run_dir, spec = Path(run_dir), TASKS[task]
    if data_dir is None and (run_dir / "config.yaml").exists():
        data_dir = read_run_config(run_dir).data.dir
    path = run_dir / "predictions" / f"{task}-{split}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no predictions for {task} {split}")
    predictions = pd.read_csv(path, dtype={"id": str}).rename(columns={spec.label_column: "prediction"})
    split_file = {"test": "test-student"}.get(split, split)
    text = read_task_file(find_data_dir(data_dir) / file_name(task, split_file), task)
    frame = predictions.merge(text.rename(columns={spec.label_column: "label"}), on="id", how="left",
                              validate="one_to_one")
    missing = frame[list(spec.text_columns)].isna().any(axis=1)
    if missing.any():
        raise ValueError(f"{path}: {int(missing.sum())} predicted id(s) are not in the {task} {split} file, "
                         f"e.g. {frame.loc[missing, 'id'].iloc[0]!r}")
    if "label" not in frame:  # an unlabelled (test-student) file
        frame["label"] = np.nan
    confidence = ["probability"] if "probability" in frame else []  # runs scored before it was stored have none
    frame = frame[["id", *spec.text_columns, "label", "prediction", *confidence]].copy()
    frame["words"] = sum(frame[c].str.split().str.len() for c in spec.text_columns)
    if frame["label"].notna().all():
        if spec.integer_labels:
            frame["label"] = frame["label"].astype(int)
            frame["correct"] = frame["label"] == frame["prediction"]
        frame["abs_error"] = (frame["label"] - frame["prediction"]).abs()
    return frame


def with_label_names(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """``label`` and ``prediction`` shown as class names (SST, Quora); STS is left as is."""
    if task not in LABEL_NAMES:
        return frame
    names = dict(enumerate(LABEL_NAMES[task]))
    return frame.assign(label=frame["label"].map(names), prediction=frame["prediction"].map(names))


def worst_errors(frame: pd.DataFrame, task: str, n: int = 5) -> pd.DataFrame:
    """The ``n`` worst errors of :func:`read_predictions`' frame, ranked by a real margin:
    misclassified rows by the model's probability of the wrong class it predicted (the
    most confident mistakes first; then by class distance, SST's "positive" for "negative"
    being worse than for "somewhat negative"), STS rows by |prediction - gold|. Runs that
    stored no probability fall back to class distance alone, which ties; ties by id so the
    choice is deterministic."""
    spec = TASKS[task]
    rows = frame[~frame["correct"]] if spec.integer_labels else frame
    keys = (["probability"] if spec.integer_labels and "probability" in rows else []) + ["abs_error"]
    rows = rows.sort_values([*keys, "id"], ascending=[False] * len(keys) + [True], kind="stable")
    columns = [*spec.text_columns, "label", "prediction", *(["probability"] if "probability" in keys else []),
               "abs_error", "id"]
    return rows.head(n)[columns].reset_index(drop=True)


#: Words that negate (SST's tokenisation splits "don't" into "do n't").
NEGATION = re.compile(r"(?i)(?:\b(?:not|no|never|nothing|none|nobody|nowhere|neither|nor|without|cannot|"
                      r"hardly|barely|scarcely)\b|n't\b)")
#: An STS prediction this far (or farther) from gold, on the 0-5 scale, counts as an error.
STS_ERROR = 1.0
#: A classification error made with at least this probability is a label-noise candidate;
#: an STS prediction this far from gold (over half the scale) is one.
NOISE_PROBABILITY, NOISE_STS = 0.9, 2.5
#: Inputs at or above this quantile of the task's word counts are "long".
LONG_QUANTILE = 0.75


def is_error(frame: pd.DataFrame, task: str) -> pd.Series:
    """Wrong class (classification), or |prediction - gold| >= :data:`STS_ERROR` (STS)."""
    return ~frame["correct"] if TASKS[task].integer_labels else frame["abs_error"] >= STS_ERROR


def error_kinds(frame: pd.DataFrame, task: str, long_quantile: float = LONG_QUANTILE,
                noise_probability: float = NOISE_PROBABILITY, noise_sts: float = NOISE_STS) -> pd.DataFrame:
    """One boolean column per kind, for every row of :func:`read_predictions`' frame, each a rule:

    - ``negation``: a negating word (:data:`NEGATION`: not, no, never, nothing, n't, ...) in
      the input (either sentence of a pair);
    - ``long``: at least the ``long_quantile`` quantile of the task's input lengths in words;
    - ``label_noise``: an error the model made with probability >= ``noise_probability``
      (classification; False where no probability was stored), or an STS prediction
      ``noise_sts`` or more from gold: candidates whose gold label is worth checking by hand.
    """
    spec = TASKS[task]
    text = frame[list(spec.text_columns)].fillna("").agg(" ".join, axis=1)
    wrong = is_error(frame, task)
    if spec.integer_labels:
        confident = frame["probability"] >= noise_probability if "probability" in frame else False
        noise = wrong & confident
    else:
        noise = frame["abs_error"] >= noise_sts
    long = frame["words"] >= frame["words"].quantile(long_quantile)
    return pd.DataFrame({"negation": text.str.contains(NEGATION), "long": long,
                         "label_noise": pd.Series(noise, index=frame.index).astype(bool)}, index=frame.index)


KIND_RULES = {"negation": "a negating word (not, no, never, n't, ...) in the input",
              "long": f"input length at or above the {LONG_QUANTILE:.0%} quantile of the task's words",
              "label_noise": f"an error made with probability >= {NOISE_PROBABILITY} (STS: {NOISE_STS} or more off)"}


def error_kind_counts(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per kind (:func:`error_kinds`): its rule, the examples it marks, the errors among them
    (:func:`is_error`), their share of all errors, and the error rate with and without it:
    whether the kind is harder than the rest."""
    kinds, wrong = error_kinds(frame, task), is_error(frame, task)
    rows = {}
    for kind, marked in kinds.items():
        rows[kind] = {"rule": KIND_RULES[kind], "examples": int(marked.sum()), "errors": int((wrong & marked).sum()),
                      "share_of_errors": float((wrong & marked).sum() / wrong.sum()) if wrong.any() else math.nan,
                      "error_rate_with": float(wrong[marked].mean()) if marked.any() else math.nan,
                      "error_rate_without": float(wrong[~marked].mean()) if (~marked).any() else math.nan}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("kind")


def _group_scores(group: pd.DataFrame, task: str) -> dict:
    if TASKS[task].integer_labels:
        return {"n": len(group), "accuracy": float(group["correct"].mean()) if len(group) else math.nan,
                "errors": int((~group["correct"]).sum())}
    pearson = TASKS[task].score(group["prediction"], group["label"]) if len(group) > 1 else math.nan
    return {"n": len(group), "pearson": pearson, "mean_abs_error": float(group["abs_error"].mean())}


def length_buckets(words, buckets: int = 4) -> pd.Categorical:
    """Whole-word buckets of about equal size from the quantiles of ``words``, named
    ``"a–b words"`` (both ends included); fewer buckets when many lengths tie."""
    words = np.asarray(words, dtype=int)
    quantiles = np.floor(np.quantile(words, np.linspace(0, 1, buckets + 1))).astype(int)
    edges = np.unique(np.concatenate([[words.min() - 1], quantiles[1:], [words.max()]]))
    labels = [f"{a + 1}–{b} words" for a, b in zip(edges[:-1], edges[1:])]
    return pd.cut(words, edges, labels=labels)


def errors_by_length(frame: pd.DataFrame, task: str, buckets: int = 4) -> pd.DataFrame:
    """:func:`read_predictions`' rows in (about) equally populated buckets of input length
    (:func:`length_buckets`): accuracy and errors per bucket, or Pearson r and mean absolute
    error for STS."""
    groups = frame.groupby(length_buckets(frame["words"], buckets), observed=False)
    rows = {name: _group_scores(group, task) for name, group in groups}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("length")


def errors_by_class(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per true class (STS: per score bin) of :func:`read_predictions`' rows: accuracy, errors
    and the most frequent wrong prediction (ties: the lowest class) with its share of the
    class; for STS the mean absolute error, the mean label and the mean prediction."""
    if not TASKS[task].integer_labels:
        bins = sts_bins(frame["label"])
        rows = {name: {"n": len(group), "mean_abs_error": float(group["abs_error"].mean()),
                       "mean_label": float(group["label"].mean()) if len(group) else math.nan,
                       "mean_prediction": float(group["prediction"].mean()) if len(group) else math.nan}
                for name, group in frame.groupby(bins, observed=False)}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("class")
    names = LABEL_NAMES[task]
    rows = {}
    for label, name in enumerate(names):
        group = frame[frame["label"] == label]
        wrong = group.loc[~group["correct"], "prediction"].value_counts().sort_index()
        top = int(wrong.idxmax()) if len(wrong) else None  # ties: the lowest class
        rows[name] = {**_group_scores(group, task), "most_common_wrong": names[top] if len(wrong) else "–",
                      "its_share": float(wrong[top] / len(group)) if len(wrong) else 0.0}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("class")


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], n_classes: int = 5) -> np.ndarray:
    """Row-normalised confusion matrix: entry (i, j) = P(predicted j | true i); an empty row stays 0."""
    labels, predictions = np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)
    if labels.shape != predictions.shape:
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (labels, predictions), 1)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def most_confused(labels, predictions, task: str = "sst") -> tuple[str, str, float]:
    """The (true class, predicted class, share of the true class) of the largest
    off-diagonal entry of the row-normalised confusion matrix."""
    names = LABEL_NAMES[task]
    rates = confusion_matrix(labels, predictions, len(names))
    np.fill_diagonal(rates, -1)
    i, j = np.unravel_index(int(np.argmax(rates)), rates.shape)
    return names[i], names[j], float(rates[i, j])
