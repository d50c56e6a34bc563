"""README's generated blocks: text between ``<!-- NAME: ... -->`` and ``<!-- end NAME -->``.

Two blocks are generated so that README cannot drift from what it describes: the profile
table (mtlib.study.profiles.profile_table, from params.yaml) and the headline results
(:func:`headline`, from the committed results/table.csv).
``python -m mtlib.study.readme --write README.md`` rewrites both; tests/test_profiles.py
and tests/test_readme.py check README holds exactly them.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

from mtlib.io import write_text
from mtlib.study.profiles import profile_table
from mtlib.study.report import _bracket  # the table's own interval format

PROFILES, RESULTS = "profile-table", "results-table"


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


def _score(row: pd.Series, metric: str) -> str:
    return f"{row[f'{metric}_mean']:.3f}{_bracket(row[f'{metric}_lo'], row[f'{metric}_hi'])}"


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
        cells = [f"`{r['experiment']}`", f"`{r['parent']}`" if isinstance(r["parent"], str) else "–",
                 str(int(r["n_seeds"])), *(f"{r[f'{m}_mean']:.3f}" for m in ("sst", "para", "sts")),
                 _score(r, "mean"), _delta(r), report]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlib.study.readme", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--table", default="results/table.csv")
    parser.add_argument("--write", metavar="README", help="rewrite this file's profile-table and results-table blocks")
    args = parser.parse_args(argv)
    blocks = {PROFILES: profile_table(args.params)}
    if Path(args.table).exists():
        blocks[RESULTS] = headline(args.table)
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
