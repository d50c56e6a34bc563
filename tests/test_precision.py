"""``train.amp: auto``: the precision chosen per machine, its warning, and what a run records."""
import os
import warnings

import pytest
import torch
import yaml

from mtlib.training import precision
from mtlib.training.loop import train
from tests.helpers import smoke_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def fake_cpu(monkeypatch, flags: set[str], onednn_bf16: bool) -> None:
    """A CPU with these /proc/cpuinfo flags, whose oneDNN does (or does not) support bf16."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)


def fake_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")


@pytest.mark.parametrize("flags, onednn, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, True, "bf16"),   # Zen 4, Cooper Lake
    ({"avx2", "amx_bf16", "amx_tile"}, True, "bf16"),     # Sapphire Rapids
    ({"avx2", "avx512f"}, True, "none"),                  # AVX-512 without bf16 (Skylake-X, Zen 3)
    ({"avx2"}, False, "none"),                             # most laptops
    ({"avx2", "avx512_bf16"}, False, "none"),             # flag present, oneDNN cannot use it
])
def test_auto_on_a_cpu_is_bf16_only_where_native(monkeypatch, flags, onednn, expected):
    fake_cpu(monkeypatch, flags, onednn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        assert precision.resolve_amp("auto", CPU) == expected
    assert precision.amp_reason("auto", expected, CPU).startswith(
        f"precision {'fp32' if expected == 'none' else 'bf16'}: train.amp=auto")


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((8, 9), "bf16"), ((9, 0), "bf16")])
def test_auto_on_cuda_is_bf16_from_compute_capability_8(monkeypatch, capability, expected):
    fake_gpu(monkeypatch, capability)
    assert precision.resolve_amp("auto", CUDA) == expected
    reason = precision.amp_reason("auto", expected, CUDA)
    assert f"compute capability {capability[0]}.{capability[1]}" in reason and reason.startswith(f"precision {expected}")


def test_explicit_values_are_kept(monkeypatch):
    fake_gpu(monkeypatch, (7, 5))
    assert precision.resolve_amp("bf16", CUDA) == "bf16" and precision.resolve_amp("none", CUDA) == "none"
    fake_cpu(monkeypatch, {"avx512_bf16"}, True)
    assert precision.resolve_amp("none", CPU) == "none"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        precision.resolve_amp("fp16", CPU)
    with pytest.raises(ValueError, match="is not one of"):
        precision.resolve_amp("fp8", CPU)


def test_explicit_bf16_warns_only_where_it_is_emulated(monkeypatch):
    fake_cpu(monkeypatch, {"avx2"}, False)
    with pytest.warns(UserWarning, match="emulated"):
        assert precision.resolve_amp("bf16", CPU) == "bf16"
    assert "emulated" in precision.amp_reason("bf16", "bf16", CPU)
    fake_cpu(monkeypatch, {"avx512_bf16"}, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve_amp("bf16", CPU) == "bf16"


def result_values(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("dev", "best_update", "updates", "precision")}


@pytest.mark.parametrize("native, resolved", [(False, "none"), (True, "bf16")])
def test_a_run_records_the_resolved_precision_and_matches_the_explicit_value(tmp_path, monkeypatch, capsys,
                                                                             native, resolved):
    """params.yaml keeps 'auto'; config.yaml and metrics.json say what it became, and the
    results are exactly those of setting that value explicitly (same seed)."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    auto = train(smoke_config(tmp_path, "base_model", "train.amp=auto"), tmp_path / "auto", progress=False)
    assert f"precision {'fp32' if resolved == 'none' else 'bf16'}: train.amp=auto" in capsys.readouterr().out
    explicit = train(smoke_config(tmp_path, "base_model", f"train.amp={resolved}"), tmp_path / "explicit",
                     progress=False)
    assert auto["precision"] == explicit["precision"] == resolved
    assert yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())["train"]["amp"] == resolved
    assert result_values(auto) == result_values(explicit)


def test_describe_machine_names_the_cpu_threads_and_a_gpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_model", lambda: "Some CPU 9000")
    assert precision.describe_machine("cpu", 1) == f"Some CPU 9000 ({os.cpu_count()} logical CPUs), 1 torch thread"
    assert precision.describe_machine("cpu", 4).endswith("4 torch threads")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"Fake GPU {device.index}")
    assert precision.describe_machine("cuda:1", 2).startswith("Fake GPU 1 GPU; host: Some CPU 9000")
