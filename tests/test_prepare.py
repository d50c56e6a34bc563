"""The splits a run sees: validation held out of train, never shared with train or dev."""
import pytest

from mtlib.data.prepare import prepare_data, split_train
from mtlib.model.backbone import load_tokenizer
from mtlib.tasks import TASK_NAMES
from tests.helpers import smoke_config


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cfg = smoke_config(tmp_path_factory.mktemp("prepare"), "base_model", "data.augment=false",
                       "data.validation_size={sst: 10, para: 12, sts: 8}")
    return cfg, prepare_data(cfg, load_tokenizer(cfg.backbone))


def test_validation_is_disjoint_from_train_and_dev(prepared):
    cfg, data = prepared
    for task in TASK_NAMES:
        train, validation, dev = (set(data[s][task].ids) for s in ("train", "validation", "dev"))
        assert len(validation) == cfg.data.validation_size[task]
        assert not train & validation and not validation & dev and not train & dev
        assert len(train) + len(validation) == 40  # the generated training file: nothing lost


def test_validation_does_not_depend_on_the_training_seed(prepared, tmp_path):
    cfg, data = prepared
    other = prepare_data(smoke_config(tmp_path, "base_model", "data.augment=false", "train.seed=7",
                                      "data.validation_size={sst: 10, para: 12, sts: 8}", "data.train_size.sst=20"),
                         load_tokenizer(cfg.backbone))
    assert other["validation"]["sst"].ids == data["validation"]["sst"].ids
    assert set(other["train"]["sst"].ids) < set(data["train"]["sst"].ids)  # the sample comes from the rest


def test_validation_must_leave_training_rows():
    import pandas as pd

    frame = pd.DataFrame({"id": [str(i) for i in range(5)]})
    rest, held = split_train(frame, 2)
    assert len(rest) == 3 and len(held) == 2 and not set(rest["id"]) & set(held["id"])
    with pytest.raises(ValueError, match="leaves no training rows"):
        split_train(frame, 5)


def test_augmentation_is_the_same_for_every_seed(tmp_path):
    pytest.importorskip("nlpaug")
    from mtlib.data.nltk_data import DEFAULT_TARGET, is_complete

    if not is_complete(DEFAULT_TARGET):
        pytest.skip("NLTK data not built: run `python -m mtlib.data.nltk_data`")
    runs = [prepare_data(smoke_config(tmp_path, "augmented", f"train.seed={seed}"),
                         load_tokenizer(smoke_config(tmp_path).backbone)) for seed in (1, 2)]
    assert runs[0]["train"]["sst"].ids == runs[1]["train"]["sst"].ids
    assert len(runs[0]["train"]["sst"]) > 28  # balanced: rows were added
