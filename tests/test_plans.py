"""The update step: plans, per-task gradient combination, GradScaler, SMART and resume."""
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from mtlib.model.backbone import load_tokenizer
from mtlib.training.combiners import PCGrad
from mtlib.model.multitask import build_model
from mtlib.training.samplers import TaskSampler
from mtlib.tasks import TASKS
from mtlib.data.prepare import prepare_data
from mtlib.training.loop import train
from mtlib.training.stepper import Stepper
from mtlib.data.encode import BatchStream
from mtlib.training.samplers import annealed
from mtlib.settings import MatchSettings, PlanSettings
from mtlib.training.plans import (PLANS, PlanContext, compromise_adjusted, compromise_beta, compromise_group,
                                    compromise_weights, matched_micro_batches, reference_code_weights, sampled,
                                    total_updates, updates_per_epoch)
from tests.helpers import crash_on_evaluation, smoke_config

SIZES = {"sst": 100, "para": 1000, "sts": 50}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def context(name="random", epoch=1, epochs=3, k=2, n=8, seed=0):
    return PlanContext(TaskSampler(name, SIZES, epochs, seed), epoch, epochs, SIZES, k, n,
                       torch.Generator().manual_seed(seed))


def test_plans():
    assert [w for _, w in PLANS["sampled"](context(k=4))] == [0.25] * 4
    assert sorted(t for t, _ in PLANS["each_task"](context(k=2))) == ["para", "para", "sst", "sst", "sts", "sts"]
    plan = PLANS["compromise"](context(epoch=2, n=8))
    weights = compromise_weights(SIZES, 2, 3)
    assert len(plan) == 8 and set(t for t, _ in plan) == set(SIZES)
    assert all(w == pytest.approx(weights[t]) for t, w in plan)


def test_reference_code_compromise_uses_running_batch_counts():
    ctx = context(epoch=1, epochs=1, n=6)
    first = PLANS["compromise_reference"](ctx)
    second = PLANS["compromise_reference"](ctx)
    counts = {t: sum(1 for p in (first, second) for task, _ in p if task == t) for t in SIZES}
    assert ctx.batch_counts == counts
    assert all(w == pytest.approx(1 / counts[t]) for t, w in second)  # alpha = 1 at E = 1


@pytest.fixture()
def setup(tmp_path):
    def make(*overrides, scaler=None):
        cfg = smoke_config(tmp_path, "base_model", "train.plan=each_task", "train.max_grad_norm=null", *overrides)
        tokenizer = load_tokenizer(cfg.backbone)
        data = prepare_data(cfg, tokenizer)
        model = build_model(cfg).eval()  # eval: no dropout, so gradients are comparable
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        streams = {t: BatchStream(data["train"][t], 8, 1, tokenizer.pad_token_id) for t in TASKS}
        sizes = {t: len(data["train"][t]) for t in TASKS}
        scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
        stepper = Stepper(cfg, model, optimizer, scaler, streams, TaskSampler("random", sizes, 2, 1), sizes,
                          torch.device("cpu"), cfg.train.amp)
        return cfg, model, optimizer, stepper, data, tokenizer
    return make


def shared_grads_at_step(model, optimizer, stepper, monkeypatch):
    captured = {}

    def capture(*args, **kwargs):
        captured["shared"] = torch.cat([p.grad.reshape(-1).clone() for p in stepper.shared])
        captured["head"] = model.heads["sst"].net[-1].weight.grad.clone()

    monkeypatch.setattr(optimizer, "step", capture)
    stepper.step(0, 1)
    return captured


def per_task_reference(model, data, tokenizer):
    streams = {t: BatchStream(data["train"][t], 8, 1, tokenizer.pad_token_id) for t in TASKS}
    rows, head = [], None
    for task in ("sst", "para", "sts"):
        model.zero_grad()
        batch = streams[task].next()
        TASKS[task].loss(model(batch), batch.labels).backward()
        rows.append(torch.cat([p.grad.reshape(-1).clone() for p in model.encoder.parameters()]))
        if task == "sst":
            head = model.heads["sst"].net[-1].weight.grad.clone()
    model.zero_grad()
    return torch.stack(rows), head


