"""mtlib.study.best_model and `mtlib train --config`: the choice on validation is a function of the
runs, the trained configuration is the chosen one at the stage's budget, the config file retrains
it, and the submission files hold exactly the test files' ids in the course's format."""
import json
import random

import pandas as pd
import pytest
import yaml

from mtlib.cli import main
from mtlib.config import ConfigError, load_config, load_config_file
from mtlib.data.files import read_task_file
from mtlib.record import RunRecord
from mtlib.study import best_model
from mtlib.training.loop import learning_rate
from mtlib.training.plans import evaluation_interval, updates_per_epoch
from tests.helpers import ROOT, write_task_files

PARAMS = ROOT / "params.yaml"


def record(experiment, seed, sst, para, sts, updates=20):
    validation = {"sst/acc": sst, "para/acc": para, "sts/pearson": sts, "mean": (sst + para + sts) / 3}
    return RunRecord(dev=validation, validation=validation, experiment=experiment, seed=seed, updates=updates)


def made_up_runs(sst_gain):
    """Three rows over four seeds: embedding_cosine best on the mean, hidden ahead on sst by
    ``sst_gain`` (give or take 0.002 by seed) and on para, base_model behind everywhere."""
    runs = []
    for seed, wobble in zip((1, 2, 3, 4), (0.002, -0.002, 0.001, -0.001)):
        runs += [record("embedding_cosine", seed, 0.40 + wobble, 0.80, 0.85 + wobble),
                 record("hidden", seed, 0.40 + sst_gain - wobble, 0.82, 0.60),
                 record("base_model", seed, 0.38, 0.70, 0.55)]
    return runs


@pytest.fixture(scope="module")
def configs():
    return best_model.candidates(PARAMS, "smoke", made_up_runs(sst_gain=0.03))


def test_the_best_validation_mean_is_the_base_and_a_clearly_better_sst_head_is_taken(configs):
    runs = made_up_runs(sst_gain=0.03)
    choice = best_model.choose(best_model.validation_frame(runs), configs)
    assert choice.base == "embedding_cosine"
    # sst reads one sentence: hidden's MLP head comes over; para's linear head reads a sentence pair
    # (hidden encodes pairs as one sequence), so the base's cosine head stays, however para validated
    assert choice.heads == {"sst": "hidden", "para": "embedding_cosine", "sts": "embedding_cosine"}
    assert choice.overrides == {"model": {"head_overrides": {"sst": {
        "kind": "mlp", "hidden_layers": 1, "hidden_size": None, "activation": "relu", "dropout": 0.1,
        "rnn_size": 128, "with_cls": False}}}}
    assert any(line.startswith("para: hidden validated best") and "encodes the pair otherwise" in line
               for line in choice.reasons)
    # the same runs in another order give the same choice
    shuffled = made_up_runs(sst_gain=0.03)
    random.Random(0).shuffle(shuffled)
    again = best_model.choose(best_model.validation_frame(shuffled), configs)
    assert (again.base, again.heads, again.overrides, again.reasons) == (
        choice.base, choice.heads, choice.overrides, choice.reasons)


def test_a_gain_the_seeds_do_not_resolve_keeps_the_base_head(configs):
    choice = best_model.choose(best_model.validation_frame(made_up_runs(sst_gain=0.001)), configs)
    assert choice.heads["sst"] == "embedding_cosine" and choice.overrides == {}
    assert any(line.startswith("sst: hidden validated best") and "not clear" in line for line in choice.reasons)


def test_ties_go_to_the_row_params_yaml_lists_first_and_rows_that_cannot_be_chosen_are_not(configs):
    same = [record(name, seed, 0.4, 0.8, 0.8) for name in ("hidden", "embedding_cosine") for seed in (1, 2)]
    assert best_model.choose(best_model.validation_frame(same), configs).base == "embedding_cosine"
    runs = [record("frozen_cosine", 1, 0.4, 0.8, 0.8, updates=0), record("pal_after", 1, 0.4, 0.8, 0.8),
            record("single_sst", 1, 0.4, 0.8, 0.8), record("base_model", 1, 0.4, 0.8, 0.8)]
    assert set(best_model.candidates(PARAMS, "smoke", runs)) == {"base_model"}  # no update, starts from a run, one task
    with pytest.raises(ValueError, match="no fine-tuned row"):
        best_model.choose(best_model.validation_frame([record("frozen_cosine", 1, 0.4, 0.8, 0.8)]), configs)


