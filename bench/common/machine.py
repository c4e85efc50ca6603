"""The machine a benchmark ran on, and the CPU time spent on it while it ran.

On a shared machine the CPU the rest of it used during a measurement says how far to
trust that measurement; these readings come from `/proc` and `getrusage`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
from collections.abc import Mapping, Sequence
from importlib.metadata import version as installed_version
from pathlib import Path


def machine_info(packages: Sequence[str], tools: Mapping[str, str] | None = None) -> dict[str, str]:
    """Cores, CPU model, memory, kernel, Python, `tools`, load average, package versions."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    info = {
        "nproc": str(cores()),
        "cpu": model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **(tools or {}),
        "load average at start": load_average(),
    }
    for package in packages:
        info[package] = installed_version(package)
    return info


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as one string."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def session_cpu_s(session: int) -> float:
    """User + system CPU seconds of every live process in a session."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            # After "pid (comm)": state ppid pgrp session ... utime(12) stime(13).
            if int(fields[3]) == session:
                total += int(fields[11]) + int(fields[12])
    return total / tick


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """User + system CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def others_cpu_percent(busy_s: float, ours_s: float, wall_s: float) -> float:
    """The share of all cores that processes other than ours used during `wall_s`."""
    return max(0.0, busy_s - ours_s) / (wall_s * cores()) * 100
