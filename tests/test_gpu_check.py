"""The GPU check's CPU path: the same functions a GPU run calls, on a tiny model."""
import pytest
import torch

from benchmarks import gpu_check
from mtlib.tasks import TASKS
from tests.helpers import ROOT


def cpu_args(*extra: str):
    args = gpu_check.parse_args(["--device", "cpu", "--tiny", "--steps", "2", "--warmup", "1", "--pool", "2",
                                 "--window", "0.5", "--compile-backend", "eager", "--params", str(ROOT / "params.yaml"),
                                 *extra])
    args.device = torch.device("cpu")
    return args


def test_synthetic_batches_are_bucketed_and_padded_to_the_multiple():
    for task in ("sst", "para", "sts"):
        pool = gpu_check.make_pool(task, 16, 6, seed=1, vocab=30522, max_length=128, multiple=16)
        for batch in pool:
            part = batch.inputs[0]
            lengths = part["attention_mask"].sum(1)
            assert part["input_ids"].shape[1] % 16 == 0 and part["input_ids"].shape[1] - int(lengths.max()) < 16
            assert bool((part["input_ids"][:, 0] == gpu_check.CLS_ID).all())
            assert bool(((part["token_type_ids"] == 1).sum(1) > 0).all()) == TASKS[task].is_pair
        tight = gpu_check.make_pool(task, 16, 6, seed=1, vocab=30522, max_length=128)
        real = sum(int(b.inputs[0]["attention_mask"].sum()) for b in tight)
        assert real / sum(b.inputs[0]["attention_mask"].numel() for b in tight) > 0.8  # bucketed: little padding


def test_the_step_as_it_is_for_each_kind_of_update():
    args = cpu_args("--classes", "base,surgery")
    base = gpu_check.measure_class(args, "base", args.device, None, profile_kernels=False)
    surgery = gpu_check.measure_class(args, "surgery", args.device, None, profile_kernels=False)
    assert base["losses_finite"] and surgery["losses_finite"]
    assert (base["micro_batches_per_update"], surgery["micro_batches_per_update"]) == (4, 3)  # paper profile
    assert base["seconds_per_micro_batch"] == pytest.approx(base["seconds"] / (2 * 4))
    assert set(base["eval"]["examples_per_second"]) == {"sst", "para", "sts", "dev_weighted"}


def test_compiled_layers_give_the_same_losses_with_a_tracing_backend():
    out = gpu_check.compiled_step(cpu_args("--pool", "1"))  # one batch per task: three shapes to trace
    assert out["shapes"] <= 3 and out["max_loss_difference"] < 1e-5
    assert len(out["padded, compiled"]["losses"]) == len(out["padded, as it is"]["losses"]) == 3 * 4


def test_processes_sharing_the_device_add_up():
    out = gpu_check.share_device(cpu_args(), [2])
    assert set(out["counts"]) == {1, 2}
    for n, result in out["counts"].items():
        assert len(result["per_process"]) == n and all(p["examples"] > 0 for p in result["per_process"])
        assert result["examples_per_second"] == pytest.approx(sum(p["examples"] / p["seconds"]
                                                                  for p in result["per_process"]))
    assert out["counts"][1]["speedup"] == 1.0


def test_study_estimate_adds_up_every_experiment_and_seed():
    args = cpu_args()
    runs = gpu_check.study_runs(args)
    kinds = {r["experiment"]: r["kind"] for r in runs}
    assert kinds["random_predictor"] is None and kinds["base_model"] == "base"
    assert kinds["hidden_pcgrad"] == "surgery" and kinds["hidden_compromise_smart"] == "smart"
    random = next(r for r in runs if r["experiment"] == "random_predictor")
    assert random["micro_batches"] == random["forward_examples"] == 0
    costs = {"base": 0.1, "surgery": 0.2, "smart": 0.5}
    result = gpu_check.estimate(runs, costs, eval_per_second=1000.0, seeds=3, speedup=2.0)
    expected = 3 * sum(r["micro_batches"] * costs.get(r["kind"], 0.0) + r["forward_examples"] / 1000.0 for r in runs)
    assert result["serial_seconds"] == pytest.approx(expected)
    assert result["hours"] == pytest.approx(expected / 2.0 / 3600)
