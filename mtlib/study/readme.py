"""README's generated blocks: text between ``<!-- NAME: ... -->`` and ``<!-- end NAME -->``.

Three blocks are generated so that README cannot drift from what it describes: the profile
table (:func:`profile_table`, from params.yaml: for every profile, what ``base <- profile``
gives), the headline results (:func:`headline`, from the committed results/table.csv) and
the best model's dev scores (:func:`best_model_block`, from the committed
results/best_model/scores.json, once the best_model stage has run).
``python -m mtlib.study.readme --write README.md`` rewrites them; tests/test_readme.py
checks README holds exactly them.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml

from mtlib.config import merge
from mtlib.io import write_text
from mtlib.record import PRECISIONS
from mtlib.study import best_model
from mtlib.study.report import _bracket  # the table's own interval format

PROFILES, RESULTS, BEST = "profile-table", "results-table", "best-model"


def _span(text: str, name: str, path: str) -> tuple[int, int]:
    """Where the block's content starts and ends in ``text``."""
    start = re.search(rf"<!-- {re.escape(name)}:[^\n]*-->\n?", text)
    end = text.find(f"<!-- end {name} -->")
    if start is None or end < start.end():
        raise ValueError(f"{path}: no {name} markers (<!-- {name}: ... --> ... <!-- end {name} -->)")
    return start.end(), end


def block(text: str, name: str, path: str = "README.md") -> str:
    """The content of block ``name`` as written in ``text``."""
    start, end = _span(text, name, path)
    return text[start:end].strip("\n")


def with_block(text: str, name: str, content: str, path: str = "README.md") -> str:
    """``text`` with block ``name``'s content replaced by ``content``."""
    start, end = _span(text, name, path)
    return text[:start] + content.strip("\n") + "\n" + text[end:]


def _sizes(sizes: Mapping) -> str:
    return ", ".join(f"{task} {'all' if n is None else f'{n:,}'}" for task, n in sizes.items())


def profile_row(name: str, settings: Mapping, default: bool = False) -> str:
    """One profile as a Markdown table row, from its resolved settings (base <- profile)."""
    backbone, data, train = settings["backbone"], settings["data"], settings["train"]
    model = f"`{backbone['name']}`" + ("" if backbone["pretrained"] else " (random weights)")
    model += f", {settings['model']['pooling']} pooling, {backbone['max_length']} tokens"
    budget = f"{train['epochs']} epochs x {train['batches_per_epoch']:,} micro-batches"
    if train["accumulation"] > 1:
        budget += f", {train['accumulation']} per update"
    budget += f"; heads pretrained up to {train['pretrain_args']['epochs']} epochs"
    precision = {**PRECISIONS, "auto": "auto (bf16 where native)"}.get(train["amp"], train["amp"])
    cells = [f"`{name}`" + (" (default)" if default else ""), model, _sizes(data["train_size"]),
             _sizes(data["validation_size"]), _sizes(data["dev_size"]), budget, f"{precision}, device {train['device']}"]
    return "| " + " | ".join(cells) + " |"


def profile_table(params: Mapping | str | Path = "params.yaml") -> str:
    """README's table of profiles: for each profile of params.yaml, what base <- profile
    gives for the backbone, the training, validation (held out of train) and dev data sizes
    (per task; 'all' for the whole file), the training budget and the precision; the
    top-level ``profile`` is marked default."""
    if not isinstance(params, Mapping):
        params = yaml.safe_load(Path(params).read_text())
    header = ["profile", "backbone", "training examples", "validation examples", "dev examples", "budget",
              "precision"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, override in params["profiles"].items():
        lines.append(profile_row(name, merge(params["base"], override or {}), name == params.get("profile")))
    return "\n".join(lines)


def _delta(row: pd.Series) -> str:
    if not isinstance(row["parent"], str) or math.isnan(row["mean_diff"]):
        return "–"
    text = f"{row['mean_diff']:+.3f}{_bracket(row['mean_diff_lo'], row['mean_diff_hi'], signed=True)}"
    return f"**{text}**" if row["mean_resolved"] else text


def headline(table_csv: str | Path) -> str:
    """The results table cut to what a reader scans first: per row, its seeds, the three dev
    scores (means over seeds), the mean with its 95% interval, the Δ of the mean to the row it
    builds on (bold where resolved) and the report's mean."""
    summary = pd.read_csv(table_csv)
    summary["mean_resolved"] = summary["mean_resolved"].eq(True)  # empty where no interval: not resolved
    header = ["experiment", "builds on", "seeds", "sst acc", "para acc", "sts r", "mean [95%]",
              "Δ mean [95%]", "report mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for _, r in summary.iterrows():
        report = "–" if math.isnan(r["mean_report"]) else f"{r['mean_report']:.3f}"
        mean = f"{r['mean_mean']:.3f}{_bracket(r['mean_lo'], r['mean_hi'])}"
        cells = [f"`{r['experiment']}`", f"`{r['parent']}`" if isinstance(r["parent"], str) else "–",
                 str(int(r["n_seeds"])), *(f"{r[f'{m}_mean']:.3f}" for m in ("sst", "para", "sts")),
                 mean, _delta(r), report]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_model_block(scores_json: str | Path) -> str:
    """The best model's dev scores beside the report's best, the frozen baseline and the table's
    best row, and its difference to the baseline, from the best_model stage's scores file
    (mtlib.study.best_model.readme_block)."""
    return best_model.readme_block(json.loads(Path(scores_json).read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlib.study.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--table", default="results/table.csv")
    parser.add_argument("--best-model", default="results/best_model/scores.json")
    parser.add_argument("--write", metavar="README",
                        help="rewrite this file's profile-table, results-table and best-model blocks")
    args = parser.parse_args(argv)
    blocks = {PROFILES: profile_table(args.params)}
    if Path(args.table).exists():
        blocks[RESULTS] = headline(args.table)
    if Path(args.best_model).exists():
        blocks[BEST] = best_model_block(args.best_model)
    if not args.write:
        print("\n\n".join(blocks.values()))
        return 0
    text = Path(args.write).read_text()
    for name, content in blocks.items():
        text = with_block(text, name, content, args.write)
    write_text(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