def settings(**changes):
    entry = {"budget_factor": 10, "evaluations": 5, "seed": 3, "baseline": "frozen_cosine",
             "set": {"train": {"schedule": "linear", "warmup_steps": 2}}}
    return best_model.Settings(**{**entry, **changes})


def test_the_trained_config_is_the_choice_at_the_stages_budget_and_its_file_loads_back(configs, tmp_path):
    choice = best_model.choose(best_model.validation_frame(made_up_runs(sst_gain=0.03)), configs)
    cfg = best_model.best_config(PARAMS, "smoke", choice, settings())
    row = load_config(PARAMS, "embedding_cosine", "smoke", 3)
    assert cfg.experiment == "best_model" and cfg.train.seed == 3
    assert cfg.train.batches_per_epoch == 10 * row.train.batches_per_epoch
    assert cfg.train.eval_every == row.train.epochs * cfg.train.batches_per_epoch // 5
    assert (cfg.train.schedule, cfg.train.warmup_steps, cfg.train.keep_checkpoint, cfg.train.predict_test) == (
        "linear", 2, True, True)
    assert cfg.model.head_for("sst").kind == "mlp" and cfg.model.head_for("sts").kind == "cosine"
    assert cfg.model.pair_mode == "embedding" and cfg.train.sampler == row.train.sampler
    best_model.write_config(tmp_path / "config.yaml", cfg)
    assert load_config_file(tmp_path / "config.yaml") == cfg


