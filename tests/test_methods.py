"""mtlib.training.methods: every name a config gives is looked up, every knob checked, up front."""
import pytest

from mtlib.config import ConfigError, load_config
from mtlib.training import methods
from tests.helpers import ROOT

PARAMS = ROOT / "params.yaml"


def check(*overrides, experiment="base_model"):
    methods.check(load_config(PARAMS, experiment, "smoke", overrides=list(overrides)))


def test_every_experiment_of_params_yaml_passes():
    import yaml

    for name in yaml.safe_load(PARAMS.read_text())["experiments"]:
        check(experiment=name, *(["train.init_from=x"] if "pal_after" in name else []))


@pytest.mark.parametrize("override, message", [
    ("train.sampler=nope", r"train.sampler: 'nope' is not one of \['annealed'"),
    ("train.update=nope", r"train.update: 'nope' is not one of"),
    ("train.combiner=mgda", r"train.combiner: 'mgda' is not one of \['gradvac', 'pcgrad', 'sum'\]"),
    ("model.head.kind=cnn", r"model.head.kind \(sst\): 'cnn' is not one of"),
])
def test_unknown_names_list_the_valid_ones(override, message):
    with pytest.raises(ConfigError, match=message):
        check(override)


def test_a_combiner_that_needs_task_gradients_needs_an_update_that_gives_them():
    with pytest.raises(ConfigError, match=r"needs a gradient per task.*\['compromise', 'compromise_reference', 'compromise_then_sampled', 'each_task'\]"):
        check("train.combiner=pcgrad", "train.update=sampled")
    check("train.combiner=pcgrad", "train.update=each_task")
    check("train.combiner=sum", "train.update=each_task")  # a plain sum takes any plan


def test_an_update_rule_checks_its_own_constraints():
    with pytest.raises(ConfigError, match=r"train.group_size: must be >= the number of tasks \(3\)"):
        check("train.update=compromise", "train.combiner=gradvac", "train.group_size=2")


@pytest.mark.parametrize("override, valid", [
    ("train.combiner_args={betta: 0.1}", "['beta']"),
    ("train.smart_args={eps: 1e-5}", "'epsilon'"),
    ("model.pal_args={heads: 4}", "'num_heads'"),
    ("train.pretrain_args={learning_rate: 0.1}", "'lr'"),
])
def test_method_knobs_are_checked_against_the_method_signature(override, valid):
    extra = ["train.update=each_task", "train.combiner=gradvac"] if "combiner" in override else []
    with pytest.raises(ConfigError, match=r"unknown key\(s\).*valid keys: .*" + valid.replace("[", r"\[").replace("]", r"\]")):
        check(override, *extra)


def test_knobs_the_run_sets_itself_are_not_method_knobs():
    with pytest.raises(ConfigError, match=r"smart_args: unknown key\(s\) \['model'\]"):
        check("train.smart_args={model: 1}")
