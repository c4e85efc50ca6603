"""CPU time of the delivery benchmark's own processes, and of the whole machine.

Read from /proc while the processes run: a process's user and system time plus that of
the children it has waited for (an agent's smoke predictions), so that a report can say
how much of the machine the benchmark itself used and how much the rest of it took.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common.machine import machine_busy_s


def process_cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and of the children it waited for; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # After "pid (comm)": state(0) ... utime(11) stime(12) cutime(13) cstime(14).
    fields = text.rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU seconds of named groups of processes, and of the machine, between two readings."""

    groups: Mapping[str, Sequence[int]]
    _start: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        """Take the first reading."""
        self._start = {name: _group(pids) for name, pids in self.groups.items()}
        self._start["machine"] = machine_busy_s()

    def stop(self) -> dict[str, float]:
        """CPU seconds since `start()` of each group, and `machine` (everything)."""
        used = {name: _group(pids) - self._start[name] for name, pids in self.groups.items()}
        used["machine"] = machine_busy_s() - self._start["machine"]
        return used


def _group(pids: Sequence[int]) -> float:
    return sum(process_cpu_s(pid) for pid in pids)