def test_the_committed_stage_keeps_the_final_weights_of_a_decayed_run(configs):
    """params.yaml's best_model on the cpu profile: one validation, at the last update (the loop
    keeps the best-validated weights, so with one point those are the final ones), and a
    learning rate that decays to zero by then after a short warm-up."""
    choice = best_model.choose(best_model.validation_frame(made_up_runs(sst_gain=0.03)), configs)
    t = best_model.best_config(PARAMS, "cpu", choice, best_model.read_settings(PARAMS)).train
    total = t.epochs * updates_per_epoch(t)
    assert evaluation_interval(t) == total
    assert t.schedule == "linear" and 0 < t.warmup_steps <= total // 10
    assert learning_rate(total - 1, t) < learning_rate(total // 2, t) < learning_rate(t.warmup_steps, t) == t.lr
    assert learning_rate(total, t) == 0.0


@pytest.mark.parametrize("key, value, message", [
    ("budget_factor", 0, "best_model.budget_factor: must be an integer >= 1, got 0"),
    ("seed", "one", "best_model.seed: must be an integer >= 1, got 'one'"),
    ("baseline", "nope", "best_model.baseline: 'nope' is not an experiment"),
    ("set", [1], r"best_model.set: expected a mapping"),
    ("budget", 10, r"best_model: unknown key\(s\) \['budget'\]"),
])
def test_a_wrong_setting_names_params_yaml_and_its_key(tmp_path, key, value, message):
    params = yaml.safe_load(PARAMS.read_text())
    params["best_model"][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        best_model.read_settings(path)
    assert best_model.read_settings(PARAMS).budget_factor >= 10  # the committed one: at least ten times the budget


def test_comparison_rows_and_the_readme_block_from_made_up_runs():
    runs = [record("frozen_cosine", s, 0.40, 0.75, 0.80) for s in (1, 2)] + \
           [record("embedding_cosine", s, 0.42, 0.80, 0.85) for s in (1, 2)]
    best = RunRecord(dev={"sst/acc": 0.45, "para/acc": 0.82, "sts/pearson": 0.86, "mean": 0.71},
                     experiment="best_model", seed=1, profile="cpu", updates=800)
    experiments = yaml.safe_load(PARAMS.read_text())["experiments"]
    deltas = pd.DataFrame({m: {"diff": 0.05, "lo": 0.02 - (m == "sst") * 0.05, "hi": 0.08, "resolved": m != "sst"}
                           for m in best_model.METRICS}).T
    scores = best_model.comparison(best, runs, experiments, "frozen_cosine", deltas)
    assert [r["row"] for r in scores["rows"]] == ["best_model", "report", "frozen_cosine", "embedding_cosine"]
    report_best = max((e["report"] for e in experiments.values() if e["report"]), key=lambda r: r["mean"])
    assert scores["rows"][1]["mean"] == report_best["mean"] and report_best["label"] in scores["rows"][1]["label"]
    assert scores["rows"][2]["seeds"] == 2 and scores["rows"][3]["mean"] == pytest.approx((0.42 + 0.80 + 0.85) / 3,
                                                                                         abs=1e-4)
    block = best_model.readme_block(json.loads(json.dumps(scores)))  # as the stage writes and README reads it
    lines = block.splitlines()
    assert lines[2] == "| best model (cpu, 800 updates) | 1 | 0.450 | 0.820 | 0.860 | 0.710 |"
    assert "sst +0.050 [-0.030, +0.080]; **para +0.050 [+0.020, +0.080]**" in lines[-1]
    with pytest.raises(ValueError, match="frozen_cosine: no run with dev scores"):
        best_model.comparison(best, runs[2:], experiments, "frozen_cosine")


def test_submission_files_are_the_courses_format(tmp_path):
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    pd.DataFrame({"id": ["a1", "007"], "sentiment": [3, 0]}).to_csv(run / "predictions" / "sst-test.csv", index=False)
    pd.DataFrame({"id": ["s"], "similarity": [2.5]}).to_csv(run / "predictions" / "sts-test.csv", index=False)
    written = best_model.write_submission(run, tmp_path / "out")
    assert [p.name for p in written] == ["sst-test-output.csv", "sts-test-output.csv"]
    assert written[0].read_text() == "id \t Predicted_Sentiment \na1 , 3 \n007 , 0 \n"
    assert written[1].read_text() == "id \t Predicted_Similiary \ns , 2.5 \n"
    (run / "predictions" / "sts-test.csv").unlink()
    with pytest.raises(FileNotFoundError, match="sts-test.csv: missing"):
        best_model.write_submission(run, tmp_path / "out")


def test_the_config_file_retrains_the_run_and_its_folder_predicts(tmp_path, capsys):
    """The stage's path on the smoke profile: a chosen config written to a file, `mtlib train
    --config` trains it, the submission files hold exactly the test files' ids, `mtlib predict` uses it."""
    data = write_task_files(tmp_path / "data")
    where = [f"data.dir={data}", f"data.cache_dir={tmp_path / 'cache'}", f"data.processed_dir={tmp_path / 'proc'}"]
    configs = best_model.candidates(PARAMS, "smoke", made_up_runs(sst_gain=0.03), where)
    choice = best_model.choose(best_model.validation_frame(made_up_runs(sst_gain=0.03)), configs)
    cfg = best_model.best_config(PARAMS, "smoke", choice, settings(budget_factor=1, set={"train": {"num_threads": 1}}),
                                 where)
    best_model.write_config(tmp_path / "config.yaml", cfg)
    run = tmp_path / "best" / "seed3"
    assert main(["train", "--config", str(tmp_path / "config.yaml"), "--out", str(run), "--no-progress"]) == 0
    assert load_config_file(run / "config.yaml").model == cfg.model
    assert (run / "checkpoints" / "best" / "model.safetensors").exists()
    for path in best_model.write_submission(run, tmp_path / "predictions"):
        task = path.name.split("-")[0]
        expected = read_task_file(data / ("ids-sst-test-student.csv" if task == "sst" else "sts-test-student.csv"),
                                  task, labelled=False)["id"]
        assert best_model.read_submission(path)["id"].tolist() == expected.tolist()
    out = tmp_path / "my-predictions.csv"
    assert main(["predict", "--run", str(run), "--task", "sts", "--input", str(data / "sts-test-student.csv"),
                 "--output", str(out)]) == 0
    assert pd.read_csv(out, dtype={"id": str})["id"].tolist() == expected.tolist()


def test_train_config_refuses_what_it_does_not_use_in_one_line(tmp_path, capsys):
    cfg = load_config(PARAMS, "base_model", "smoke")
    best_model.write_config(tmp_path / "config.yaml", cfg)
    assert main(["train", "--config", str(tmp_path / "config.yaml"), "--profile", "smoke"]) == 2
    assert capsys.readouterr().err == ("mtlib train: error: --profile: not used with --config (the config file is "
                                       "already resolved; change it with --seed or --set)\n")
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: file not found" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "train": {"lr": 1}}))
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert capsys.readouterr().err.startswith(f"mtlib train: error: {tmp_path / 'bad.yaml'}: train: missing key")
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "config.yaml"), "--experiment", "base_model"])
    assert "not allowed with argument" in capsys.readouterr().err
