"""The methods a config names, looked up in their registries and checked together.

params.yaml picks one value per axis by name (a sampler, an update rule, a combiner, a head
per task) and passes each method's own knobs to it (``combiner_args``, ``smart_args``,
``pal_args``, ``pretrain_args``). :func:`check` looks every name up and every knob against
the method's signature, before any data is read or any folder touched, and raises a
:class:`mtlib.config.ConfigError` naming the key and the valid values.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

from mtlib.config import Config, ConfigError
from mtlib.model.heads import HEADS
from mtlib.model.pal import add_pals
from mtlib.tasks import TASK_NAMES
from mtlib.training.combiners import COMBINERS
from mtlib.training.pretrain import HeadPretraining
from mtlib.training.samplers import SAMPLERS
from mtlib.training.smart import Smart
from mtlib.training.updates import UPDATES

# Knobs a method takes from elsewhere in the config, not from its own *_args dict.
_SET_BY_THE_RUN = {
    "pal_args": {"bert", "tasks", "seed"},
    "smart_args": {"model"},
    "pretrain_args": HeadPretraining.SET_BY_THE_RUN,
}


def lookup(registry: dict, name: str, where: str):
    """``registry[name]``, or a ConfigError naming ``where`` and the valid names."""
    if name not in registry:
        raise ConfigError(f"{where}: {name!r} is not one of {sorted(registry)}")
    return registry[name]


def check_knobs(method: Callable, knobs: dict, where: str, set_by_the_run=frozenset()) -> None:
    """Every key of ``knobs`` must be a parameter of ``method`` that the run does not set itself."""
    valid = [p for p in inspect.signature(method).parameters if p not in set_by_the_run and p != "self"]
    unknown = sorted(set(knobs) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {valid}")


def check(cfg: Config, where: str = "config") -> None:
    """Look up every method ``cfg`` names and check their knobs and their combination."""
    m, t = cfg.model, cfg.train
    for task in TASK_NAMES:
        lookup(HEADS, m.head_for(task).kind, f"{where}.model.head.kind ({task})")
    lookup(SAMPLERS, t.sampler, f"{where}.train.sampler")
    rule = lookup(UPDATES, t.update, f"{where}.train.update")
    combiner = lookup(COMBINERS, t.combiner, f"{where}.train.combiner")
    problem = rule.check(t)
    if problem:
        raise ConfigError(f"{where}.{problem}")
    if combiner.needs_task_gradients and not rule.per_task:
        raise ConfigError(f"{where}.train.combiner={t.combiner!r} needs a gradient per task, which "
                          f"train.update={t.update!r} does not give: use one of "
                          f"{sorted(name for name, r in UPDATES.items() if r.per_task)}")
    check_knobs(combiner, t.combiner_args, f"{where}.train.combiner_args")
    check_knobs(Smart, t.smart_args, f"{where}.train.smart_args", _SET_BY_THE_RUN["smart_args"])
    check_knobs(add_pals, m.pal_args, f"{where}.model.pal_args", _SET_BY_THE_RUN["pal_args"])
    check_knobs(HeadPretraining, t.pretrain_args, f"{where}.train.pretrain_args", _SET_BY_THE_RUN["pretrain_args"])
