"""Tests of mtlib.training.smart: SMART (Jiang et al. 2020) on the tiny random BERT."""
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mtlib.model.backbone import load_tokenizer
from mtlib.config import load_config
from mtlib.data.encode import collate, encode_split
from mtlib.model.multitask import build_model
from mtlib.model.pal import add_pals
from mtlib.settings import PalSettings, SmartSettings
from mtlib.training.smart import (Smart, adversarial_perturbation, divergence, ema_decay_at, symmetric_kl_bernoulli,
                         symmetric_kl_categorical)
from mtlib.tasks import TASKS
from tests.helpers import ROOT, sentence

TASK_NAMES = ["sst", "para", "sts"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "params.yaml", "base_model", "smoke")


@pytest.fixture(scope="module")
def tokenizer(cfg):
    return load_tokenizer(cfg.backbone)


@pytest.fixture
def model(cfg):
    return build_model(cfg)


def make_batch(tokenizer, task: str, n: int = 4, seed: int = 0):
    """``n`` rows of random text of different lengths (so there is padding), with labels."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {"id": f"{task}{i}"}
        for column in TASKS[task].text_columns:
            row[column] = sentence(rng, 3 + 3 * i)
        row[TASKS[task].label_column] = {"sst": i % 5, "para": float(i % 2), "sts": 1.2 * i}[task]
        rows.append(row)
    split = encode_split(tokenizer, pd.DataFrame(rows), task, "sentence", 64)
    return collate(split, np.arange(n), tokenizer.pad_token_id)


def task_loss(model, batch):
    output = model(batch)
    return output, TASKS[batch.task].loss(output, batch.labels)


# ---------------------------------------------------------------------------- divergences


def test_symmetric_kl_categorical_matches_definition():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)

    def kl(a, b):
        return F.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="batchmean")

    torch.testing.assert_close(symmetric_kl_categorical(p, q), kl(p, q) + kl(q, p))
    assert symmetric_kl_categorical(p, p) == 0
    assert symmetric_kl_categorical(p, q) > 0
    torch.testing.assert_close(symmetric_kl_categorical(p, q), symmetric_kl_categorical(q, p))
    assert symmetric_kl_categorical(p, p + 3.0) == pytest.approx(0, abs=1e-6)  # shift-invariant, like softmax


def test_symmetric_kl_bernoulli_matches_definition():
    a = torch.tensor([-3.0, -0.5, 0.0, 1.0, 4.0])
    b = torch.tensor([2.0, -0.4, 1.0, -1.0, 4.0])

    def kl(x, y):
        p, q = x.double().sigmoid(), y.double().sigmoid()
        return p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()

    expected = (kl(a, b) + kl(b, a)).mean().float()
    torch.testing.assert_close(symmetric_kl_bernoulli(a, b), expected)
    assert symmetric_kl_bernoulli(a, a) == 0
    assert symmetric_kl_bernoulli(a, b) > 0
    torch.testing.assert_close(symmetric_kl_bernoulli(a, b), symmetric_kl_bernoulli(b, a))
    # stable for confident logits, where 1 - sigmoid rounds to 0 in fp32
    assert torch.isfinite(symmetric_kl_bernoulli(torch.tensor([40.0]), torch.tensor([-40.0])))


def test_sts_divergence_is_squared_error_and_all_are_fp32():
    a, b = torch.tensor([0.0, 1.0, 2.5]), torch.tensor([0.5, 1.0, 4.5])
    assert divergence("sts", a, b).item() == pytest.approx((0.25 + 0 + 4.0) / 3)
    assert divergence("sts", a, a) == 0
    for task, shape in (("sst", (3, 5)), ("para", (3,)), ("sts", (3,))):
        p = torch.randn(shape).bfloat16()
        assert divergence(task, p, p.flip(0)).dtype == torch.float32
    with pytest.raises(KeyError, match="valid"):
        divergence("nli", a, b)


# ---------------------------------------------------------------------------- defect 1


@pytest.mark.parametrize("task", TASK_NAMES)
def test_defect1_regulariser_changes_the_loss_and_the_gradients(model, tokenizer, task):
    """The reference code added SMART's term to a discarded Python float: a no-op."""
    batch = make_batch(tokenizer, task)
    model.train()
    torch.manual_seed(0)
    smart = Smart(model)
    output, plain = task_loss(model, batch)
    loss = smart.regularised_loss(model, batch, output, plain)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad and loss.dim() == 0
    assert loss.item() > plain.item()
    assert smart.last_terms["adversarial"] > 0 and smart.last_terms["bregman"] > 0
    params = [p for p in model.parameters() if p.requires_grad]
    g_plain = torch.autograd.grad(plain, params, retain_graph=True, allow_unused=True)
    g_smart = torch.autograd.grad(loss, params, allow_unused=True)
    changed = {name for (name, _), a, b in zip(model.named_parameters(), g_plain, g_smart)
               if b is not None and (a is None or not torch.allclose(a, b))}
    assert any(n.startswith("encoder.") for n in changed) and any(n.startswith(f"heads.{task}.") for n in changed)
    assert "encoder.embeddings.word_embeddings.weight" in changed  # x is differentiated too


