"""Where a run computes and in which precision: the device, mixed precision and autocast.

``train.amp: auto`` picks, per machine, the fastest precision that is native there:

* a CUDA GPU of compute capability 8.0 or newer (A100, H100, ...): bf16 autocast;
* an older CUDA GPU: fp16 autocast with a GradScaler;
* a CPU with bf16 instructions (AVX512_BF16 or AMX): bf16 autocast;
* any other CPU: fp32. There bf16 autocast is emulated and several times SLOWER than fp32
  (../shared/docs/OFFLINE.md measured 13 against 80-99 examples/s on an AVX2 machine).

The resolved value is recorded in the run (config.yaml and metrics.json), beside the
machine (:func:`describe_machine`); params.yaml keeps ``auto``, so the DVC stage's
parameters, and with them its run-cache entry, are the same on every machine.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings
from pathlib import Path

import torch

from mtlib.errors import DeviceError

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_device(name: str) -> torch.device:
    """'auto' (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"train.device={name} but no CUDA device is available (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"train.device={name} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def _cpuinfo(field: str) -> str:
    """The value of /proc/cpuinfo's first ``field`` line ('' where there is none, or no Linux)."""
    path = Path("/proc/cpuinfo")
    lines = path.read_text().splitlines() if path.exists() else []
    return next((line.split(":", 1)[1] for line in lines if line.lower().startswith(field)), "")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    return frozenset(_cpuinfo("flags").split())


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX512_BF16 or AMX) and oneDNN uses it."""
    mkldnn_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return bool(mkldnn_bf16 and cpu_flags() & set(_BF16_CPU_FLAGS))


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision a run uses: ``amp`` itself, or for ``auto`` what is native on ``device``
    ('bf16', 'fp16' or 'none'; see the module docstring). Explicit bf16 on a CPU without
    native support is honoured, with a warning that it is emulated (slow)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"train.amp: {amp!r} is not one of {list(AMP_CHOICES)}")
    if device.type == "cuda":
        if amp != "auto":
            return amp
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    if amp == "fp16":
        raise ValueError("train.amp=fp16 needs a CUDA device; use auto, bf16 or none on a CPU")
    native = cpu_has_native_bf16()
    if amp == "bf16" and not native:
        warnings.warn("train.amp=bf16 on a CPU without native bf16 (no AVX512_BF16/AMX): autocast is emulated "
                      "and several times slower than fp32; train.amp=auto would choose fp32 here", stacklevel=2)
    if amp == "auto":
        return "bf16" if native else "none"
    return amp


def amp_reason(amp: str, resolved: str, device: torch.device) -> str:
    """One line saying which precision a run uses and why (what :func:`resolve_amp` saw)."""
    label = "fp32" if resolved == "none" else resolved
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        where = f"{torch.cuda.get_device_name(device)}, compute capability {major}.{minor}"
        if amp == "auto":
            why = "runs bf16 natively (>= 8.0)" if resolved == "bf16" else "has no fast bf16 (< 8.0), so fp16 + GradScaler"
            return f"precision {label}: train.amp=auto on {where}, which {why}"
        return f"precision {label}: train.amp={amp} set explicitly ({where})"
    if cpu_has_native_bf16():
        where = f"this CPU runs bf16 natively ({', '.join(sorted(cpu_flags() & set(_BF16_CPU_FLAGS)))}, oneDNN bf16)"
    else:
        where = "this CPU has no native bf16 (no AVX512_BF16/AMX, or oneDNN without bf16), where bf16 is emulated"
    if amp == "auto":
        return f"precision {label}: train.amp=auto and {where}"
    return f"precision {label}: train.amp={amp} set explicitly; {where}"


def autocast(amp: str, device: torch.device):
    """bf16 autocast (CPU or CUDA), fp16 autocast (CUDA, with a GradScaler), or nothing.
    ``amp`` is a resolved value (:func:`resolve_amp`), never 'auto'."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"autocast needs a resolved precision ('none', 'bf16' or 'fp16'), got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("train.amp=fp16 needs a CUDA device; use bf16 on a CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def cpu_model() -> str:
    """The CPU's model name as Linux reports it (platform.processor() elsewhere)."""
    return _cpuinfo("model name").strip() or platform.processor() or platform.machine() or "unknown CPU"


def describe_machine(device: torch.device | str = "cpu", threads: int | None = None) -> str:
    """The machine in one line: the GPU where ``device`` is one, the CPU with its logical
    cores, and the torch threads a run uses (``threads``, default: this process's)."""
    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    cpu = f"{cpu_model()} ({os.cpu_count()} logical CPUs), {threads} torch thread{'s' * (threads != 1)}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} GPU; host: {cpu}"
    return cpu
