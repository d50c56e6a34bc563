"""mtlib.study.provenance: the "what was run" header every page of the report opens with."""
import json
import math

import pandas as pd
import pytest
import yaml

from mtlib.study import provenance
from mtlib.study.provenance import MINILM_CAVEAT, backbone_caveat, backbone_head_start, config_header, runs_header
from mtlib.training.precision import describe_machine
from tests.helpers import ROOT

PARAMS = ROOT / "params.yaml"


def rows(header: str) -> dict:
    """The header's table as {fact: value}."""
    return {cells[1].strip(): cells[2].strip() for line in header.splitlines() if line.startswith("| ")
            for cells in [line.split("|")] if cells[1].strip()}


def test_is_minilm_knows_the_alias_and_the_hub_id():
    assert provenance.is_minilm("minilm") and provenance.is_minilm("sentence-transformers/all-MiniLM-L6-v2")
    assert not provenance.is_minilm("tiny-random") and not provenance.is_minilm("bert-base-uncased")


def test_config_header_states_the_run_and_the_caveat_only_for_minilm():
    smoke = config_header(PARAMS, "base_model", "smoke", "1,2")
    facts = rows(smoke)
    assert facts == {"profile": "smoke", "experiment": "base_model", "seeds": "1, 2", "backbone": "tiny-random",
                     "precision": "fp32", "machine": describe_machine("cpu", 1)}  # smoke: amp none, one thread
    assert MINILM_CAVEAT not in smoke
    cpu = config_header(PARAMS, "augmented", "cpu", 1, computes=False)
    assert rows(cpu)["backbone"] == "minilm" and rows(cpu)["seeds"] == "1"
    assert rows(cpu)["precision"].startswith("–") and MINILM_CAVEAT in cpu
    pipeline_seeds = ", ".join(map(str, yaml.safe_load(PARAMS.read_text())["pipeline"]["seeds"]))
    assert rows(config_header(PARAMS, "base_model", "smoke"))["seeds"] == pipeline_seeds  # none given: params.yaml's


def _metrics(folder, experiment, seed, **extra):
    path = folder / experiment / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"experiment": experiment, "seed": seed, "profile": "cpu", "backbone": "minilm",
                                "dev": {}, **extra}))
    return path


def test_runs_header_describes_the_runs_it_is_given(tmp_path):
    files = [_metrics(tmp_path, "base_model", 1, precision="bf16", machine="CPU A"),
             _metrics(tmp_path, "base_model", 2, precision="bf16", machine="CPU B"),
             _metrics(tmp_path, "random_predictor", 1, machine="CPU A")]  # the random predictor computes nothing
    header = runs_header(files)
    assert rows(header) == {"profile": "cpu", "experiment": "base_model, random_predictor", "seeds": "1, 2",
                            "backbone": "minilm", "precision": "bf16 autocast", "machine": "CPU A, CPU B"}
    assert MINILM_CAVEAT in header
    many = [_metrics(tmp_path, f"e{i}", 1) for i in range(provenance.MANY + 1)]
    assert rows(runs_header(many))["experiment"] == f"{provenance.MANY + 1} experiments"
    assert rows(runs_header(many))["machine"] == "not recorded"
    with pytest.raises(FileNotFoundError):
        runs_header([])


def _table(rows):
    return pd.DataFrame([{"experiment": e, "para_mean": p, "sts_mean": s} for e, p, s in rows])


def test_the_backbone_caveat_is_sized_from_the_table():
    table = _table([("frozen_cosine", 0.80, 0.86), ("base_model", 0.74, 0.80), ("hidden", 0.82, 0.85),
                    ("single_sst", math.nan, math.nan), ("random_predictor", 0.5, 0.0)])
    head = backbone_head_start(table, ["base_model", "hidden", "single_sst"])
    assert head.loc["para", "best_row"] == "hidden" and head.loc["para", "gain"] == pytest.approx(0.02)
    assert head.loc["para", "below"] == 1 and head.loc["para", "rows"] == 2  # single_sst has no para score
    assert head.loc["sts", "best_row"] == "hidden" and head.loc["sts", "gain"] == pytest.approx(-0.01)
    assert head.loc["sts", "below"] == 2
    text = backbone_caveat(head)
    assert "Quora accuracy: 0.800 untrained" in text and "`hidden`, 0.850 (-0.010); 2 of 2" in text


def test_the_backbone_caveat_without_the_frozen_row():
    table = _table([("base_model", 0.74, 0.80)])
    assert backbone_head_start(table, ["base_model"]).empty
    assert "not measured" in backbone_caveat(backbone_head_start(table, ["base_model"]))
    no_pairs = _table([("frozen_cosine", math.nan, math.nan), ("base_model", 0.74, 0.80)])
    assert backbone_head_start(no_pairs, ["base_model"]).empty


def test_config_header_names_every_experiment_a_notebook_runs():
    facts = rows(config_header(PARAMS, "base_model,augmented", "smoke", "1,2,3"))
    assert facts["experiment"] == "base_model, augmented"
    assert facts["seeds"] == "1, 2, 3"