def test_pcgrad_step_writes_the_pcgrad_of_per_task_gradients(setup, monkeypatch):
    cfg, model, optimizer, stepper, data, tokenizer = setup("train.combiner=pcgrad")
    grads, head = per_task_reference(model, data, tokenizer)
    generator = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + 0)
    captured = shared_grads_at_step(model, optimizer, stepper, monkeypatch)
    assert torch.allclose(captured["shared"], PCGrad().combine(grads, {}, generator)[0], atol=1e-6)
    assert torch.allclose(captured["head"], head, atol=1e-6)  # heads keep their own task's gradient
    assert not torch.allclose(captured["shared"], grads.sum(0), atol=1e-6)  # surgery did something


def test_sum_path_equals_summed_task_gradients(setup, monkeypatch):
    cfg, model, optimizer, stepper, data, tokenizer = setup("train.combiner=sum")
    grads, _ = per_task_reference(model, data, tokenizer)
    captured = shared_grads_at_step(model, optimizer, stepper, monkeypatch)
    assert torch.allclose(captured["shared"], grads.sum(0), atol=1e-6)


def test_grad_scaler_unscales_before_surgery(setup, monkeypatch):
    cfg, model, optimizer, stepper, data, tokenizer = setup("train.combiner=gradvac")
    plain = shared_grads_at_step(model, optimizer, stepper, monkeypatch)["shared"]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    cfg, model, optimizer, stepper, data, tokenizer = setup("train.combiner=gradvac", scaler=scaler)
    captured = {}
    original_step = scaler.step

    def capture(opt, *args, **kwargs):  # the scaler unscales in place before the optimiser steps
        scaler.unscale_(opt)
        captured["shared"] = torch.cat([p.grad.reshape(-1).clone() for p in stepper.shared])
        return original_step(opt, *args, **kwargs)

    monkeypatch.setattr(scaler, "step", capture)
    stepper.step(0, 1)
    assert torch.allclose(captured["shared"], plain, atol=1e-5)


def test_non_finite_gradient_skips_the_step_and_lowers_the_scale(setup):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    cfg, model, optimizer, stepper, data, tokenizer = setup("train.combiner=pcgrad", scaler=scaler)
    before = [p.detach().clone() for p in model.parameters()]
    original = stepper.loss
    stepper.loss = lambda batch: original(batch) * float("inf")
    stepper.step(0, 1)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert scaler.get_scale() < 2.0 ** 10


def test_gradvac_moving_average_changes_every_step(setup, monkeypatch):
    cfg, model, optimizer, stepper, *_ = setup("train.combiner=gradvac", "train.combiner_args={beta: 0.5}")
    seen = [stepper.combiner_state["ema"].clone()]
    for update in range(3):
        stepper.step(update, 1)
        seen.append(stepper.combiner_state["ema"].clone())
    assert all(not torch.equal(a, b) for a, b in zip(seen, seen[1:]))


def test_layer_granularity_gives_one_ema_per_segment(setup):
    cfg, model, optimizer, stepper, *_ = setup("train.combiner=gradvac", "train.granularity=layer")
    assert stepper.combiner_state["ema"].shape == (len(stepper.segments), 3, 3) and len(stepper.segments) > 2


@pytest.mark.parametrize("overrides", [
    ("train.combiner=pcgrad",),
    ("train.combiner=gradvac", "train.amp=bf16"),
    ("train.combiner=gradvac", "train.smart=true"),
    ("train.plan=compromise", "train.combiner=gradvac", "train.group_size=5"),
    ("train.plan=compromise_reference", "train.combiner=gradvac", "train.group_size=5", "train.epochs=1"),
    ("train.plan=compromise", "train.combiner=gradvac", "train.group_size=4", "train.smart=true", "train.amp=bf16"),
])
def test_surgery_and_smart_train_end_to_end(tmp_path, overrides):
    cfg = smoke_config(tmp_path, "base_model", "train.plan=each_task", *overrides)
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["updates"] == cfg.train.epochs * updates_per_epoch(cfg.train)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics["dev"].values())


