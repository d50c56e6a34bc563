"""One frozen config tree, loaded strictly from params.yaml.

params.yaml has a ``base`` section holding every knob, named ``profiles`` (smoke, cpu,
paper) and named ``experiments``: one entry per experiment, whose ``set`` is a partial tree
of overrides (its other keys are the study's: see :class:`Experiment`). A run's config is
``base <- profiles[profile] <- experiments[experiment].set <- --set overrides``; the result
must fill every field of :class:`Config` exactly: an unknown key or a missing one is an
error that names where it was found.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtlib.errors import ConfigError
from mtlib.settings import Methods, check, choose, resolve
from mtlib.tasks import TASK_NAMES

TOP_LEVEL_KEYS = ("profile", "seeds", "base", "profiles", "experiments", "pipeline", "best_model")


@dataclass(frozen=True)
class PerTask:
    """One value per task, spelled ``{sst: .., para: .., sts: ..}`` in YAML."""

    sst: Any
    para: Any
    sts: Any

    def __getitem__(self, task: str) -> Any:
        if task not in TASK_NAMES:
            raise KeyError(task)
        return getattr(self, task)


@dataclass(frozen=True)
class BackboneConfig:
    name: str          # a Hugging Face id, a local folder, 'minilm' or 'tiny-random'
    max_length: int    # tokens per sequence; pairs truncate the longer sentence first
    pretrained: bool   # False: same architecture, random weights (no-pretraining control)


@dataclass(frozen=True)
class DataConfig:
    dir: str | None          # None: $MTLIB_DATA, else ../shared/data/cs224n, else download
    cache_dir: str           # tokenised data and encoder features, keyed by what they depend on
    processed_dir: str       # augmented training files with their before/after class counts
    validation_size: PerTask  # examples held out of train per task, fixed sample: model selection
    train_size: PerTask      # training examples kept per task (None: all the rest), seeded sample
    dev_size: PerTask        # dev examples scored once, at the end (None: all), fixed sample
    bucketing: bool          # group similar lengths into batches (less padding)
    length_filter: float     # fraction of each task's longest training inputs dropped
    augment: bool            # EDA-augmented, class-balanced SST and Quora training data


@dataclass(frozen=True)
class HeadConfig:
    kind: str                # see mtlib.settings.HEADS
    hidden_layers: int       # MLP hidden layers (0: dropout + linear)
    hidden_size: int | None  # None: the encoder's hidden size
    activation: str
    dropout: float
    rnn_size: int            # RNN/LSTM heads only
    with_cls: bool           # RNN/LSTM heads: concatenate the [CLS] embedding


@dataclass(frozen=True)
class ModelConfig:
    pair_mode: str                     # 'sentence' (one sequence) or 'embedding' (two passes)
    pooling: str                       # sentence vector: 'cls' (the [CLS] state) or 'mean' (of the tokens)
    head: HeadConfig                   # every task's head ...
    head_overrides: dict = field(default_factory=dict)  # ... unless overridden: {task: {key: value}}
    pals: str = "none"                 # projected attention layers: 'none', 'start' or 'after' (fine-tuning)
    pal_args: dict = field(default_factory=dict)        # mtlib.settings.PalSettings: num_heads, head_dim, ...

    def head_for(self, task: str) -> HeadConfig:
        return dataclasses.replace(self.head, **self.head_overrides.get(task, {}))


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    epochs: int
    batches_per_epoch: int        # micro-batches per epoch: one data budget whatever the batch plan
    batch_size: PerTask           # physical (micro-)batch size per task
    accumulation: int             # distinct micro-batches per optimiser update
    lr: float
    weight_decay: float
    schedule: str                 # 'constant' or 'linear' (decay to 0 after warm-up)
    warmup_steps: int
    max_grad_norm: float | None
    tasks: tuple                  # the tasks trained (and scored); all three unless single-task
    sampler: str                  # see mtlib.settings.SAMPLERS
    plan: str                     # the batches one update is made of, see mtlib.settings.PLANS
    group_size: int               # Gradient Compromise: batches per update (n)
    combiner: str                 # how per-task gradients combine, see mtlib.settings.COMBINERS
    combiner_args: dict           # the combiner's own knobs, e.g. {beta: 0.01} for gradvac
    granularity: str              # 'whole' or 'layer': segments the combiner treats separately
    smart: bool                   # add SMART's regularisers to the loss
    smart_args: dict              # SMART's knobs (mtlib.settings.SmartSettings); {} = the paper's defaults
    method: str                   # see mtlib.settings.METHODS: finetune, heads (frozen encoder), random
    pretrain_heads: str           # heads trained on the frozen encoder first: 'none', 'joint' or 'individual'
    pretrain_args: dict           # mtlib.settings.PretrainSettings: lr, epochs, patience, ...
    init_from: str | None         # a run folder whose best weights start this run ({seed} is filled in)
    trainable: str                # 'all' weights train, or only the task 'heads' (mtlib.settings.TRAINABLE)
    match_examples: dict | None   # {tasks, sampler}: a one-task run's budget, mtlib.settings.MatchSettings
    sst_adjustment: bool          # fit the 5x5 SST adjustment matrix after training
    amp: str                      # 'auto' (per machine, mtlib.training.precision), 'none', 'bf16' or 'fp16'
    eval_every: int | None        # micro-batches between validation evaluations (whole updates); None: per epoch
    eval_batch_size: int
    patience: int | None          # evaluations without a better validation score before stopping
    device: str                   # 'auto', 'cpu', 'cuda' or 'cuda:N' (pins one GPU)
    num_threads: int | None       # torch CPU threads; None: torch's default
    keep_checkpoint: bool         # keep the best weights in the run folder when done
    predict_test: bool            # also write predictions for the test-student files


@dataclass(frozen=True)
class ReportRow:
    """A row of the report's Table 2 (dev set), as params.yaml's experiments quote it."""

    label: str
    sst: float   # accuracy
    para: float  # accuracy
    sts: float   # Pearson r
    mean: float


@dataclass(frozen=True)
class Experiment:
    """An experiment's entry in params.yaml: all it is declared by, in one place, checked
    strictly (a misspelt key would silently drop a parent, a report row or the run flag)."""

    set: dict                 # its overrides of base + profile
    parent: str | None        # the experiment its paired difference is taken against
    report: ReportRow | None  # its row of the report's Table 2 (None: the report has none)
    group: str | None         # the figure of learning curves it is drawn in (None: no curve)
    run: bool                 # whether the pipeline (dvc.yaml) runs it


@dataclass(frozen=True)
class Config:
    profile: str
    experiment: str
    backbone: BackboneConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @functools.cached_property
    def methods(self) -> Methods:
        """The methods the config names, typed (mtlib.settings); not a field, so neither
        ``to_dict`` (config.yaml) nor the run's fingerprint sees it."""
        return resolve(self.model, self.train)


