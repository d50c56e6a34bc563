import numpy as np
import pytest
import torch

import mtlib.training.pretrain as pretrain
from mtlib.model.backbone import load_tokenizer
from mtlib.data.encode import collate
from mtlib.model.multitask import build_model
from mtlib.training.pretrain import HeadPretraining, encode_features, load_or_encode, pretrain_heads
from mtlib.tasks import TASKS, metric_key
from mtlib.data.prepare import prepare_data
from tests.helpers import smoke_config

LSTM = ("model.head.kind=lstm", "model.head.rnn_size=16", "model.head.with_cls=true", "model.pair_mode=embedding")


def setting(tmp_path_factory, *overrides):
    cfg = smoke_config(tmp_path_factory.mktemp("pretrain"), "base_model", *overrides)
    tokenizer = load_tokenizer(cfg.backbone)
    return cfg, prepare_data(cfg, tokenizer), tokenizer.pad_token_id


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    return setting(tmp_path_factory)


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    return setting(tmp_path_factory, *LSTM)


def run(cfg, data, pad_id, model=None, **kwargs):
    model = model if model is not None else build_model(cfg)
    kwargs = {"epochs": 4, "patience": None, "batch_size": 8, "seed": 0, "pad_id": pad_id, **kwargs}
    return model, pretrain_heads(model, data["train"], data["validation"], HeadPretraining(**kwargs))


def count_encoder_calls(model) -> list:
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


def without_seconds(history):
    return {task: [{k: v for k, v in row.items() if k != "seconds"} for row in rows] for task, rows in history.items()}


def head_states(model):
    return {task: {k: v.clone() for k, v in head.state_dict().items()} for task, head in model.heads.items()}


def test_a_cache_hit_does_not_run_the_encoder(linear, tmp_path):
    cfg, data, pad_id = linear
    model = build_model(cfg)
    calls = count_encoder_calls(model)
    split = data["train"]["sst"]
    first = load_or_encode(model, split, 16, pad_id, torch.device("cpu"), cache_dir=tmp_path)
    assert len(split) == 28  # 40 generated rows, 12 held out for validation
    assert len(calls) == 2 and len(list(tmp_path.glob("sst-*.safetensors"))) == 1  # 28 rows in batches of 16
    second = load_or_encode(model, split, 16, pad_id, torch.device("cpu"), cache_dir=tmp_path)
    assert len(calls) == 2 and torch.equal(first.pooled, second.pooled)

    same_weights = build_model(cfg)  # same seed: same encoder, so the same file
    same_calls = count_encoder_calls(same_weights)
    load_or_encode(same_weights, split, 16, pad_id, torch.device("cpu"), cache_dir=tmp_path)
    assert same_calls == []
    with torch.no_grad():
        same_weights.encoder.encoder.layer[-1].output.LayerNorm.bias.add_(0.5)
    load_or_encode(same_weights, split, 16, pad_id, torch.device("cpu"), cache_dir=tmp_path)
    assert len(same_calls) == 2 and len(list(tmp_path.glob("sst-*.safetensors"))) == 2  # other weights, other key
    assert not list(tmp_path.glob(".*.tmp"))

    run(cfg, data, pad_id, model, epochs=1, cache_dir=tmp_path / "all")
    encoded = len(calls)
    run(cfg, data, pad_id, model, epochs=2, cache_dir=tmp_path / "all")
    assert len(calls) == encoded  # the second pretraining reads every split from disk


def test_cached_token_states_equal_the_encoder_output(lstm, tmp_path):
    cfg, data, pad_id = lstm
    model = build_model(cfg).eval()
    split = data["train"]["para"]  # embedding mode: two parts
    load_or_encode(model, split, 16, pad_id, torch.device("cpu"), token_level=True, cache_dir=tmp_path)
    cached = load_or_encode(model, split, 16, pad_id, torch.device("cpu"), token_level=True, cache_dir=tmp_path)
    assert cached.tokens[0].dtype == torch.float16 and len(cached.tokens) == 2
    rows = np.array([5, 0, 17, 3, 27])
    with torch.no_grad():
        direct = model.features(collate(split, rows, pad_id))
    got = cached.batch(rows, torch.device("cpu"))
    assert got.pooled.shape == (5, 2 * model.encoder.config.hidden_size)
    torch.testing.assert_close(got.pooled, direct.pooled, atol=1e-5, rtol=0)
    for tokens, mask, want, want_mask in zip(got.tokens, got.masks, direct.tokens, direct.masks):
        assert torch.equal(mask, want_mask)
        torch.testing.assert_close(tokens, want * want_mask[..., None], atol=1e-2, rtol=0)
        assert tokens[mask == 0].eq(0).all()


