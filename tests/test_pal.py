"""Tests of mtlib.model.pal: projected attention layers (Stickland and Murray 2019, "BERT and PALs")."""
import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertModel

from mtlib.model.pal import LowRankAttention, PalBank, add_pals, freeze_all_but_pals
from mtlib.settings import PalSettings

TASKS = ["sst", "para", "sts"]
HEADS, HEAD_DIM = 2, 4
PALS = PalSettings(HEADS, HEAD_DIM)


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64)
    return BertModel(config).eval()


def batch():
    ids = torch.randint(1, 100, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    return ids, mask


def run(bert, ids, mask, task=None, bank=None):
    if bank is None or task is None:
        return bert(input_ids=ids, attention_mask=mask).last_hidden_state
    with bank.route(task):
        return bert(input_ids=ids, attention_mask=mask).last_hidden_state


def make_influential(bank: PalBank, seed: int = 2) -> None:
    """Give every task's V_D distinct non-zero values so the PALs change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pal in bank.pals.values():
            pal.V_D.weight.normal_(std=0.5, generator=g)


def test_no_influence_init_leaves_outputs_exactly_unchanged():
    bert = tiny_bert()
    ids, mask = batch()
    plain = run(bert, ids, mask)
    bank = add_pals(bert, TASKS, PALS, seed=0)
    for task in TASKS:
        assert torch.equal(run(bert, ids, mask, task, bank), plain)
    assert torch.count_nonzero(bank.pals["sst"].V_E.weight) > 0


def test_attention_placement_is_layer_norm_of_h_plus_attention_plus_pal():
    """Placement 'attention': a = LN(h + SA(h) + PAL(h)) built from BERT's own submodules, layer 0."""
    bert = tiny_bert()
    ids, _ = batch()
    bank = add_pals(bert, TASKS, PalSettings(HEADS, HEAD_DIM, placement="attention"), seed=0)
    make_influential(bank)
    seen = {}
    attention = bert.encoder.layer[0].attention
    attention.register_forward_hook(lambda m, args, out: seen.update(h=args[0], out=out[0]))
    with torch.no_grad(), bank.route("sts"):
        bert(input_ids=ids)
        h = seen["h"]
        sa = attention.output.dense(attention.self(h)[0])
        expected = attention.output.LayerNorm(h + sa + bank.pals["sts"](h, 0))
    torch.testing.assert_close(seen["out"], expected)


def test_output_placement_adds_the_pal_beside_the_feed_forward_block():
    """Placement 'output' (the default, the authors' reference code): the layer's output is
    LN(FFN(a) + a + PAL(h)) with a = LN(h + SA(h)) untouched and h the layer's input."""
    bert = tiny_bert()
    ids, _ = batch()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    assert bank.placement == "output"
    make_influential(bank)
    seen = {}
    layer = bert.encoder.layer[0]
    layer.register_forward_pre_hook(lambda m, args, kwargs: seen.update(h=kwargs.get("hidden_states", args[0] if args else None)),
                                    with_kwargs=True)
    layer.attention.register_forward_hook(lambda m, args, out: seen.update(a=out[0]))
    layer.register_forward_hook(lambda m, args, out: seen.update(out=out[0] if isinstance(out, tuple) else out))
    with torch.no_grad(), bank.route("para"):
        bert(input_ids=ids)
        h, a = seen["h"], seen["a"]
        attention = layer.attention
        torch.testing.assert_close(a, attention.output.LayerNorm(h + attention.output.dense(attention.self(h)[0])))
        ffn = layer.output.dense(layer.intermediate(a))
        expected = layer.output.LayerNorm(ffn + a + bank.pals["para"](h, 0))
    torch.testing.assert_close(seen["out"], expected)


def test_the_two_placements_differ_and_an_unknown_one_is_refused():
    ids, mask = batch()
    outputs = []
    for placement in ("output", "attention"):
        bert = tiny_bert()
        bank = add_pals(bert, TASKS, PalSettings(HEADS, HEAD_DIM, placement=placement), seed=0)
        make_influential(bank)
        outputs.append(run(bert, ids, mask, "sst", bank))
    assert not torch.allclose(outputs[0], outputs[1])


def test_low_rank_attention_matches_scaled_dot_product_attention():
    torch.manual_seed(0)
    g = LowRankAttention(HEADS, HEAD_DIM)
    x = torch.randn(2, 5, HEADS * HEAD_DIM)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    split = lambda t: t.view(2, 5, HEADS, HEAD_DIM).transpose(1, 2)  # noqa: E731
    ref = torch.nn.functional.scaled_dot_product_attention(
        split(g.query(x)), split(g.key(x)), split(g.value(x)), attn_mask=mask.bool()[:, None, None, :])
    torch.testing.assert_close(g(x, mask), ref.transpose(1, 2).flatten(2))


def test_gradients_reach_pals_and_v_e_learns_after_one_step():
    bert = tiny_bert()
    ids, mask = batch()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    freeze_all_but_pals(bert, bank)
    optimiser = torch.optim.SGD(bank.parameters(), lr=1.0)
    pal = bank.pals["sst"]

    run(bert, ids, mask, "sst", bank).pow(2).sum().backward()
    assert pal.V_D.weight.grad.any()
    assert not pal.V_E.weight.grad.any()  # V_D = 0 blocks everything below it on step 1
    optimiser.step()
    optimiser.zero_grad()

    run(bert, ids, mask, "sst", bank).pow(2).sum().backward()
    for name, p in pal.named_parameters():
        assert p.grad is not None and p.grad.any(), name
    assert bank.pals["para"].V_D.weight.grad is None  # not routed, not touched


def test_why_v_e_must_not_be_zero_report_init_gives_zero_gradients():
    """Regression for the report's init (V_E = V_D = 0): every PAL gradient is zero, forever."""
    bert = tiny_bert()
    ids, mask = batch()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    pal = bank.pals["sst"]
    torch.nn.init.zeros_(pal.V_E.weight)
    optimiser = torch.optim.AdamW(pal.parameters(), lr=1e-2)
    for _ in range(2):
        optimiser.zero_grad()
        run(bert, ids, mask, "sst", bank).pow(2).sum().backward()
        for name, p in pal.named_parameters():
            assert p.grad is not None and not p.grad.any(), name
        optimiser.step()
    assert not pal.V_E.weight.any() and not pal.V_D.weight.any()


def test_routing_selects_the_task_pal():
    bert = tiny_bert()
    ids, mask = batch()
    plain = run(bert, ids, mask)
    bank = add_pals(bert, TASKS, PALS, seed=0)
    make_influential(bank)
    sst, para = run(bert, ids, mask, "sst", bank), run(bert, ids, mask, "para", bank)
    assert not torch.allclose(sst, plain, atol=1e-3)
    assert not torch.allclose(para, plain, atol=1e-3)
    assert not torch.allclose(sst, para, atol=1e-3)
    assert torch.equal(run(bert, ids, mask), plain)  # outside a route
    assert torch.equal(run(bert, ids, mask, "no_pals_task", bank), plain)
    with bank.route("sst"):
        with bank.route("para"):
            assert torch.equal(run(bert, ids, mask), para)
        assert torch.equal(run(bert, ids, mask), sst)
    assert bank.active_task is None


def test_padding_does_not_change_real_positions():
    bert = tiny_bert()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    make_influential(bank)
    ids, mask = batch()
    padded_ids = torch.cat([ids, torch.zeros(3, 4, dtype=ids.dtype)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 4, dtype=mask.dtype)], dim=1)
    short = run(bert, ids, mask, "sst", bank)
    long = run(bert, padded_ids, padded_mask, "sst", bank)
    real = mask.bool()
    torch.testing.assert_close(long[:, :7][real], short[real], atol=1e-5, rtol=0)
    # Positional mask argument works too.
    with bank.route("sst"):
        positional = bert(padded_ids, padded_mask).last_hidden_state
    assert torch.equal(positional, long)