def test_resume_restores_gradvac_average_and_smart_teacher(tmp_path, monkeypatch):
    overrides = ("train.plan=compromise_reference", "train.combiner=gradvac", "train.group_size=4",
                 "train.smart=true", "train.smart_args={lambda_s: 1.0, mu: 1.0}", "train.epochs=3", "train.batches_per_epoch=8")
    full = train(smoke_config(tmp_path, "base_model", *overrides), tmp_path / "full", progress=False)
    restore = crash_on_evaluation(monkeypatch, 2)
    cfg = smoke_config(tmp_path, "base_model", *overrides)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    from safetensors.torch import load_file
    extra = load_file(str(tmp_path / "resumed" / "checkpoints" / "last" / "extra.safetensors"))
    assert extra["combiner.ema"].abs().sum() > 0 and any(k.startswith("smart.ema.") for k in extra)
    restore()
    resumed = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed["dev"] == full["dev"] and resumed["best_update"] == full["best_update"]
# ---------------------------------------------------------------------------- Gradient Compromise


def test_compromise_beta():
    assert compromise_beta(1, 5) == pytest.approx(0.2)
    assert compromise_beta(3, 5) == pytest.approx(0.6)
    assert compromise_beta(5, 5) == pytest.approx(1.0)
    assert compromise_beta(1, 1) == pytest.approx(0.2)  # E = 1: no 0/0 (reference defect 6)
    with pytest.raises(ValueError):
        compromise_beta(0, 3)


def test_compromise_weights_follow_inverse_size_power():
    sizes = {"sst": 8544, "para": 141506, "sts": 6041}
    first = compromise_weights(sizes, 1, 3)
    assert first == pytest.approx({t: n**-0.2 for t, n in sizes.items()})
    last = compromise_weights(sizes, 3, 3)
    assert last == pytest.approx({t: 1 / n for t, n in sizes.items()})


def test_reference_code_weights_differ_from_the_reports():
    # Reference code: divide by the running batch count^alpha (defect 3); report: by N^beta.
    sizes = {"sst": 8544, "para": 141506, "sts": 6041}
    counts = {"sst": 3, "para": 0, "sts": 5}
    ref = reference_code_weights(counts, alpha=0.6)
    assert ref == pytest.approx({"sst": 3**-0.6, "para": 1.0, "sts": 5**-0.6})
    assert ref != pytest.approx(compromise_weights(sizes, 2, 3))


def test_compromise_adjusted_probabilities():
    adjusted = compromise_adjusted({"sst": 0.1, "para": 0.7, "sts": 0.2}, 16)
    # (p n - 1) / (n - 3): 0.6 / 13, 10.2 / 13, 2.2 / 13 (sum 1, nothing clipped)
    assert adjusted == pytest.approx({"sst": 0.6 / 13, "para": 10.2 / 13, "sts": 2.2 / 13})
    clipped = compromise_adjusted({"sst": 0.02, "para": 0.9, "sts": 0.08}, 16)
    # clip(-0.68/13) = 0, clip(13.4/13) = 1, 0.28/13; renormalised
    assert clipped == pytest.approx({"sst": 0.0, "para": 1 / (1 + 0.28 / 13), "sts": (0.28 / 13) / (1 + 0.28 / 13)})


def test_compromise_group_contains_each_task_and_is_deterministic():
    probs = annealed({"sst": 8544, "para": 141506, "sts": 6041}, 1, 3)
    for seed in range(20):
        group = compromise_group(probs, 16, gen(seed))
        assert len(group) == 16 and set(probs) <= set(group)
        assert group == compromise_group(probs, 16, gen(seed))
    assert sorted(compromise_group(probs, 3, gen())) == sorted(probs)
    with pytest.raises(ValueError):
        compromise_group(probs, 2, gen())


def test_compromise_group_extra_draws_follow_adjusted_probabilities():
    probs = {"sst": 0.1, "para": 0.7, "sts": 0.2}
    n, groups = 16, 2000
    g = gen(11)
    counts = dict.fromkeys(probs, 0)
    for _ in range(groups):
        for task in compromise_group(probs, n, g):
            counts[task] += 1
    extras = (n - 3) * groups
    adjusted = compromise_adjusted(probs, n)
    for task in probs:
        assert (counts[task] - groups) / extras == pytest.approx(adjusted[task], abs=0.01)
    # overall, each task fills the share of the group the sampler asked for
    for task in probs:
        assert counts[task] / (n * groups) == pytest.approx(probs[task], abs=0.01)



