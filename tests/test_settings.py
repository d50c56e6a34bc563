"""mtlib.settings: every method a config names is typed and checked when the config loads,
each problem a ConfigError naming its full key, before any data is read."""
import pytest
import yaml

from mtlib import cli, settings
from mtlib.config import ConfigError, load_config
from mtlib.settings import GradVacSettings, PalSettings, PlanSettings, PretrainSettings, SmartSettings
from mtlib.training import loop
from tests.helpers import ROOT

PARAMS = ROOT / "params.yaml"
EXPERIMENTS = yaml.safe_load(PARAMS.read_text())["experiments"]


def load(*overrides, experiment="base_model"):
    return load_config(PARAMS, experiment, "smoke", overrides=list(overrides))


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_every_experiment_of_params_yaml_loads_with_its_methods(profile):
    for name in EXPERIMENTS:
        cfg = load_config(PARAMS, name, profile)
        assert cfg.methods.method == cfg.train.method and "methods" not in cfg.to_dict()


def test_the_methods_are_typed():
    m = load(experiment="pal_start").methods
    assert (m.pals.num_heads, m.pals.head_dim, m.pals.after, m.pretrain.selection) == (12, 11, False, "individual")
    m = load(experiment="hidden_gradvac_smart").methods
    assert m.combiner == GradVacSettings(beta=0.01) and m.smart == SmartSettings() and m.plan.batches == 3
    m = load(experiment="pal_after").methods
    assert m.pals.after and m.pretrain.selection is None and not m.per_layer
    assert load().methods.smart is None and load().methods.pals is None
    m = load(experiment="single_para_matched").methods
    assert m.match == settings.MatchSettings(("sst", "para", "sts"), "random", "para") and not m.frozen_encoder
    assert load(experiment="continued_heads").methods.frozen_encoder and load().methods.match is None


UNKNOWN_NAMES = [  # unknown names list the valid ones
    ("train.sampler=nope", r"train.sampler: 'nope' is not one of \['annealed'"),
    ("train.plan=nope", r"train.plan: 'nope' is not one of"),
    ("train.granularity=neuron", r"train.granularity: 'neuron' is not one of \['layer', 'whole'\]"),
    ("train.method=nope", r"train.method: 'nope' is not one of \['finetune', 'heads', 'posthoc', 'random'\]"),
    ("train.pretrain_heads=both", r"train.pretrain_heads: 'both' is not one of \['individual', 'joint', 'none'\]"),
    ("model.pals=middle", r"model.pals: 'middle' is not one of \['after', 'none', 'start'\]"),
]


WRONG_COMBINATIONS = [  # wrong combinations name the key to change
    (["train.plan=compromise", "train.combiner=gradvac", "train.group_size=2"],
     r"train.group_size: must be >= the number of tasks \(3\)"),
    (["model.pals=after"], r"model.pals: after: PALs are added to a fine-tuned model; set train.init_from"),
    (["train.method=heads", "train.pretrain_heads=none"],
     r"train.pretrain_heads: train.method=heads trains only the heads: set it to joint or individual"),
    (["train.method=posthoc"], r"train.init_from: train.method=posthoc scores a trained run"),
    (["train.match_examples={tasks: [sst, para], sampler: random}"],
     r"train.match_examples: sizes a one-task run's budget; train.tasks is \['sst', 'para', 'sts'\]"),
    (["train.tasks=[sts]", "train.match_examples={tasks: [sst, para], sampler: random}"],
     r"train.match_examples.tasks: must include the run's task 'sts'"),
    (["train.tasks=[sst]", "train.match_examples={tasks: [sst], sampler: random}"],
     r"train.match_examples.tasks: must list two or more distinct tasks"),
    (["train.tasks=[sst]", "train.match_examples={tasks: [sst, para], sampler: nope}"],
     r"train.match_examples.sampler: 'nope' is not one of"),
    (["train.tasks=[sst]", "train.match_examples={tasks: [sst, para]}"],
     r"train.match_examples: missing key\(s\) \['sampler'\]"),
    (["train.tasks=[sst]", "train.plan=each_task", "train.match_examples={tasks: [sst, para], sampler: random}"],
     r"train.match_examples: needs train.plan=sampled"),
    (["train.trainable=encoder"], r"train.trainable: 'encoder' is not one of \['all', 'heads'\]"),
    (["train.trainable=heads", "model.pals=start"], r"train.trainable: heads: leave model.pals at none"),
    (["train.trainable=heads", "train.method=heads"], r"train.trainable: heads applies to train.method=finetune"),
    (["train.trainable=heads", "train.plan=each_task", "train.combiner=pcgrad"],
     r"train.trainable: heads leaves no shared gradient"),
]


UNKNOWN_KNOBS = [  # unknown knobs list the valid ones
    ("train.smart_args={eps: 1e-5}", r"train.smart_args: unknown key\(s\) \['eps'\]; valid keys: \['lambda_s'"),
    ("train.smart_args={generator: 1}", r"train.smart_args: unknown key\(s\) \['generator'\]"),
    ("model.pal_args={heads: 4}", r"model.pal_args: unknown key\(s\) \['heads'\]; valid keys: \['num_heads'"),
    ("model.pal_args={after: true}", r"model.pal_args: unknown key\(s\) \['after'\]"),  # model.pals says so
    ("train.pretrain_args={learning_rate: 0.1}", r"train.pretrain_args: unknown key\(s\) \['learning_rate'\].*'lr'"),
    ("train.pretrain_args={selection: joint}", r"train.pretrain_args: unknown key\(s\) \['selection'\]"),
]


