"""Every named experiment runs; the study's methods do what their configs say."""
import json

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mtlib.study.pipeline import starts_from
from mtlib.training.loop import train
from tests.helpers import ROOT, smoke_config

EXPERIMENTS = yaml.safe_load((ROOT / "params.yaml").read_text())["experiments"]
STARTS = starts_from(EXPERIMENTS)  # experiment -> the one whose runs it starts from
SHORT = ("train.epochs=1", "train.batches_per_epoch=2", "train.pretrain_args={lr: 1.0e-3, epochs: 2, patience: 1}",
         "model.pal_args={num_heads: 2, head_dim: 4}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.fixture(scope="module")
def advanced_run(workdir):
    out = workdir / "runs" / "advanced_model" / "seed1"
    train(smoke_config(workdir, "advanced_model", *SHORT), out, progress=False)
    return out


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_runs_on_the_smoke_profile(name, workdir, advanced_run):
    start = STARTS.get(name)
    extra = [f"train.init_from={workdir}/runs/{start}/seed{{seed}}"] if start else []
    out = workdir / "runs" / name / "seed1"
    if name == "advanced_model":
        metrics = json.loads((out / "metrics.json").read_text())
    else:
        metrics = train(smoke_config(workdir, name, *SHORT, *extra), out, progress=False)
    cfg = smoke_config(workdir, name, *SHORT, *extra)
    assert set(metrics["dev"]) >= {f"{t}/{'pearson' if t == 'sts' else 'acc'}" for t in cfg.train.tasks}
    assert all(-1 <= v <= 1 for v in metrics["dev"].values())


def test_augmentation_balances_classes_after_the_length_filter(workdir, advanced_run):
    metrics = json.loads((advanced_run / "metrics.json").read_text())
    counts = metrics["data"]
    assert counts["length_filtered"]["sst"] == counts["loaded"]["sst"] - int(0.02 * counts["loaded"]["sst"])
    assert counts["augmented"]["sst"] > counts["length_filtered"]["sst"]
    assert "sts" not in counts["augmented"]  # regression targets are not balanced
    files = sorted((workdir / "processed").glob("sst-train-augmented-*-counts.csv"))
    table = pd.read_csv(files[0])
    assert table["after"].nunique() == 1 and table["after"].iloc[0] == table["before"].max()


def test_pretraining_writes_curves_and_changes_heads(advanced_run):
    history = pd.read_csv(advanced_run / "pretrain_history.csv")
    assert set(history["task"]) == {"sst", "para", "sts"} and (history.groupby("task")["epoch"].max() >= 1).all()


def test_pal_after_trains_only_pals_and_starts_from_the_fine_tuned_model(workdir, advanced_run):
    out = workdir / "pal_after_check"
    metrics = train(smoke_config(workdir, "pal_after", *SHORT, f"train.init_from={advanced_run}",
                                 "train.keep_checkpoint=true"), out, progress=False)
    before = load_file(str(advanced_run / "checkpoints" / "best" / "model.safetensors"))
    after = load_file(str(out / "checkpoints" / "best" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # encoder and heads frozen
    assert any(k.startswith("pals.") for k in after) and set(after) - set(before) == {k for k in after if k.startswith("pals.")}
    assert metrics["params"]["trainable"] == sum(metrics["params"]["task_specific"].values()) - sum(
        before[k].numel() for k in before if k.startswith("heads."))
    history = pd.read_csv(out / "history.csv")
    assert history["update"].min() > 0  # the starting point is no candidate: PALs' gain is not >= 0 by construction
    assert metrics["best_update"] in set(history["update"])
    # the kept checkpoint predicts (docs/library.md: checkpoints), PALs included
    from mtlib.training.inference import predict_file

    predict_file(out, "sst", workdir / "data" / "ids-sst-dev.csv", workdir / "pal-sst.csv")
    dev = pd.read_csv(out / "predictions" / "sst-dev.csv")  # and the model's confidence, which predict_file leaves out
    assert pd.read_csv(workdir / "pal-sst.csv").equals(dev[["id", "sentiment"]])


def test_random_predictor_is_uniform_and_seeded(workdir):
    a = train(smoke_config(workdir, "random_predictor", "data.dev_size={sst: null, para: null, sts: null}"),
              workdir / "rp1", progress=False)
    b = train(smoke_config(workdir, "random_predictor", "data.dev_size={sst: null, para: null, sts: null}"),
              workdir / "rp2", progress=False)
    assert a["dev"] == b["dev"] and a["params"]["total"] == 0
    sst = pd.read_csv(workdir / "rp1" / "predictions" / "sst-dev.csv")["sentiment"]
    assert sst.between(0, 4).all() and sst.nunique() >= 4


def test_sst_adjustment_is_saved_and_applied_by_evaluate_and_predict(workdir):
    from mtlib.training.adjust import load_adjustment
    from mtlib.training.inference import evaluate_run, predict_file

    out = workdir / "adjusted"
    metrics = train(smoke_config(workdir, "base_model", *SHORT, "train.sst_adjustment=true",
                                 "train.keep_checkpoint=true"), out, progress=False)
    matrix, _ = load_adjustment(out / "sst_adjustment.safetensors")  # reference-code defect 7: never saved
    assert matrix.shape == (5, 5) and "dev_unadjusted" in metrics
    data = workdir / "data"
    assert evaluate_run(out, data)["dev"] == pytest.approx(metrics["dev"])
    predict_file(out, "sst", data / "ids-sst-dev.csv", workdir / "sst-pred.csv")
    run_predictions = pd.read_csv(out / "predictions" / "sst-dev.csv")[["id", "sentiment"]]  # less the confidence
    assert pd.read_csv(workdir / "sst-pred.csv").equals(run_predictions)


def test_posthoc_adjustment_scores_fixed_weights_through_the_matrix(workdir):
    from mtlib.training.inference import evaluate_run

    trained = workdir / "runs" / "posthoc_source" / "seed1"
    source = train(smoke_config(workdir, "base_model", *SHORT, "train.keep_checkpoint=true"), trained, progress=False)
    out = workdir / "runs" / "posthoc" / "seed1"
    metrics = train(smoke_config(workdir, "base_model", *SHORT, "train.method=posthoc", "train.sst_adjustment=true",
                                 "train.pretrain_heads=none", f"train.init_from={trained.parent}/seed{{seed}}"),
                    out, progress=False)
    assert metrics["updates"] == 0 and not (out / "checkpoints").exists()
    assert metrics["dev_unadjusted"] == pytest.approx(source["dev"])  # the same weights, scored again
    assert (out / "sst_adjustment.safetensors").exists()
    assert metrics["dev"]["para/acc"] == pytest.approx(source["dev"]["para/acc"])  # only SST goes through the matrix
    assert evaluate_run(out, workdir / "data")["dev"] == pytest.approx(metrics["dev"])  # the source's weights


def test_frozen_cosine_reads_pairs_by_cosine_and_trains_only_its_heads(workdir, advanced_run):
    """The frozen encoder as its users read it: a scaled cosine for para and sts (2 numbers each),
    a linear head on the sentence vector for sst; nothing else trains."""
    cfg = smoke_config(workdir, "frozen_cosine", *SHORT)
    assert cfg.methods.method == "heads" and cfg.model.pair_mode == "embedding"
    assert [cfg.model.head_for(t).kind for t in ("sst", "para", "sts")] == ["linear", "cosine", "cosine"]
    out = workdir / "runs" / "frozen_cosine" / "seed1"
    metrics = (json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists()
               else train(cfg, out, progress=False))
    heads = metrics["params"]["task_specific"]
    assert heads["para"] == heads["sts"] == 2 and heads["sst"] % 5 == 0  # scale and bias; 5 x (width + 1)
    assert metrics["params"]["trainable"] == sum(heads.values())
    assert metrics["updates"] == 0 and set(metrics["head_epochs"]) == {"sst", "para", "sts"}


def test_a_matched_single_task_run_sees_its_tasks_share_of_the_multitask_budget(workdir):
    """base_model's 2 x 6 micro-batches in turn over three tasks give SST 4 of them: batches of 8 over
    the 28 SST training rows left beside validation, one pass (8 + 8 + 8 + 4 examples)."""
    out = workdir / "matched_check"
    metrics = train(smoke_config(workdir, "single_sst_matched", "train.pretrain_args={lr: 1.0e-3, epochs: 2, patience: 1}",
                                 "train.match_examples={tasks: [sst, para, sts], sampler: round_robin}"),
                    out, progress=False)
    history = pd.read_csv(out / "history.csv")
    assert metrics["data"]["loaded"]["sst"] == 28
    params = metrics["params"]
    assert params["trainable"] == params["shared"] + params["task_specific"]["sst"]  # the other heads never train
    assert metrics["updates"] == 4 and history["examples"].iloc[-1] == 28 and set(metrics["dev"]) == {"sst/acc"}


def test_heads_only_records_the_heads_as_its_trainable_parameters(workdir):
    metrics = train(smoke_config(workdir, "head_only", *SHORT), workdir / "heads_check", progress=False)
    params = metrics["params"]
    assert params["trainable"] == sum(params["task_specific"].values()) < params["shared"]


def test_a_heads_only_continuation_keeps_the_encoder_and_continues_its_starts_curve(workdir, advanced_run):
    from mtlib.record import read_history

    out = workdir / "continued_heads_check" / "seed1"
    metrics = train(smoke_config(workdir, "continued_heads", *SHORT, f"train.init_from={advanced_run}",
                                 "train.keep_checkpoint=true"), out, progress=False)
    before = load_file(str(advanced_run / "checkpoints" / "best" / "model.safetensors"))
    after = load_file(str(out / "checkpoints" / "best" / "model.safetensors"))
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("heads."))  # the encoder kept
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("heads."))  # the heads trained
    assert metrics["params"]["trainable"] == sum(metrics["params"]["task_specific"].values())
    start = json.loads((advanced_run / "metrics.json").read_text())["best_update"]
    parent = pd.read_csv(advanced_run / "history.csv").set_index("update")["examples"][start]
    own = pd.read_csv(out / "history.csv")
    assert (own["start_examples"] == parent).all()
    assert list(read_history(out)["examples"]) == list(own["examples"] + parent)  # on the parent's axis
