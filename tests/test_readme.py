"""mtlib.study.readme: README's generated blocks: its profile table is what params.yaml says, value by value,
and its headline results are the committed table's."""
import json
import math

import pandas as pd
import pytest
import yaml

from mtlib.config import merge
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


# ---------------------------------------------------------------------------------------
# The profile table

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _profile_cells(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| `{name}`"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_readme_profile_table_is_exactly_what_params_yaml_says():
    text = (ROOT / "README.md").read_text()
    assert readme.block(text, readme.PROFILES) == readme.profile_table(PARAMS), (
        "README's profile table is stale: run `python -m mtlib.study.readme --write README.md`")


def test_profile_table_reads_every_value_from_params():
    for name, override in PARAMS["profiles"].items():
        settings = merge(PARAMS["base"], override or {})
        cells = _profile_cells(readme.profile_table(PARAMS), name)
        assert cells[0].startswith(f"`{name}`") and ("(default)" in cells[0]) == (name == PARAMS["profile"])
        assert cells[1].startswith(f"`{settings['backbone']['name']}`")
        assert f"{settings['model']['pooling']} pooling, {settings['backbone']['max_length']} tokens" in cells[1]
        for column, key in ((2, "train_size"), (3, "validation_size"), (4, "dev_size")):
            for task, size in settings["data"][key].items():
                assert f"{task} {'all' if size is None else f'{size:,}'}" in cells[column]
        train = settings["train"]
        assert f"{train['epochs']} epochs x {train['batches_per_epoch']:,} micro-batches" in cells[5]
        assert cells[6].startswith("fp32" if train["amp"] == "none" else train["amp"])


def test_a_changed_profile_changes_the_table():
    changed = merge(PARAMS, {"profile": "paper", "profiles": {"cpu": {"data": {"train_size": {"para": 12345}},
                                                                      "train": {"epochs": 7, "amp": "none"}}}})
    cells = _profile_cells(readme.profile_table(changed), "cpu")
    assert "para 12,345" in cells[2] and cells[5].startswith("7 epochs") and cells[6].startswith("fp32")
    assert "(default)" in _profile_cells(readme.profile_table(changed), "paper")[0]
    assert readme.profile_table(changed) != readme.profile_table(PARAMS)


def test_readme_write_replaces_only_the_marked_tables(tmp_path):
    path = tmp_path / "README.md"
    start, end = "<!-- profile-table: generated -->", "<!-- end profile-table -->"
    path.write_text(f"# Title\n\nbefore\n{start}\n| old | table |\n{end}\nafter\n")
    args = ["--params", str(ROOT / "params.yaml"), "--table", str(tmp_path / "none.csv"),
            "--best-model", str(tmp_path / "none.json"), "--write", str(path)]
    assert readme.main(args) == 0  # no results table or best model yet: only the profile table is written
    text = path.read_text()
    assert text.startswith(f"# Title\n\nbefore\n{start}\n") and text.endswith(f"{end}\nafter\n")
    assert readme.block(text, "profile-table") == readme.profile_table(PARAMS) and "| old |" not in text
    path.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no profile-table markers"):
        readme.main(args)
    assert path.read_text() == "# no markers\n"


# ---------------------------------------------------------------------------------------
# The best model's block

def test_best_model_block_is_the_stages_scores_file(tmp_path):
    row = {"sst": 0.45, "para": 0.82, "sts": 0.86, "mean": 0.71}
    scores = {"split": "dev", "baseline": "frozen_cosine", "seed": 1,
              "rows": [{"row": "best_model", "label": "best model (cpu, 800 updates)", "seeds": 1, **row},
                       {"row": "report", "label": "the report's best", "seeds": None, **row}],
              "delta": {m: {"diff": 0.1, "lo": 0.05, "hi": 0.15, "resolved": True} for m in row}}
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    lines = readme.best_model_block(tmp_path / "scores.json").splitlines()
    assert lines[0] == "| model | seeds | sst acc | para acc | sts r | mean |"
    assert lines[3] == "| the report's best | – | 0.450 | 0.820 | 0.860 | 0.710 |"
    assert lines[-1].endswith("**sst +0.100 [+0.050, +0.150]**; **para +0.100 [+0.050, +0.150]**; "
                              "**sts +0.100 [+0.050, +0.150]**; **mean +0.100 [+0.050, +0.150]**.")


def test_readme_best_model_block_is_the_committed_scores():
    scores = ROOT / "results" / "best_model" / "scores.json"
    if not scores.exists():
        pytest.skip("results/best_model/scores.json is committed by the first canonical run with the best_model stage")
    assert readme.block((ROOT / "README.md").read_text(), readme.BEST) == readme.best_model_block(scores), (
        "README's best-model block is stale: run `python -m mtlib.study.readme --write README.md`")