def test_pretraining_lowers_each_training_loss_and_keeps_the_encoder(linear):
    cfg, data, pad_id = linear
    model = build_model(cfg)
    encoder = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("heads.")}
    flags = [p.requires_grad for p in model.parameters()]

    def training_loss(task):
        features = encode_features(model, data["train"][task], 64, pad_id, torch.device("cpu"))
        rows = np.arange(len(features))
        model.heads[task].eval()
        with torch.no_grad():
            out = pretrain._head_output(model.heads[task], features.batch(rows, torch.device("cpu")))
        return float(TASKS[task].loss(out, pretrain._labels(data["train"][task], rows, torch.device("cpu"))))

    before = {task: training_loss(task) for task in data["train"]}
    _, history = run(cfg, data, pad_id, model, epochs=10, lr=3e-3)
    for task, rows in history.items():
        assert rows[-1]["loss"] < rows[0]["loss"] and training_loss(task) < before[task], task
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in encoder.items())
    assert [p.requires_grad for p in model.parameters()] == flags and model.training


def test_the_best_epoch_is_restored_and_patience_stops(linear, monkeypatch):
    cfg, data, pad_id = linear
    script, snapshots = iter([0.2, 0.6, 0.4, 0.5, 0.3, 0.9]), []

    def scripted_metric(trainer):
        snapshots.append({k: v.clone() for k, v in trainer.head.state_dict().items()})
        return next(script)

    monkeypatch.setattr(pretrain.HeadTrainer, "validation_score", scripted_metric)
    only_sst = {"train": {"sst": data["train"]["sst"]}, "validation": data["validation"]}
    model, history = run(cfg, only_sst, pad_id, epochs=25, patience=3)
    assert [row["epoch"] for row in history["sst"]] == [1, 2, 3, 4, 5]  # 3 epochs without beating 0.6
    final = model.heads["sst"].state_dict()
    assert all(torch.equal(final[k], v) for k, v in snapshots[1].items())
    assert not all(torch.equal(final[k], v) for k, v in snapshots[-1].items())


def test_the_final_head_scores_the_best_validation_metric_of_its_history(lstm):
    cfg, data, pad_id = lstm
    model, history = run(cfg, data, pad_id, epochs=10, lr=3e-3)
    best_epochs = []
    for task, rows in history.items():
        split = data["validation"][task]
        features = encode_features(model, split, 64, pad_id, torch.device("cpu"), token_level=True)
        predictions = pretrain.predict_features(model.heads[task], features, split, 64, torch.device("cpu"), "none")
        score = TASKS[task].score(predictions, split.labels)
        metrics = [row[metric_key(task)] for row in rows]
        assert score == max(metrics)
        best_epochs.append(metrics.index(max(metrics)) + 1)
    assert min(best_epochs) < 10  # at least one head is not simply its last epoch


def test_lstm_heads_on_embedding_pairs_train_on_token_states(lstm, tmp_path):
    cfg, data, pad_id = lstm
    model = build_model(cfg)
    before = head_states(model)
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    _, history = run(cfg, data, pad_id, model, epochs=3, cache_dir=tmp_path)
    assert set(history) == {"sst", "para", "sts"} and all(len(rows) == 3 for rows in history.values())
    files = sorted(p.name.split("-")[0] for p in tmp_path.glob("*.safetensors"))
    assert files == ["para", "para", "sst", "sst", "sts", "sts"]  # train and validation per task
    after = head_states(model)
    assert all(not torch.equal(before[t]["rnn.weight_ih_l0"], after[t]["rnn.weight_ih_l0"]) for t in after)
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in encoder.items())


def test_same_seed_same_heads_other_seed_differs_and_cache_changes_nothing(lstm):
    cfg, data, pad_id = lstm
    a, history_a = run(cfg, data, pad_id, epochs=3)
    b, history_b = run(cfg, data, pad_id, epochs=3)
    c, _ = run(cfg, data, pad_id, epochs=3, seed=1)
    d, history_d = run(cfg, data, pad_id, epochs=3, cache=False)  # the encoder on every batch
    assert without_seconds(history_a) == without_seconds(history_b)
    heads = [head_states(m) for m in (a, b, c, d)]
    assert all(torch.equal(heads[0][t][k], heads[1][t][k]) for t in heads[0] for k in heads[0][t])
    assert not all(torch.equal(heads[0][t][k], heads[2][t][k]) for t in heads[0] for k in heads[0][t])
    for task in heads[0]:
        for k, v in heads[0][task].items():
            torch.testing.assert_close(heads[3][task][k], v, atol=1e-4, rtol=0)
    for task, rows in history_a.items():
        assert [r[metric_key(task)] for r in rows] == pytest.approx([r[metric_key(task)] for r in history_d[task]],
                                                                    abs=1e-5)