WRONG_VALUES = [  # wrong knob values name the full key
    ("train.smart_args={mu: -1}", r"train.smart_args.mu: must be a number in \[0, inf\], got -1"),
    ("train.smart_args={steps: 1.5}", r"train.smart_args.steps: must be an integer >= 0, got 1.5"),
    ("train.smart_args={ema_decay: 2}", r"train.smart_args.ema_decay: must be a number in \[0, 1\]"),
    ("train.smart_args={precision: fp8}", r"train.smart_args.precision: 'fp8' is not one of \['amp', 'fp32'\]"),
    ("model.pal_args={num_heads: 0, head_dim: 4}", r"model.pal_args.num_heads: must be an integer >= 1, got 0"),
    ("model.pal_args={num_heads: 2, head_dim: 4, placement: ffn}",
     r"model.pal_args.placement: 'ffn' is not one of \['attention', 'output'\]"),
    ("train.pretrain_args={lr: 0}", r"train.pretrain_args.lr: must be a number in \(0, inf\], got 0"),
    ("train.pretrain_args={patience: 0}", r"train.pretrain_args.patience: must be an integer >= 1 or null"),
    ("train.pretrain_args={max_examples: -5}", r"train.pretrain_args.max_examples: must be an integer >= 1"),
]


@pytest.mark.parametrize("overrides, message", UNKNOWN_NAMES + WRONG_COMBINATIONS + UNKNOWN_KNOBS + WRONG_VALUES)
def test_a_wrong_setting_is_a_config_error_naming_its_full_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(*([overrides] if isinstance(overrides, str) else overrides))


def test_settings_built_directly_check_themselves():
    for build, message in ((lambda: PlanSettings("compromise", 1, 2, 3), "group_size: must be >="),
                           (lambda: GradVacSettings(beta=5), r"beta: must be a number in \(0, 1\]"),
                           (lambda: SmartSettings(lambda_s=-1), "lambda_s: must be"),
                           (lambda: PalSettings(2, 4, dropout=2.0), "dropout: must be"),
                           (lambda: PretrainSettings(epochs=0), "epochs: must be an integer >= 1")):
        with pytest.raises(ConfigError, match=message):
            build()


@pytest.mark.parametrize("overrides, message", [
    (["model.head.kind=cosine"], "model.head.kind: cosine needs"),
    (["model.head.activation=nope"], "model.head.activation: 'nope' is not one of"),
    (["train.plan=each_task", "train.combiner=gradvac", "train.combiner_args={beta: 5}"],
     r"train.combiner_args.beta: must be a number in \(0, 1\], got 5"),
])
def test_mtlib_train_refuses_a_bad_setting_before_reading_any_data(tmp_path, monkeypatch, capsys, overrides, message):
    """The three settings that used to fail only once the model or the Stepper was built,
    after data preparation and head pretraining: now refused by the config, nothing read."""
    def touched(*args, **kwargs):
        raise AssertionError("data or tokenizer read")

    for name in ("prepare_counted", "prepare_data", "load_tokenizer", "check_max_length"):
        monkeypatch.setattr(loop, name, touched)
    data = tmp_path / "data"
    data.mkdir()
    (data / "ids-sst-train.csv").write_text("\0 not a csv")
    argv = ["train", "--experiment", "base_model", "--profile", "smoke", "--params", str(PARAMS), "--data", str(data),
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(argv + [item for o in overrides for item in ("--set", o)]) == 2
    error = capsys.readouterr().err
    assert message.replace("\\", "") in error.replace("\\", "") or pytest.fail(error)
    assert "check the settings named" not in error and not (tmp_path / "run").exists()



def test_a_knob_without_a_default_must_be_given():
    with pytest.raises(ConfigError, match=r"model.pal_args: missing key\(s\) \['head_dim'\]"):
        settings._knobs(PalSettings, {"num_heads": 2}, "model.pal_args", after=False)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_the_controls_match_what_they_control_on_every_profile(profile):
    """The matched single-task rows replay base_model's sampler on base_model's data; the
    continuations train pal_after's micro-batches with advanced_model's lr, sampler, heads and data."""
    def cfg(name):
        return load_config(PARAMS, name, profile)

    base = cfg("base_model")
    for task in ("sst", "para", "sts"):
        matched = cfg(f"single_{task}_matched")
        assert matched.methods.match == settings.MatchSettings(base.train.tasks, base.train.sampler, task)
        assert matched.data == base.data and matched.model == base.model
        assert {k: v for k, v in vars(matched.train).items() if k not in ("tasks", "match_examples")} == \
            {k: v for k, v in vars(base.train).items() if k not in ("tasks", "match_examples")}
    pal, advanced = cfg("pal_after"), cfg("advanced_model")
    for name in ("continued", "continued_heads"):
        control = cfg(name)
        budget = ("epochs", "batches_per_epoch", "accumulation", "plan", "batch_size")
        assert [getattr(control.train, k) for k in budget] == [getattr(pal.train, k) for k in budget]
        assert control.train.init_from == pal.train.init_from and control.methods.pals is None
        assert (control.train.lr, control.train.sampler, control.model.head, control.data) == \
            (advanced.train.lr, advanced.train.sampler, advanced.model.head, advanced.data)