def test_freeze_helper_and_parameter_counts():
    bert = tiny_bert()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    model = torch.nn.ModuleDict({"bert": bert, "pals": bank, "head": torch.nn.Linear(32, 5)})
    trainable = freeze_all_but_pals(model, bank)
    assert {id(p) for p in trainable} == {id(p) for p in bank.parameters()}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {f"pals.{n}" for n, _ in bank.named_parameters()}
    H, L, d = 32, 2, HEADS * HEAD_DIM
    expected = 2 * H * d + L * 3 * (d * d + d)  # V_E, V_D; per layer Q, K, V with biases
    assert {t: sum(p.numel() for p in pal.parameters()) for t, pal in bank.pals.items()} == {t: expected for t in TASKS}
    assert sum(p.numel() for p in trainable) == 3 * expected


def test_state_dict_round_trip_and_bert_keys_unchanged(tmp_path):
    bert = tiny_bert()
    keys = list(bert.state_dict())
    bank = add_pals(bert, TASKS, PALS, seed=0)
    make_influential(bank)
    assert list(bert.state_dict()) == keys
    ids, mask = batch()
    expected = run(bert, ids, mask, "para", bank)
    save_file(bank.state_dict(), tmp_path / "pals.safetensors")
    save_file(bert.state_dict(), tmp_path / "bert.safetensors")

    fresh = tiny_bert(seed=5)
    fresh.load_state_dict(load_file(tmp_path / "bert.safetensors"))
    loaded = add_pals(fresh, TASKS, PALS, seed=9)
    loaded.load_state_dict(load_file(tmp_path / "pals.safetensors"))
    assert torch.equal(run(fresh, ids, mask, "para", loaded), expected)

    # Re-attach: detach, then a bank built by hand and attached gives the same result.
    loaded.detach()
    assert torch.equal(run(fresh, ids, mask, "para", loaded), run(fresh, ids, mask))
    rebuilt = PalBank(TASKS, 32, 2, HEADS, HEAD_DIM)
    rebuilt.load_state_dict(load_file(tmp_path / "pals.safetensors"))
    rebuilt.eval().attach(fresh)
    assert torch.equal(run(fresh, ids, mask, "para", rebuilt), expected)
    with pytest.raises(RuntimeError):
        rebuilt.attach(fresh)