def test_global_rng_is_left_alone(linear):
    cfg, data, pad_id = linear
    model = build_model(cfg)
    state = torch.get_rng_state()
    run(cfg, data, pad_id, model, epochs=1)
    assert torch.equal(torch.get_rng_state(), state)


def test_joint_heads_equal_each_head_trained_alone_for_the_jointly_chosen_epoch(linear):
    """Heads share nothing and the encoder is frozen: joint pretraining is each head's own
    trajectory, stopped at ONE epoch chosen by the mean validation metric."""
    cfg, data, pad_id = linear
    model, history = run(cfg, data, pad_id, epochs=6, patience=None, lr=3e-3, selection="joint")
    kept = {task: [row["epoch"] for row in rows if row["kept"]] for task, rows in history.items()}
    assert len({tuple(k) for k in kept.values()}) == 1 and len(kept["sst"]) == 1  # one epoch for all heads
    epoch = kept["sst"][0]
    means = np.mean([[row[metric_key(t)] for row in rows] for t, rows in history.items()], axis=0)
    assert epoch == int(np.argmax(means)) + 1
    for task in history:
        alone = build_model(cfg)
        sources = pretrain.feature_sources(alone, [data["train"][task], data["validation"][task]], False, 128, pad_id,
                                           torch.device("cpu"), "none")
        trainer = pretrain.HeadTrainer(alone.heads[task], data["train"][task], data["validation"][task], sources, 8,
                                       HeadPretraining(lr=3e-3, seed=0))
        alone.eval()
        rows = [trainer.epoch() for _ in range(epoch)]
        assert [r[metric_key(task)] for r in rows] == [r[metric_key(task)] for r in history[task][:epoch]]
        assert all(torch.equal(v, model.heads[task].state_dict()[k]) for k, v in alone.heads[task].state_dict().items())


def test_individual_heads_keep_their_own_best_epochs(linear):
    cfg, data, pad_id = linear
    _, joint = run(cfg, data, pad_id, epochs=6, patience=None, lr=3e-3, selection="joint")
    _, individual = run(cfg, data, pad_id, epochs=6, patience=None, lr=3e-3, selection="individual")
    for task, rows in individual.items():
        scores = [row[metric_key(task)] for row in rows]
        assert [row["kept"] for row in rows].index(True) == int(np.argmax(scores))
        assert scores == [row[metric_key(task)] for row in joint[task]]  # same trajectory either way


def test_max_examples_trains_every_seed_on_the_same_fixed_sample(linear, tmp_path):
    cfg, data, pad_id = linear
    sample = pretrain.pretraining_sample(data["train"]["sst"], 10)
    assert len(sample) == 10 and set(sample.ids) < set(data["train"]["sst"].ids)
    assert pretrain.pretraining_sample(data["train"]["sst"], 100) is data["train"]["sst"]
    a, _ = run(cfg, data, pad_id, epochs=2, max_examples=10, cache_dir=tmp_path)
    b, _ = run(cfg, data, pad_id, epochs=2, max_examples=10, cache_dir=tmp_path, seed=1)
    c, _ = run(cfg, data, pad_id, epochs=2)
    assert len(list(tmp_path.glob("sst-*"))) == 2  # the sample and validation, once for both seeds
    assert not all(torch.equal(v, head_states(b)[t][k]) for t, s in head_states(a).items() for k, v in s.items())
    assert not all(torch.equal(v, head_states(c)[t][k]) for t, s in head_states(a).items() for k, v in s.items())


def test_heads_train_on_one_thread_whatever_the_callers_count(linear, tmp_path, monkeypatch):
    """Heads are too small for two threads; the count is restored, and since features come
    from the same cache, a caller with 2 threads gets exactly a 1-thread caller's heads."""
    cfg, data, pad_id = linear
    seen = []
    original = pretrain.HeadTrainer.epoch
    monkeypatch.setattr(pretrain.HeadTrainer, "epoch", lambda self: (seen.append(torch.get_num_threads()), original(self))[1])
    torch.set_num_threads(2)
    try:
        two, history_two = run(cfg, data, pad_id, cache_dir=tmp_path, epochs=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    one, history_one = run(cfg, data, pad_id, cache_dir=tmp_path, epochs=2)
    assert seen and set(seen) == {1}
    assert [[{k: v for k, v in row.items() if k != "seconds"} for row in rows] for rows in history_two.values()] == \
        [[{k: v for k, v in row.items() if k != "seconds"} for row in rows] for rows in history_one.values()]
    for key, value in two.heads.state_dict().items():
        assert torch.equal(value, one.heads.state_dict()[key]), key
