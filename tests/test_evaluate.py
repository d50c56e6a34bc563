"""predict_split: inference mode and one autocast context give exactly the per-batch predictions."""
import numpy as np
import pytest
import torch

from mtlib.data.encode import eval_batches
from mtlib.data.prepare import prepare_data
from mtlib.model.backbone import load_tokenizer
from mtlib.model.multitask import build_model
from mtlib.tasks import TASKS
from mtlib.training.adjust import apply_adjustment
from mtlib.training.evaluate import predict_split
from mtlib.training.precision import autocast
from tests.helpers import smoke_config

CPU = torch.device("cpu")


def per_batch_reference(model, split, batch_size, pad_id, amp, adjustment=None):
    """predict_split as it was: no_grad, a fresh autocast context for every batch."""
    model.eval()
    predictions = np.zeros(len(split))
    with torch.no_grad():
        for batch in eval_batches(split, batch_size, pad_id):
            with autocast(amp, CPU):
                output = model(batch)
            if adjustment is None:
                predictions[batch.index] = TASKS[split.task].predict(output)
            else:
                predictions[batch.index] = apply_adjustment(output.float().softmax(-1), adjustment).numpy()
    return predictions


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_predictions_equal_the_per_batch_reference(tmp_path, amp):
    cfg = smoke_config(tmp_path)
    tokenizer = load_tokenizer(cfg.backbone)
    dev = prepare_data(cfg, tokenizer, splits=("dev",))["dev"]
    model = build_model(cfg).train()
    adjustment = torch.eye(5) + 0.3 * torch.rand(5, 5, generator=torch.Generator().manual_seed(0))
    for task, split in dev.items():
        got = predict_split(model, split, 7, tokenizer.pad_token_id, CPU, amp)
        assert model.training  # left as it was found
        np.testing.assert_array_equal(got, per_batch_reference(model, split, 7, tokenizer.pad_token_id, amp))
        model.train()
    adjusted = predict_split(model, dev["sst"], 7, tokenizer.pad_token_id, CPU, amp, adjustment)
    np.testing.assert_array_equal(adjusted, per_batch_reference(model, dev["sst"], 7, tokenizer.pad_token_id, amp,
                                                                adjustment))


def test_confidence_is_the_models_probability_of_the_predicted_class(tmp_path):
    cfg = smoke_config(tmp_path)
    tokenizer = load_tokenizer(cfg.backbone)
    dev = prepare_data(cfg, tokenizer, splits=("dev",))["dev"]
    model = build_model(cfg).eval()
    outputs = {}
    with torch.no_grad():
        for task, split in dev.items():
            batches = list(eval_batches(split, 7, tokenizer.pad_token_id))
            out = torch.cat([model(b).float() for b in batches])
            outputs[task] = out[np.argsort(np.concatenate([b.index for b in batches]))]  # rows in split order
    predictions, sure = predict_split(model, dev["sst"], 7, tokenizer.pad_token_id, CPU, confidence=True)
    np.testing.assert_allclose(sure, outputs["sst"].softmax(-1).max(-1).values.numpy(), atol=1e-6)
    predictions, sure = predict_split(model, dev["para"], 7, tokenizer.pad_token_id, CPU, confidence=True)
    positive = torch.sigmoid(outputs["para"].reshape(-1)).numpy()
    np.testing.assert_allclose(sure, np.where(predictions == 1, positive, 1 - positive), atol=1e-6)
    assert (sure >= 0.5).all()
    adjustment = torch.zeros(5, 5)
    adjustment[:, 2] = 1  # every row adjusted to class 2: its confidence is the model's P(class 2), not the max
    adjusted, sure = predict_split(model, dev["sst"], 7, tokenizer.pad_token_id, CPU, "none", adjustment, True)
    assert (adjusted == 2).all()
    np.testing.assert_allclose(sure, outputs["sst"].softmax(-1)[:, 2].numpy(), atol=1e-6)
    assert np.isnan(predict_split(model, dev["sts"], 7, tokenizer.pad_token_id, CPU, confidence=True)[1]).all()
