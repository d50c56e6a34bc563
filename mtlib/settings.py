"""The methods a config names, typed and checked when the config loads, before any data is read.

params.yaml names one method per axis (``train.sampler``, ``train.combiner``, ``model.head``,
...) and gives it its knobs (``combiner_args``, ``head_overrides``, ...). :func:`resolve` turns
them into one frozen settings object per axis (:class:`Methods`, ``Config.methods``), each
checking its own values: each rule about a setting is written once, here, and every problem is
a :class:`ConfigError` naming its full key. Torch-free, beside mtlib.config: the modules that
own the objects (a head, a combiner, SMART, PALs) build them from these settings, in registries
keyed like the ones here (tests/test_architecture.py checks that they match).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from mtlib.errors import ConfigError
from mtlib.tasks import TASK_NAMES, TASKS


def check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def choose(value, valid, key: str) -> None:
    check(value in valid, key, f"{value!r} is not one of {sorted(valid)}")


def _number(value, key: str, low: float, high: float = float("inf"), low_open: bool = False) -> None:
    """``value`` a number in [low, high] ((low, high] when ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    check(ok and (low < value if low_open else low <= value) and value <= high, key,
          f"must be a number in {'(' if low_open else '['}{low}, {high}], got {value!r}")


def _integer(value, key: str, low: int, optional: bool = False) -> None:
    ok = value is None and optional or isinstance(value, int) and not isinstance(value, bool) and value >= low
    check(ok, key, f"must be an integer >= {low}{' or null' if optional else ''}, got {value!r}")


def _at(key: str, build, *args, **kwargs):
    """``build(*args, **kwargs)``, the key of its ConfigError prefixed with ``key``."""
    try:
        return build(*args, **kwargs)
    except ConfigError as err:
        raise ConfigError(f"{key}.{err}") from None


def _knobs(cls, args: dict, key: str, **run):
    """``cls`` from the ``*_args`` mapping at ``key`` and what the run supplies (not knobs)."""
    fields = dataclasses.fields(cls)
    valid = [f.name for f in fields if f.name not in run]
    unknown = sorted(set(args) - set(valid))
    check(not unknown, key, f"unknown key(s) {unknown}; valid keys: {valid}")
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in {**args, **run}]
    check(not missing, key, f"missing key(s) {missing}")
    return _at(key, cls, **args, **run)


# ---------------------------------------------------------------------------- sampling and updates

# train.sampler, which task's batch comes next: mtlib.training.samplers (no sampler takes knobs)
SAMPLERS = ("random", "round_robin", "proportional", "square_root", "annealed")


# batch plan -> (every task has a batch in every update, an update is a group of group_size)
PLANS = {"sampled": (False, False), "each_task": (True, False), "compromise": (True, True),
         "compromise_reference": (True, True), "compromise_then_sampled": (True, True)}


@dataclass(frozen=True)
class PlanSettings:
    """``train.plan``: ``accumulation`` micro-batches (of every task, for each_task) or a
    group of ``group_size`` (Gradient Compromise, Pritsky et al. 2023: one batch of each task
    plus extras, so n >= the number of tasks)."""

    name: str
    accumulation: int
    group_size: int
    num_tasks: int

    def __post_init__(self):
        choose(self.name, PLANS, "plan")
        check(not self.grouped or self.group_size >= self.num_tasks, "group_size",
              f"must be >= the number of tasks ({self.num_tasks})")

    @property
    def per_task(self) -> bool:
        """Whether per-task gradients exist (what PCGrad and GradVac combine)."""
        return PLANS[self.name][0]

    @property
    def grouped(self) -> bool:
        return PLANS[self.name][1]

    @property
    def batches(self) -> int:
        """Micro-batches one update consumes."""
        return self.group_size if self.grouped else self.accumulation * (self.num_tasks if self.per_task else 1)


def plan_settings(t) -> PlanSettings:
    """The batch plan's settings from a TrainConfig (mtlib.config)."""
    return _at("train", PlanSettings, t.plan, t.accumulation, t.group_size, len(t.tasks))


# ---------------------------------------------------------------------------- combiners


@dataclass(frozen=True)
class SumSettings:
    """Plain multitask learning, the tasks' gradients summed: no knobs."""

    name: ClassVar[str] = "sum"
    needs_task_gradients: ClassVar[bool] = False  # the loop lets backward add them up


