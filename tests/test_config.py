import pytest
import yaml

from mtlib.config import ConfigError, load_config, parse_override, resolve_seeds
from tests.helpers import ROOT

PARAMS = ROOT / "params.yaml"


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_every_profile_resolves(profile):
    cfg = load_config(PARAMS, "base_model", profile)
    assert cfg.profile == profile and cfg.experiment == "base_model"
    assert cfg.backbone.name == {"smoke": "tiny-random", "cpu": "minilm", "paper": "bert-base-uncased"}[profile]


def test_default_profile_is_cpu():
    assert load_config(PARAMS).profile == "cpu"


def test_overrides_apply_in_order_and_parse_yaml_values():
    cfg = load_config(PARAMS, "base_model", "smoke", seed=7,
                      overrides=["train.lr=3e-5", "data.train_size.sst=10", "model.head.kind=mlp"])
    assert cfg.train.lr == pytest.approx(3e-5) and isinstance(cfg.train.lr, float)
    assert cfg.data.train_size["sst"] == 10 and cfg.model.head.kind == "mlp" and cfg.train.seed == 7


def test_unknown_key_is_an_error_naming_its_path():
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['lrr'\]"):
        load_config(PARAMS, "base_model", "smoke", overrides=["train.lrr=1"])


@pytest.mark.parametrize("override, key", [("train.lr=abc", "train.lr"), ("train.lrr=1", "train"),
                                           ("train.combiner_args={beta: 5}", "train.combiner_args.beta")])
def test_an_error_names_the_file_the_experiment_the_profile_then_the_key(override, key):
    """A field, an unknown key and a method's knob: the same "<where>: <key>: <what>" shape."""
    with pytest.raises(ConfigError) as error:
        load_config(PARAMS, "hidden_gradvac", "smoke", overrides=[override])
    assert str(error.value).startswith(f"{PARAMS} (experiment hidden_gradvac, profile smoke): {key}: ")


def test_wrong_type_and_bad_choice_are_errors():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(PARAMS, "base_model", "smoke", overrides=["train.epochs=two"])
    with pytest.raises(ConfigError, match="train.granularity: 'neuron' is not one of"):
        load_config(PARAMS, "base_model", "smoke", overrides=["train.granularity=neuron"])


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_device_may_pin_one_gpu(device):
    assert load_config(PARAMS, "base_model", "smoke", overrides=[f"train.device={device}"]).train.device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:0,1", "mps"])
def test_other_devices_are_errors(device):
    with pytest.raises(ConfigError, match=r"train.device: .* is not 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        load_config(PARAMS, "base_model", "smoke", overrides=[f"train.device={device}"])


def test_missing_key_is_an_error(tmp_path):
    text = PARAMS.read_text().replace("    warmup_steps: 0\n", "")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match="missing key 'warmup_steps'"):
        load_config(tmp_path / "params.yaml", "base_model", "smoke")


@pytest.mark.parametrize("edit, message", [
    (lambda entry: entry.update(parnet="head_only"), r"experiments\.base_model: unknown key\(s\) \['parnet'\]"),
    (lambda entry: entry.pop("run"), r"experiments\.base_model: missing key 'run'"),
    (lambda entry: entry.update(set=None), r"experiments\.base_model\.set: must not be null"),
    (lambda entry: entry.update(run="yes"), r"experiments\.base_model\.run: expected true/false"),
    (lambda entry: entry["report"].pop("sts"), r"experiments\.base_model\.report: missing key 'sts'"),
    (lambda entry: entry.update(parent="head_onyl"), r"experiments name parents that are not experiments: \['base_model -> head_onyl'\]"),
])
def test_an_experiment_entry_is_strict(tmp_path, edit, message):
    """A misspelt key of an experiment's entry would silently drop its parent, report row or run flag."""
    params = yaml.safe_load(PARAMS.read_text())
    edit(params["experiments"]["base_model"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"params\.yaml: " + message):
        load_config(tmp_path / "params.yaml", "hidden", "smoke")  # any experiment: the file is read whole


def test_an_experiments_overrides_are_its_set():
    params = yaml.safe_load(PARAMS.read_text())
    assert params["experiments"]["hidden"]["set"] == {"model": {"head": {"kind": "mlp", "hidden_layers": 1}},
                                                      "train": {"sampler": "annealed"}}
    cfg = load_config(PARAMS, "hidden", "smoke")
    assert (cfg.model.head.kind, cfg.model.head.hidden_layers, cfg.train.sampler) == ("mlp", 1, "annealed")
    assert load_config(PARAMS, "base_model", "smoke").model.head.kind == "linear"  # set: {}, the base's


def test_unknown_profile_and_experiment_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown profile 'gpu'.*'cpu'"):
        load_config(PARAMS, "base_model", "gpu")
    with pytest.raises(ConfigError, match="unknown experiment 'nope'.*'base_model'"):
        load_config(PARAMS, "nope", "smoke")


def test_head_overrides_change_one_task_only():
    cfg = load_config(PARAMS, "base_model", "smoke", overrides=["model.head_overrides={sts: {kind: lstm}}"])
    assert cfg.model.head_for("sts").kind == "lstm" and cfg.model.head_for("sst").kind == "linear"
    with pytest.raises(ConfigError, match="head_overrides"):
        load_config(PARAMS, "base_model", "smoke", overrides=["model.head_overrides={sts: {kindd: lstm}}"])


def test_config_is_frozen():
    cfg = load_config(PARAMS, "base_model", "smoke")
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0


def test_parse_override():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    assert parse_override("x=null") == {"x": None}
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_resolve_seeds_reads_what_papermill_passes(tmp_path):
    params = tmp_path / "params.yaml"
    data = yaml.safe_load(PARAMS.read_text())
    data["pipeline"]["seeds"] = [4, 5, 6]
    params.write_text(yaml.safe_dump(data))
    assert resolve_seeds(None, params) == [4, 5, 6]          # the pipeline's seeds
    assert resolve_seeds(3, params) == [3]                   # -p seeds 3
    assert resolve_seeds("1,2", params) == [1, 2]            # -p seeds "1,2"
    assert resolve_seeds("7 8", params) == [7, 8]
    assert resolve_seeds([2, 1], params) == [2, 1]           # -y "seeds: [2, 1]", order kept
    for bad in ("1,x", [1, 1], [], True, 1.5):
        with pytest.raises(ConfigError, match="seeds"):
            resolve_seeds(bad, params)
