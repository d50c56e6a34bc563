import pytest
import torch

import mtlib.training.adjust as adjust
from mtlib.training.adjust import apply_adjustment, fit_adjustment, load_adjustment, save_adjustment, sst_probabilities
from mtlib.model.backbone import load_tokenizer
from mtlib.training.evaluate import predict_split
from mtlib.model.multitask import build_model
from mtlib.data.prepare import prepare_data
from tests.helpers import smoke_config


def confused(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Five-class probabilities of a model that is right most of the time, except that it
    puts class 1 below class 0 — while still ranking 1 well above its usual share."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n,), generator=g)
    logits = 2.5 * torch.nn.functional.one_hot(labels, 5).float() + torch.randn(n, 5, generator=g)
    logits[labels == 1, 0] += 3.0
    return logits.softmax(-1), labels


def accuracy(predictions, labels) -> float:
    return float((predictions == labels).float().mean())


def test_the_fitted_matrix_undoes_a_systematic_confusion():
    probs, labels = confused(3000, seed=0)
    plain = accuracy(probs.argmax(-1), labels)
    W = fit_adjustment(probs, labels)
    assert W.shape == (5, 5)
    assert accuracy(apply_adjustment(probs, W), labels) > plain + 0.04  # 78% -> 85%
    class1 = labels == 1
    plain1 = accuracy(probs[class1].argmax(-1), 1)
    assert accuracy(apply_adjustment(probs[class1], W), labels[class1]) > plain1 + 0.3  # 38% -> 75%
    held_out, held_labels = confused(3000, seed=1)  # it is the confusion it learnt, not the rows
    assert accuracy(apply_adjustment(held_out, W), held_labels) > accuracy(held_out.argmax(-1), held_labels) + 0.04


def test_the_starting_matrix_reproduces_the_plain_argmax():
    probs, labels = confused(500, seed=2)
    W0 = fit_adjustment(probs, labels, steps=0)
    c = float(W0[0, 0])
    assert 1.0 < c <= adjust.MAX_SCALE and torch.equal(W0, c * torch.eye(5))
    assert torch.equal(apply_adjustment(probs, W0), probs.argmax(-1))
    assert torch.equal(apply_adjustment(probs, torch.eye(5)), probs.argmax(-1))
    # c is the best single scale: CE(c p) below its value a little either side
    ce = [float(torch.nn.functional.cross_entropy(probs * s, labels)) for s in (0.9 * c, c, 1.1 * c)]
    assert ce[1] < ce[0] and ce[1] < ce[2]


def test_the_fit_is_deterministic_and_l2_keeps_it_near_the_start():
    probs, labels = confused(800, seed=3)
    assert torch.equal(fit_adjustment(probs, labels), fit_adjustment(probs, labels))
    W0 = fit_adjustment(probs, labels, steps=0)
    loose, tight = fit_adjustment(probs, labels, l2=0.0), fit_adjustment(probs, labels, l2=10.0)
    assert (tight - W0).norm() < (loose - W0).norm()


def test_save_load_round_trip_is_exact(tmp_path):
    W = torch.randn(5, 5)
    meta = {"fitted_on": "sst-train", "rows": 8544, "accuracy": {"plain": 0.51, "adjusted": 0.52}}
    save_adjustment(tmp_path / "adjust" / "sst.safetensors", W, meta)
    loaded, loaded_meta = load_adjustment(tmp_path / "adjust" / "sst.safetensors")
    assert torch.equal(loaded, W) and loaded_meta == meta


def test_a_failed_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "sst.safetensors"
    save_adjustment(path, torch.eye(5), {"version": 1})
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(adjust, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_adjustment(path, 2 * torch.eye(5), {"version": 2})
    with pytest.raises(OSError):
        save_adjustment(tmp_path / "new.safetensors", torch.eye(5), {})
    assert path.read_bytes() == before and load_adjustment(path)[1] == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sst.safetensors"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cfg = smoke_config(tmp_path_factory.mktemp("adjust"))
    tokenizer = load_tokenizer(cfg.backbone)
    return build_model(cfg), prepare_data(cfg, tokenizer), tokenizer.pad_token_id


def test_sst_probabilities_are_distributions_in_row_order(smoke):
    model, data, pad_id = smoke
    probs = sst_probabilities(model, data["dev"]["sst"], 7, pad_id, torch.device("cpu"))
    assert probs.shape == (len(data["dev"]["sst"]), 5) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(probs)))
    plain = predict_split(model, data["dev"]["sst"], 7, pad_id, torch.device("cpu"))
    assert probs.argmax(-1).tolist() == plain.astype(int).tolist() and model.training
    with pytest.raises(ValueError, match="sst split"):
        sst_probabilities(model, data["dev"]["sts"], 7, pad_id, torch.device("cpu"))


def test_defect_7_the_fitted_matrix_is_saved_and_reloaded(smoke, tmp_path):
    """Reference-code defect 7: the matrix was never saved, and the run then crashed."""
    model, data, pad_id = smoke
    train = sst_probabilities(model, data["train"]["sst"], 16, pad_id, torch.device("cpu"))
    W = fit_adjustment(train, torch.tensor(data["train"]["sst"].labels).long())
    save_adjustment(tmp_path / "run" / "sst-adjustment.safetensors", W, {"rows": len(train)})
    loaded, meta = load_adjustment(tmp_path / "run" / "sst-adjustment.safetensors")
    dev = sst_probabilities(model, data["dev"]["sst"], 16, pad_id, torch.device("cpu"))
    assert meta == {"rows": len(train)} and torch.equal(apply_adjustment(dev, loaded), apply_adjustment(dev, W))