def test_deepcopy_of_model_carries_its_own_pals():
    bert = tiny_bert()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    make_influential(bank)
    model = torch.nn.ModuleDict({"bert": bert, "pals": bank})
    ids, mask = batch()
    expected = run(bert, ids, mask, "sst", bank)
    twin = copy.deepcopy(model)
    assert torch.equal(run(twin["bert"], ids, mask, "sst", twin["pals"]), expected)
    with torch.no_grad():
        twin["pals"].pals["sst"].V_D.weight.zero_()
    assert torch.equal(run(twin["bert"], ids, mask, "sst", twin["pals"]), run(bert, ids, mask))
    assert torch.equal(run(bert, ids, mask, "sst", bank), expected)
    twin["pals"].detach()
    assert torch.equal(run(bert, ids, mask, "sst", bank), expected)


def test_bf16_autocast_close_to_fp32():
    bert = tiny_bert()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    make_influential(bank)
    ids, mask = batch()
    fp32 = run(bert, ids, mask, "sts", bank)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = run(bert, ids, mask, "sts", bank)
    assert torch.isfinite(bf16).all()
    torch.testing.assert_close(bf16.float(), fp32, atol=0.02, rtol=0)


def test_encoder_alone_refuses_to_guess_the_mask():
    bert = tiny_bert()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    with bank.route("sst"), pytest.raises(RuntimeError, match="attention mask"):
        bert.encoder(torch.randn(1, 4, 32))


def test_gradient_checkpointing_is_refused_while_routed():
    bert = tiny_bert()
    bank = add_pals(bert, TASKS, PALS, seed=0)
    bert.activation_checkpointing_enable()
    bert.train()
    ids, mask = batch()
    run(bert, ids, mask)  # no route: plain BERT, checkpointing is fine
    with pytest.raises(RuntimeError, match="checkpointing"):
        run(bert, ids, mask, "sst", bank)