def test_compromise_then_sampled_switches_to_the_sampler_halfway():
    first, last = context(name="annealed", epoch=2, epochs=4, n=6), context(name="annealed", epoch=3, epochs=4, n=6)
    early, late = PLANS["compromise_then_sampled"](first), PLANS["compromise_then_sampled"](last)
    assert early == PLANS["compromise"](context(name="annealed", epoch=2, epochs=4, n=6))
    assert len(late) == 6 and all(w == pytest.approx(1 / 6) for _, w in late)
    assert last.sampler.draws == 6 and first.sampler.draws == 0  # the second phase draws from the sampler
    assert PlanSettings("compromise_then_sampled", 1, 6, 3).batches == 6


def test_evaluations_fall_at_matched_micro_batches_whatever_the_update_rule(tmp_path):
    """eval_every counts micro-batches: a one-batch-per-update run and a six-batches-per-update
    Gradient Compromise run are scored at the same points of training (the learning-speed claim)."""
    common = ("train.epochs=1", "train.batches_per_epoch=24", "train.eval_every=12", "train.group_size=6",
              "train.accumulation=1")
    train(smoke_config(tmp_path, "hidden", *common), tmp_path / "sampled", progress=False)
    train(smoke_config(tmp_path, "hidden_compromise", *common), tmp_path / "compromise", progress=False)
    sampled, compromise = (pd.read_csv(tmp_path / name / "history.csv") for name in ("sampled", "compromise"))
    assert sampled["update"].tolist() == [12, 24] and compromise["update"].tolist() == [2, 4]
    assert (compromise["update"] * 6).tolist() == sampled["update"].tolist()


# ---------------------------------------------------------------------------------------
# A one-task run's budget matched to a multitask run's share (train.match_examples)

def _budget(sampler, epochs=2, batches_per_epoch=6, accumulation=1, seed=1, task="sst"):
    t = SimpleNamespace(epochs=epochs, batches_per_epoch=batches_per_epoch, accumulation=accumulation, seed=seed,
                        tasks=(task,), plan="sampled", group_size=16)
    return t, MatchSettings(("sst", "para", "sts"), sampler, task)


def test_a_matched_budget_is_the_share_a_round_robin_gives_known_by_hand():
    sizes = {"sst": 100, "para": 1000, "sts": 10}
    t, match = _budget("round_robin")  # 12 micro-batches, the tasks in turn: 4 each
    assert matched_micro_batches(match, t, sizes) == 4 and total_updates(t, sizes, match) == 4
    t, match = _budget("round_robin", accumulation=2)  # 3 updates of 2 per epoch: 12 draws, 4 of sst = 2 updates
    assert matched_micro_batches(match, t, sizes) == 4 and total_updates(t, sizes, match) == 2
    t, match = _budget("round_robin", accumulation=5, batches_per_epoch=10)  # 20 draws: sst 7 of them -> 2 updates
    assert matched_micro_batches(match, t, sizes) == 7 and total_updates(t, sizes, match) == 2
    assert total_updates(t, sizes) == 4  # unmatched: epochs x updates per epoch


@pytest.mark.parametrize("sampler", ["random", "proportional", "annealed"])
def test_a_matched_budget_is_what_the_multitask_runs_sampler_drew_seed_by_seed(sampler):
    sizes = {"sst": 300, "para": 1000, "sts": 50}
    for seed in (1, 2, 3):
        shares = {task: matched_micro_batches(_budget(sampler, seed=seed, task=task)[1], _budget(sampler, seed=seed)[0],
                                              sizes) for task in sizes}
        assert sum(shares.values()) == 12  # the three shares make up the multitask run's micro-batches
        drawn = TaskSampler(sampler, sizes, 2, seed)  # the multitask run's own draws, through its plan
        tasks = [task for update in range(12) for task, _ in sampled(PlanContext(
            drawn, update // 6 + 1, 2, sizes, 1, 16, torch.Generator()))]
        assert shares == {task: tasks.count(task) for task in sizes}
