"""mtlib.study.readme: README's generated blocks, and its headline results are the committed table's."""
import math

import pandas as pd
import pytest

from mtlib.study import readme
from mtlib.study.report import SUMMARY_COLUMNS
from tests.helpers import ROOT


def test_a_block_is_replaced_between_its_markers_and_nothing_else_changes():
    text = "# T\nbefore\n<!-- results-table: note -->\n| old |\n<!-- end results-table -->\nafter\n"
    new = readme.with_block(text, "results-table", "| new |")
    assert new == "# T\nbefore\n<!-- results-table: note -->\n| new |\n<!-- end results-table -->\nafter\n"
    assert readme.block(new, "results-table") == "| new |"
    with pytest.raises(ValueError, match="NOTES.md: no results-table markers"):
        readme.block("# no markers\n", "results-table", "NOTES.md")


def summary_row(experiment, parent, mean, lo, hi, diff=math.nan, diff_lo=math.nan, diff_hi=math.nan,
                resolved=None, report=math.nan):
    row = dict.fromkeys(SUMMARY_COLUMNS, math.nan)
    row.update(experiment=experiment, parent=parent, n_seeds=6, sst_mean=0.4, para_mean=0.75, sts_mean=0.8,
               mean_mean=mean, mean_lo=lo, mean_hi=hi, mean_diff=diff, mean_diff_lo=diff_lo,
               mean_diff_hi=diff_hi, mean_resolved=resolved, mean_report=report)
    return row


def test_headline_rows_show_interval_delta_and_resolved_in_bold(tmp_path):
    rows = [summary_row("head_only", None, 0.5, 0.49, 0.51),
            summary_row("base_model", "head_only", 0.61, 0.6, 0.62, 0.11, 0.1, 0.12, True, 0.58),
            summary_row("base_annealed", "base_model", 0.612, 0.6, 0.63, 0.002, -0.01, 0.014, False)]
    pd.DataFrame(rows, columns=SUMMARY_COLUMNS).to_csv(tmp_path / "table.csv", index=False)
    lines = readme.headline(tmp_path / "table.csv").splitlines()
    assert lines[2] == "| `head_only` | – | 6 | 0.400 | 0.750 | 0.800 | 0.500 [0.490, 0.510] | – | – |"
    assert lines[3].endswith("| 0.610 [0.600, 0.620] | **+0.110 [+0.100, +0.120]** | 0.580 |")
    assert lines[4].endswith("| +0.002 [-0.010, +0.014] | – |")


def test_readme_headline_is_exactly_the_committed_table():
    table = ROOT / "results" / "table.csv"
    assert table.exists(), "results/table.csv is the published study: commit the canonical run's"
    assert readme.block((ROOT / "README.md").read_text(), readme.RESULTS) == readme.headline(table), (
        "README's headline results are stale: run `python -m mtlib.study.readme --write README.md`")