@dataclass(frozen=True)
class PCGradSettings:
    """PCGrad (Yu et al. 2020): no knobs."""

    name: ClassVar[str] = "pcgrad"
    needs_task_gradients: ClassVar[bool] = True


@dataclass(frozen=True)
class GradVacSettings:
    """GradVac (Wang et al. 2020): ``beta``, the rate of the cosine targets' moving average
    phi_hat <- (1 - beta) phi_hat + beta phi, 0.01 in the paper; in (0, 1]."""

    name: ClassVar[str] = "gradvac"
    needs_task_gradients: ClassVar[bool] = True
    beta: float = 0.01

    def __post_init__(self):
        _number(self.beta, "beta", 0, 1, low_open=True)


COMBINERS = {cls.name: cls for cls in (SumSettings, PCGradSettings, GradVacSettings)}  # mtlib.training.combiners
GRANULARITIES = {"whole": False, "layer": True}  # train.granularity -> a gradient segment per layer


# ---------------------------------------------------------------------------- heads

ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU", "tanh": "Tanh"}  # name -> torch.nn class


@dataclass(frozen=True)
class MlpHeadSettings:
    """``linear`` (no hidden layer) and ``mlp`` heads on the sentence vector(s), and the MLP
    that a recurrent head feeds; ``hidden_size`` None: the encoder's."""

    parts: int  # sentence vectors side by side: 2 for a pair in embedding mode
    outputs: int
    hidden_layers: int
    hidden_size: int | None
    activation: str
    dropout: float

    def __post_init__(self):
        _integer(self.hidden_layers, "hidden_layers", 0)
        _integer(self.hidden_size, "hidden_size", 1, optional=True)
        choose(self.activation, ACTIVATIONS, "activation")
        _number(self.dropout, "dropout", 0, 1)


@dataclass(frozen=True)
class RecurrentHeadSettings(MlpHeadSettings):
    """An RNN or LSTM (``cell``, the torch.nn class) of ``rnn_size`` over the token states;
    ``with_cls``: the sentence vector beside its last state."""

    cell: str
    rnn_size: int
    with_cls: bool

    def __post_init__(self):
        super().__post_init__()
        _integer(self.rnn_size, "rnn_size", 1)


@dataclass(frozen=True)
class CosineHeadSettings:
    """a cos(u, v) + b of the two sentence vectors of a pair task in embedding mode."""

    parts: int
    outputs: int

    def __post_init__(self):
        check(self.parts == 2 and self.outputs == 1, "kind",
              "cosine needs a pair task (para, sts) and model.pair_mode=embedding")


def _settings(cls, **fixed):
    """(HeadConfig, parts, outputs) -> a ``cls`` of the HeadConfig's values that it takes, and ``fixed``."""
    def build(head, parts: int, outputs: int):
        values = {**dataclasses.asdict(head), "parts": parts, "outputs": outputs, **fixed}
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})
    return build


HEADS = {  # model.head.kind -> (HeadConfig, parts, outputs) -> settings; mtlib.model.heads builds them
    "linear": _settings(MlpHeadSettings, hidden_layers=0),
    "mlp": _settings(MlpHeadSettings),
    "cosine": _settings(CosineHeadSettings),
    "rnn": _settings(RecurrentHeadSettings, cell="RNN"),
    "lstm": _settings(RecurrentHeadSettings, cell="LSTM"),
}


def _head(m, task: str):
    """``task``'s head settings; a problem is named where its key was set (override or not)."""
    override, head = m.head_overrides.get(task, {}), m.head_for(task)
    try:
        choose(head.kind, HEADS, "kind")
        parts = 2 if TASKS[task].is_pair and m.pair_mode == "embedding" else 1
        return HEADS[head.kind](head, parts, TASKS[task].num_outputs)
    except ConfigError as err:
        where = f"model.head_overrides.{task}" if str(err).split(":")[0] in override else "model.head"
        raise ConfigError(f"{where}.{err}") from None


# ---------------------------------------------------------------------------- SMART, PALs, pretraining


