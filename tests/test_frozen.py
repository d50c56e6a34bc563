"""Head-only comparisons on the frozen encoder: one row per variant, scored on validation."""
import pytest

from mtlib.config import ConfigError, with_overrides
from mtlib.tasks import metric_key
from mtlib.training.frozen import compare, frozen_scores
from tests.helpers import smoke_config


def test_frozen_scores_are_the_kept_epochs_validation_metrics(tmp_path):
    cfg = smoke_config(tmp_path, "base_model", "data.augment=false", "train.pretrain_args={epochs: 3, patience: null}")
    scores = frozen_scores(cfg)
    assert set(scores) == {metric_key(t) for t in cfg.train.tasks} | {"mean", "epochs"}
    assert scores["mean"] == pytest.approx(sum(scores[metric_key(t)] for t in cfg.train.tasks) / 3)
    assert len(set(scores["epochs"].values())) == 1  # joint: one epoch for every head
    assert frozen_scores(cfg) == scores  # deterministic


def test_compare_applies_each_variants_overrides(tmp_path):
    cfg = smoke_config(tmp_path, "base_model", "data.augment=false", "train.pretrain_args={epochs: 2, patience: null}")
    table = compare(cfg, {"cls": ["model.pooling=cls"], "mean": ["model.pooling=mean"],
                          "cosine": ["model.pooling=mean", "model.pair_mode=embedding",
                                     "model.head_overrides={para: {kind: cosine}, sts: {kind: cosine}}"]})
    assert list(table.index) == ["cls", "mean", "cosine"] and "mean" in table.columns
    assert table.loc["cls", "sts/pearson"] != table.loc["mean", "sts/pearson"]
    assert table.loc["cosine", "sst/acc"] == table.loc["mean", "sst/acc"]  # the same SST head on the same vectors


def test_with_overrides_validates_like_a_loaded_config(tmp_path):
    cfg = smoke_config(tmp_path)
    assert with_overrides(cfg, ["train.lr=0.5"]).train.lr == 0.5 and cfg.train.lr != 0.5
    with pytest.raises(ConfigError, match="model.pooling"):
        with_overrides(cfg, ["model.pooling=max"])