@pytest.mark.parametrize("task", TASK_NAMES)
def test_adversarial_term_alone_reaches_the_parameters_without_dropout(model, tokenizer, task):
    """Eval mode, mu = 0: only the perturbation makes R_s non-zero, and it has a gradient."""
    model.eval()
    batch = make_batch(tokenizer, task)
    smart = Smart(model, SmartSettings(mu=0.0, epsilon=1e-3, noise_std=1e-3))
    output, _ = task_loss(model, batch)
    r_s = smart.adversarial_loss(model, batch, output)
    assert r_s > 0
    grads = torch.autograd.grad(r_s, list(model.encoder.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------------------- the perturbation


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_perturbation_stays_in_the_epsilon_ball(model, tokenizer, task, steps):
    model.train()
    batch = make_batch(tokenizer, task)
    output, _ = task_loss(model, batch)
    eps = 1e-5
    deltas = adversarial_perturbation(model, batch, output, epsilon=eps, steps=steps,
                                      generator=torch.Generator().manual_seed(3))
    for delta, part in zip(deltas, batch.inputs):
        assert delta.dtype == torch.float32 and delta.shape == (*part["input_ids"].shape, 64)
        per_token = delta.abs().amax(-1)  # (B, T): the L-inf norm of each token's perturbation
        assert per_token.max() <= eps * (1 + 1e-6)
        assert per_token[part["attention_mask"] == 0].eq(0).all()  # padding is not perturbed
        assert per_token[part["attention_mask"] == 1].gt(0).all()
    if steps:  # eta = 1e-3 >> eps: one normalised step pushes most coordinates onto the ball's surface
        assert (deltas[0].abs() > 0.99 * eps).float().mean() > 0.5
    assert all(p.grad is None for p in model.parameters())  # the ascent leaves parameter gradients alone


def test_same_generator_seed_same_perturbation(model, tokenizer):
    model.eval()
    batch = make_batch(tokenizer, "sts")
    output = model(batch)
    a, b = (adversarial_perturbation(model, batch, output, generator=torch.Generator().manual_seed(7))
            for _ in range(2))
    assert torch.equal(a[0], b[0])


def test_ascent_increases_the_divergence_over_the_initial_noise(model, tokenizer):
    """fp64 and eval mode, so the 1e-5 perturbation is far above rounding and dropout is off."""
    model.double().eval()
    gains = []
    for task in TASK_NAMES:
        batch = make_batch(tokenizer, task)
        with torch.no_grad():
            clean = model(batch)
            embeds = model.word_embeddings(batch)

        def d(deltas):
            with torch.no_grad():
                return divergence(task, model(batch, inputs_embeds=[e + x.double() for e, x in zip(embeds, deltas)]),
                                  clean).item()

        for seed in range(3):
            noise, ascent = (adversarial_perturbation(model, batch, clean, steps=steps,
                                                      generator=torch.Generator().manual_seed(seed))
                             for steps in (0, 1))
            gains.append(d(ascent) / d(noise))
    assert min(gains) > 1.0
    assert np.mean(gains) > 2.0


# ---------------------------------------------------------------------------- Bregman / EMA


def test_ema_decay_schedule_of_the_paper():
    assert ema_decay_at(1, None) == 0.99 and ema_decay_at(10_000, None) == 0.99
    assert ema_decay_at(1, 100) == 0.99 and ema_decay_at(10, 100) == 0.99
    assert ema_decay_at(11, 100) == 0.999 and ema_decay_at(100, 100) == 0.999


def test_update_ema_moves_by_the_decay_formula(model):
    smart = Smart(model, SmartSettings(ema_decay=0.9))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    smart.update_ema(model)
    for name, p in model.named_parameters():
        torch.testing.assert_close(smart.ema[name], 0.9 * before[name] + 0.1 * p.detach())
    assert smart.step == 1
    late = Smart(model, SmartSettings(ema_decay=0.9, ema_decay_late=0.5, total_steps=5))  # step 1 > 0.1 * 5: late beta
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    late.update_ema(model)
    for name in theta:
        torch.testing.assert_close(late.ema[name], 0.5 * theta[name] + 0.5 * 3.0 * theta[name])


@pytest.mark.parametrize("task", TASK_NAMES)
def test_bregman_is_zero_at_start_and_positive_after_an_update(model, tokenizer, task):
    model.eval()
    batch = make_batch(tokenizer, task)
    smart = Smart(model, SmartSettings(lambda_s=0.0))
    output, plain = task_loss(model, batch)
    assert smart.bregman_loss(model, batch, output) == 0
    assert torch.equal(smart.regularised_loss(model, batch, output, plain), plain)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    plain.backward()
    optimizer.step()
    output, _ = task_loss(model, batch)
    penalty = smart.bregman_loss(model, batch, output)
    assert penalty > 0 and penalty.requires_grad
    assert all(not t.requires_grad for t in smart.ema.values())  # the teacher is a constant
    smart.update_ema(model)
    assert 0 < smart.bregman_loss(model, batch, output) < penalty  # the teacher moved towards the model


def test_teacher_includes_pal_parameters(model, tokenizer):
    model.pals = add_pals(model.encoder, TASK_NAMES, PalSettings(num_heads=2, head_dim=4), seed=0)
    model.eval()
    batch = make_batch(tokenizer, "sst")
    smart = Smart(model)
    assert any(name.startswith("pals.") for name in smart.ema)
    assert smart.bregman_loss(model, batch, model(batch)) == 0
    with torch.no_grad():
        model.pals.pals["sst"].V_D.weight.normal_(std=0.5)
    assert smart.bregman_loss(model, batch, model(batch)) > 0
    model.pals = None  # a model whose parameters no longer match the teacher's
    with pytest.raises(ValueError, match="new Smart"):
        smart.update_ema(model)


def test_state_dict_round_trip_restores_the_teacher_exactly(model, tokenizer, tmp_path):
    model.eval()
    batch = make_batch(tokenizer, "para")
    smart = Smart(model, generator=torch.Generator().manual_seed(5))
    for _ in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        smart.update_ema(model)
    torch.randn(3, generator=smart.generator)  # the generator has moved on too
    save_file(smart.state_dict(), str(tmp_path / "smart.safetensors"))
    restored = Smart(model, generator=torch.Generator().manual_seed(99))
    restored.load_state_dict(load_file(str(tmp_path / "smart.safetensors")))
    assert restored.step == 2
    assert all(torch.equal(restored.ema[n], smart.ema[n]) for n in smart.ema)
    assert torch.equal(restored.generator.get_state(), smart.generator.get_state())
    output = model(batch)
    assert smart.bregman_loss(model, batch, output) > 0
    assert torch.equal(restored.bregman_loss(model, batch, output), smart.bregman_loss(model, batch, output))
    with pytest.raises(KeyError, match="missing"):
        restored.load_state_dict({k: v for k, v in smart.state_dict().items() if "heads.sst" not in k})


# ---------------------------------------------------------------------------- precision


@pytest.mark.parametrize("task", TASK_NAMES)
def test_runs_under_bf16_autocast(model, tokenizer, task):
    model.train()
    batch = make_batch(tokenizer, task)
    smart = Smart(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, plain = task_loss(model, batch)
        loss = smart.regularised_loss(model, batch, output, plain)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item()) and loss.item() > plain.item()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None


def test_under_amp_the_perturbed_path_runs_in_fp32_with_a_nonzero_perturbation(model, tokenizer, monkeypatch):
    """bf16 keeps 8 bits: 1e-5 added to a LayerNorm output of size ~1 is lost in the first
    bf16 matrix product. precision="fp32" (the default) runs R_s's forwards without autocast,
    where the perturbation survives; "amp" runs them under the caller's autocast."""
    batch = make_batch(tokenizer, "sts")
    model.eval()  # no dropout: what differs between the clean and perturbed forwards is the perturbation
    clean = model.word_embeddings(batch)[0].detach()
    for precision in ("amp", "fp32"):
        calls = []
        forward = type(model).forward

        def recording(self, batch, inputs_embeds=None):
            calls.append((torch.is_autocast_enabled("cpu"), inputs_embeds))
            return forward(self, batch, inputs_embeds)

        monkeypatch.setattr(type(model), "forward", recording)
        smart = Smart(model, SmartSettings(mu=0.0, precision=precision), torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(batch)
            smart.regularised_loss(model, batch, output, TASKS["sts"].loss(output, batch.labels))
        monkeypatch.undo()
        perturbed = [(autocast, embeds) for autocast, embeds in calls if embeds is not None]
        assert perturbed and all(autocast == (precision == "amp") for autocast, _ in perturbed)
        if precision == "fp32":
            deltas = [embeds[0].detach() - clean for _, embeds in perturbed]  # the ascent's, then the final one
            assert all(embeds[0].dtype == torch.float32 and delta.abs().max() > 0
                       for (_, embeds), delta in zip(perturbed, deltas))
            assert float(deltas[-1].abs().max()) <= 1e-5 * (1 + 1e-3)  # the final one lies in the epsilon ball
            assert float(smart.last_terms["adversarial"]) > 0


def test_without_autocast_both_precisions_compute_the_same_term(model, tokenizer):
    batch = make_batch(tokenizer, "sst")
    model.eval()
    values = []
    for precision in ("amp", "fp32"):
        smart = Smart(model, SmartSettings(mu=0.0, precision=precision), torch.Generator().manual_seed(0))
        output = model(batch)
        values.append(float(smart.regularised_loss(model, batch, output, TASKS["sst"].loss(output, batch.labels)).detach()))
    assert values[0] == values[1]


def test_adversarial_term_sizes_report_each_precision_and_restore_the_mode(model, tokenizer):
    from mtlib.training.smart import adversarial_term_sizes

    model.train()
    sizes = adversarial_term_sizes(model, [make_batch(tokenizer, "sts"), make_batch(tokenizer, "sst", seed=1)])
    assert set(sizes) == {"amp", "fp32", "fp32 with dropout"} and model.training
    assert sizes["fp32"] > 0 and sizes["fp32 with dropout"] > sizes["fp32"]  # dropout dominates at epsilon 1e-5
