"""mtlib.study.profiles: README's profile table is what params.yaml says, value by value."""
from __future__ import annotations

import pytest
import yaml

from mtlib.config import merge
from mtlib.study import profiles
from mtlib.study import readme as readme_blocks
from tests.helpers import ROOT

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _profile_cells(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| `{name}`"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_readme_profile_table_is_exactly_what_params_yaml_says():
    readme = (ROOT / "README.md").read_text()
    assert readme_blocks.block(readme, readme_blocks.PROFILES) == profiles.profile_table(PARAMS), (
        "README's profile table is stale: run `python -m mtlib.study.readme --write README.md`")


def test_profile_table_reads_every_value_from_params():
    for name, override in PARAMS["profiles"].items():
        settings = merge(PARAMS["base"], override or {})
        cells = _profile_cells(profiles.profile_table(PARAMS), name)
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
    cells = _profile_cells(profiles.profile_table(changed), "cpu")
    assert "para 12,345" in cells[2] and cells[5].startswith("7 epochs") and cells[6].startswith("fp32")
    assert "(default)" in _profile_cells(profiles.profile_table(changed), "paper")[0]
    assert profiles.profile_table(changed) != profiles.profile_table(PARAMS)


def test_readme_write_replaces_only_the_marked_tables(tmp_path):
    readme = tmp_path / "README.md"
    start, end = "<!-- profile-table: generated -->", "<!-- end profile-table -->"
    readme.write_text(f"# Title\n\nbefore\n{start}\n| old | table |\n{end}\nafter\n")
    args = ["--params", str(ROOT / "params.yaml"), "--table", str(tmp_path / "none.csv"), "--write", str(readme)]
    assert readme_blocks.main(args) == 0  # no results table yet: only the profile table is written
    text = readme.read_text()
    assert text.startswith(f"# Title\n\nbefore\n{start}\n") and text.endswith(f"{end}\nafter\n")
    assert readme_blocks.block(text, "profile-table") == profiles.profile_table(PARAMS) and "| old |" not in text
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no profile-table markers"):
        readme_blocks.main(args)
    assert readme.read_text() == "# no markers\n"