# A leaf field's type -> (what YAML may give for it, its name in an error, how to convert it).
# A bool is an int to Python, never to a config. YAML reads 1e-5 (no dot) as a string.
LEAVES = {bool: (bool, "true/false", bool), int: (int, "an integer", int),
          float: ((int, float, str), "a number", float), str: (str, "a string", str),
          tuple: ((list, tuple), "a list", tuple), dict: (dict, "a mapping", dict)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
    [inner] = [a for a in args if a is not type(None)] if optional else [tp]  # X of ``X | None``
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where}: must not be null")
    if dataclasses.is_dataclass(inner):
        return _build(inner, value, where)
    if inner is Any:
        return value
    kind = typing.get_origin(inner) or inner  # tuple[str, ...] -> tuple
    if kind not in LEAVES:
        raise ConfigError(f"{where}: unsupported type {inner}")  # a bug in this module
    accepted, expected, convert = LEAVES[kind]
    if isinstance(value, accepted) and (kind is bool or not isinstance(value, bool)):
        try:
            return convert(value)
        except ValueError:  # float("abc")
            pass
    raise ConfigError(f"{where}: expected {expected}, got {value!r}")


def _build(cls, data: Any, where: str):
    """``cls`` from the mapping ``data`` found at the key path ``where`` ("" at the top)."""
    check(isinstance(data, dict), where or "the config", f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    check(not unknown, where or "the config", f"unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    values = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(f"{where or 'the config'}: missing key {name!r}")
        values[name] = _coerce(data[name], hints[name], f"{where}.{name}" if where else name)
    return cls(**values)


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """``train.lr=3e-5`` -> ``{'train': {'lr': 3e-5}}`` (the value is parsed as YAML)."""
    check("=" in text, f"--set {text!r}", "expected key.path=value")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    check(keys, f"--set {text!r}", "empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({yaml_problem(err)})") from None
    for key in reversed(keys):
        value = {key: value}
    return value


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong, and where."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(getattr(err, "problem", None) or err).split())


def read_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    check(path.exists(), str(path), "file not found")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    unknown = sorted(set(params) - set(TOP_LEVEL_KEYS))
    check(not unknown, str(path), f"unknown top-level key(s) {unknown}; valid: {list(TOP_LEVEL_KEYS)}")
    for key in ("base", "profiles", "experiments"):
        check(isinstance(params.get(key), dict), str(path), f"{key!r} must be a mapping")
    experiments = params["experiments"]
    for name, entry in experiments.items():
        _build(Experiment, entry, f"{path}: experiments.{name}")
    orphans = sorted(f"{name} -> {entry['parent']}" for name, entry in experiments.items()
                     if entry["parent"] not in (None, *experiments))
    check(not orphans, str(path), f"experiments name parents that are not experiments: {orphans}")
    return params


def load_config(path: str | Path = "params.yaml", experiment: str = "base_model", profile: str | None = None,
                seed: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Resolve one experiment on one profile into a validated :class:`Config`."""
    params = read_params(path)
    profile = profile or params.get("profile", "cpu")
    profiles, experiments = params["profiles"], params["experiments"]
    check(profile in profiles, str(path), f"unknown profile {profile!r}; choose one of {sorted(profiles)}")
    check(experiment in experiments, str(path),
          f"unknown experiment {experiment!r}; choose one of {sorted(experiments)}")
    seed_override = {} if seed is None else {"train": {"seed": seed}}
    layers = (profiles[profile], experiments[experiment]["set"], *map(parse_override, overrides), seed_override)
    tree = functools.reduce(merge, layers, params["base"])
    return config_from_dict({"profile": profile, "experiment": experiment, **tree},
                            where=f"{path} (experiment {experiment}, profile {profile})")


def resolve_seeds(seeds=None, path: str | Path = "params.yaml") -> list[int]:
    """The seeds a notebook trains: ``seeds`` as papermill passes it (an int, a list, or a
    string such as ``"1,2"``), or params.yaml's ``pipeline.seeds`` when it is None."""
    if seeds is None:
        seeds = (read_params(path).get("pipeline") or {}).get("seeds")
        check(seeds, str(path), "pipeline.seeds is missing or empty")
    if isinstance(seeds, str):
        seeds = seeds.replace(",", " ").split()
    values = seeds if isinstance(seeds, (list, tuple)) else [seeds]
    if not all(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and v.isdigit() for v in values):
        raise ConfigError(f"seeds: {seeds!r} is not a list of integers")
    resolved = [int(value) for value in values]
    check(resolved and len(set(resolved)) == len(resolved), "seeds",
          f"{seeds!r} must name at least one seed, each once")
    return resolved


def with_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """``cfg`` with ``--set``-style overrides applied, validated like a loaded config."""
    tree = functools.reduce(merge, map(parse_override, overrides), cfg.to_dict())
    return config_from_dict(tree, where=f"{cfg.experiment} with {list(overrides)}")


def load_config_file(path: str | Path) -> Config:
    """A resolved config written as YAML (a run folder's config.yaml, or the best model's): every
    field given, nothing merged; checked like a loaded config."""
    path = Path(path)
    check(path.is_file(), str(path), "file not found (a resolved config: a run folder's config.yaml)")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file") from None
    return config_from_dict(tree, where=str(path))


def config_from_dict(tree: dict, where: str = "config") -> Config:
    """A checked :class:`Config`; a problem is a ConfigError "<where>: <full key>: <what>"."""
    try:
        config = _build(Config, tree, "")
        validate(config)
        config.methods  # built now, so a wrong method or knob fails before any data is read
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return config


def validate(config: Config) -> None:
    """Checks that need more than one field. The methods' names and knobs are checked by
    their settings (:func:`mtlib.settings.resolve`)."""
    m, t, d = config.model, config.train, config.data
    choose(m.pair_mode, ("sentence", "embedding"), "model.pair_mode")
    choose(m.pooling, ("cls", "mean"), "model.pooling")
    for task, partial in m.head_overrides.items():
        choose(task, TASK_NAMES, "model.head_overrides")
        check(isinstance(partial, dict), f"model.head_overrides.{task}", "expected a mapping")
        _build(HeadConfig, {**dataclasses.asdict(m.head), **partial}, f"model.head_overrides.{task}")
    for task in TASK_NAMES:
        check(d.validation_size[task] is not None, f"data.validation_size.{task}", "must be a positive integer "
              "(checkpoints are selected on examples held out of train, never on dev)")
        check(t.batch_size[task] is not None and not t.batch_size[task] < 1, f"train.batch_size.{task}",
              "must be a positive integer")
        for name in ("validation_size", "train_size", "dev_size"):
            n = getattr(d, name)[task]
            check(n is None or isinstance(n, int) and n >= 1, f"data.{name}.{task}",
                  "must be a positive integer or null")
    check(t.tasks and len(set(t.tasks)) == len(t.tasks), "train.tasks", "must list distinct tasks")
    for task in t.tasks:
        choose(task, TASK_NAMES, "train.tasks")
    choose(t.amp, ("auto", "none", "bf16", "fp16"), "train.amp")
    choose(t.schedule, ("constant", "linear"), "train.schedule")
    check(re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device), "train.device",
          f"{t.device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    for name in ("epochs", "batches_per_epoch", "accumulation", "eval_batch_size"):
        check(getattr(t, name) >= 1, f"train.{name}", "must be >= 1")
    check(t.max_grad_norm is None or t.max_grad_norm > 0, "train.max_grad_norm",  # `>` also refuses nan
          f"must be > 0, or null for no clipping; got {t.max_grad_norm}")
    check(t.num_threads is None or t.num_threads >= 1, "train.num_threads",
          f"must be >= 1, or null for torch's default; got {t.num_threads}")
    check(0.0 <= d.length_filter < 1.0, "data.length_filter", "must be in [0, 1)")
    check(config.backbone.max_length >= 8, "backbone.max_length", "must be >= 8")