@dataclass(frozen=True)
class SmartSettings:
    """SMART (Jiang et al. 2020; mtlib.training.smart): the weights of R_s and D_Breg, the
    inner maximisation's radius, noise, step and steps, the teacher's EMA decays
    (``total_steps`` None: the run's updates) and R_s's precision. Defaults: the paper's."""

    lambda_s: float = 1.0
    mu: float = 1.0
    epsilon: float = 1e-5
    noise_std: float = 1e-5
    step_size: float = 1e-3
    steps: int = 1
    ema_decay: float = 0.99
    ema_decay_late: float = 0.999
    total_steps: int | None = None
    precision: str = "fp32"

    def __post_init__(self):
        for name in ("lambda_s", "mu", "epsilon", "noise_std", "step_size"):
            _number(getattr(self, name), name, 0)
        _integer(self.steps, "steps", 0)
        _number(self.ema_decay, "ema_decay", 0, 1)
        _number(self.ema_decay_late, "ema_decay_late", 0, 1)
        _integer(self.total_steps, "total_steps", 1, optional=True)
        choose(self.precision, ("fp32", "amp"), "precision")


PAL_PLACEMENTS = ("output", "attention")  # mtlib.model.pal.PLACEMENTS
PAL_MODES = {"none": None, "start": False, "after": True}  # model.pals -> only the PALs train (None: no PALs)


@dataclass(frozen=True)
class PalSettings:
    """PALs (Stickland and Murray 2019; mtlib.model.pal.add_pals): ``num_heads`` x
    ``head_dim`` per task, attention dropout (None: BERT's), where their output enters the
    layer; ``after`` (model.pals): added to a fine-tuned model, only they train."""

    num_heads: int
    head_dim: int
    dropout: float | None = None
    placement: str = "output"
    after: bool = False

    def __post_init__(self):
        _integer(self.num_heads, "num_heads", 1)
        _integer(self.head_dim, "head_dim", 1)
        if self.dropout is not None:
            _number(self.dropout, "dropout", 0, 1)
        choose(self.placement, PAL_PLACEMENTS, "placement")


SELECTIONS = {"none": None, "joint": "joint", "individual": "individual"}  # train.pretrain_heads


@dataclass(frozen=True)
class PretrainSettings:
    """Head pretraining on the frozen encoder (mtlib.training.pretrain.pretrain_heads): AdamW's
    ``lr`` and ``weight_decay``, up to ``epochs``, ``patience`` (None: never stop early), at
    most ``max_examples`` per task (None: all); ``selection`` (train.pretrain_heads) of the
    kept epoch, joint or individual (None: a run does not pretrain)."""

    lr: float = 1e-3
    epochs: int = 25
    patience: int | None = 3
    weight_decay: float = 0.0
    max_examples: int | None = None
    selection: str | None = "individual"

    def __post_init__(self):
        _number(self.lr, "lr", 0, low_open=True)
        _integer(self.epochs, "epochs", 1)
        _integer(self.patience, "patience", 1, optional=True)
        _number(self.weight_decay, "weight_decay", 0)
        _integer(self.max_examples, "max_examples", 1, optional=True)


# ---------------------------------------------------------------------------- what trains, and for how long

TRAINABLE = {"all": False, "heads": True}  # train.trainable -> the encoder is frozen


@dataclass(frozen=True)
class MatchSettings:
    """``train.match_examples``: a one-task run trained on as many batches of its task as a
    multitask run over ``tasks`` drawing them with ``sampler`` (with this run's epochs,
    batches per epoch, accumulation and seed, on this run's training data) gives that task:
    the same examples of the task seen, seed by seed. The study's single-task ``_matched``
    rows name base_model's tasks and sampler (a test checks they agree). The count is taken
    from the prepared data (mtlib.training.plans.total_updates)."""

    tasks: tuple
    sampler: str
    task: str  # the run's one task (train.tasks)

    def __post_init__(self):
        check(isinstance(self.tasks, (list, tuple)) and len(set(self.tasks)) == len(self.tasks) > 1, "tasks",
              f"must list two or more distinct tasks, got {self.tasks!r}")
        for task in self.tasks:
            choose(task, TASK_NAMES, "tasks")
        choose(self.sampler, SAMPLERS, "sampler")
        check(self.task in self.tasks, "tasks", f"must include the run's task {self.task!r}")


