"""What the benchmarks report about the machine they ran on, and their process's memory."""
from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # the ones that change torch's CPU kernels


def _cpuinfo_line(prefix: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_line("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    have = set((_cpuinfo_line("flags") or "").split())
    return [f for f in FLAGS if f in have]


def loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(threads: int, **extra) -> dict:
    """CPU, torch's CPU capability, native bf16, platform, versions, torch threads and the
    load average now, plus ``extra``."""
    import torch

    from mtlib.training.precision import cpu_has_native_bf16

    return {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "logical_cpus": os.cpu_count(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": threads, **extra, "loadavg_start": loadavg()}


def describe(info: dict) -> str:
    """The machine in two lines, for a benchmark's header."""
    load = info.get("loadavg_start")
    return (f"CPU: {info['cpu_model']} ({info['logical_cpus']} logical CPUs; flags: {', '.join(info['cpu_flags']) or '-'}); "
            f"torch CPU capability {info['torch_cpu_capability']}; native bf16: "
            f"{'yes' if info['native_bf16'] else 'no (bf16 autocast is emulated here)'}\n"
            f"torch {info['torch']}, python {info['python']}, {info['platform']}; "
            f"load average at start {'-' if not load else f'{load[0]:.2f}'}")


def portable_args(args) -> dict:
    """A benchmark's arguments for its JSON, with paths inside the project made relative to it
    (committed results carry no absolute path of the machine they ran on)."""
    root = str(Path(__file__).resolve().parents[1]) + os.sep
    return {k: v.replace(root, "") if isinstance(v, str) else v for k, v in vars(args).items()}


def maxrss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss: bytes on macOS, KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float | None:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_now_mib() -> float | None:
    """This process's resident memory now (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