def _match(t, plan: PlanSettings) -> MatchSettings | None:
    if t.match_examples is None:
        return None
    check(len(t.tasks) == 1, "train.match_examples", f"sizes a one-task run's budget; train.tasks is {list(t.tasks)}")
    check(plan.name == "sampled", "train.match_examples", f"needs train.plan=sampled, got {plan.name!r}")
    return _knobs(MatchSettings, {key: tuple(value) if key == "tasks" and isinstance(value, list) else value
                                          for key, value in t.match_examples.items()},
                  "train.match_examples", task=t.tasks[0])


def _frozen(t, pals) -> bool:
    choose(t.trainable, TRAINABLE, "train.trainable")
    frozen = TRAINABLE[t.trainable]
    check(not frozen or pals is None, "train.trainable", "heads: leave model.pals at none (PALs train the encoder's layers)")
    check(not frozen or t.method == "finetune", "train.trainable", f"heads applies to train.method=finetune, not {t.method!r}")
    return frozen


# ---------------------------------------------------------------------------- one run's methods

METHODS = ("finetune", "heads", "posthoc", "random")  # train.method: mtlib.training.loop.METHODS


@dataclass(frozen=True)
class Methods:
    """Every method one config names, as settings (``Config.methods``)."""

    method: str
    plan: PlanSettings
    combiner: SumSettings | PCGradSettings | GradVacSettings
    per_layer: bool                # the combiner treats each layer's gradient apart
    heads: dict                    # task -> MlpHeadSettings | RecurrentHeadSettings | CosineHeadSettings
    smart: SmartSettings | None    # None: SMART off
    pals: PalSettings | None       # None: no PALs
    pretrain: PretrainSettings
    frozen_encoder: bool = False   # train.trainable=heads: only the heads train
    match: MatchSettings | None = None  # train.match_examples: the budget of a one-task run


def _combiner(t, plan: PlanSettings):
    choose(t.combiner, COMBINERS, "train.combiner")
    combiner = _knobs(COMBINERS[t.combiner], t.combiner_args, "train.combiner_args")
    check(plan.per_task or not combiner.needs_task_gradients, "train.combiner",
          f"{t.combiner!r} needs a gradient per task, which train.plan={t.plan!r} does not give: use one of "
          f"{sorted(name for name, (per_task, _) in PLANS.items() if per_task)}")
    return combiner


def _pals(m, t) -> PalSettings | None:
    choose(m.pals, PAL_MODES, "model.pals")
    after = PAL_MODES[m.pals]
    check(not after or bool(t.init_from), "model.pals",
          "after: PALs are added to a fine-tuned model; set train.init_from")
    pals = _knobs(PalSettings, m.pal_args, "model.pal_args", after=bool(after))
    return None if after is None else pals


def _pretrain(t) -> PretrainSettings:
    choose(t.pretrain_heads, SELECTIONS, "train.pretrain_heads")
    choose(t.method, METHODS, "train.method")
    check(t.method != "heads" or SELECTIONS[t.pretrain_heads] is not None, "train.pretrain_heads",
          "train.method=heads trains only the heads: set it to joint or individual")
    check(t.method != "posthoc" or bool(t.init_from), "train.init_from",
          "train.method=posthoc scores a trained run: set it to the run's folder")
    return _knobs(PretrainSettings, t.pretrain_args, "train.pretrain_args", selection=SELECTIONS[t.pretrain_heads])


def resolve(m, t) -> Methods:
    """The :class:`Methods` of a config's ``model`` and ``train`` sections (ModelConfig and
    TrainConfig, mtlib.config); the ConfigError names the first wrong key."""
    choose(t.sampler, SAMPLERS, "train.sampler")
    plan = plan_settings(t)
    choose(t.granularity, GRANULARITIES, "train.granularity")
    smart = _knobs(SmartSettings, t.smart_args, "train.smart_args")
    combiner, pals = _combiner(t, plan), _pals(m, t)
    frozen = _frozen(t, pals)
    check(not frozen or not combiner.needs_task_gradients, "train.trainable",
          f"heads leaves no shared gradient for train.combiner={t.combiner!r} to combine")
    return Methods(t.method, plan, combiner, GRANULARITIES[t.granularity],
                   {task: _head(m, task) for task in TASK_NAMES}, smart if t.smart else None, pals, _pretrain(t),
                   frozen, _match(t, plan))
