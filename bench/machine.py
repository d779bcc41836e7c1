"""What the report says about the machine: CPU, code revision, and how busy others kept it.

A shared machine (tests running beside the benchmark) skews the numbers, so the report
states how much CPU processes other than ours used while it measured.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    return models[0] if models else platform.processor() or "unknown CPU"


def gateway_revision() -> str:
    """The commit of the agentwatch package the servers import, and whether it was edited."""
    spec = importlib.util.find_spec("agentwatch")
    if spec is None or spec.origin is None:
        return "agentwatch is not importable"
    directory = Path(spec.origin).parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True)
        return done.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown revision"
    edited = git("status", "--porcelain", "--", ".")  # only the package: bench/ edits don't count
    return f"{revision}{' with uncommitted changes' if edited else ''} ({directory})"


@dataclass(frozen=True, slots=True)
class _CpuSnapshot:
    wall: float
    machine_busy: float
    ours: float


class ForeignCpuMeter:
    """CPU seconds the whole machine spent busy, less what this run's processes spent."""

    def __init__(self, server_pids: list[int]) -> None:
        self._pids = server_pids
        self._start = self._snapshot()

    def cores_used_by_others(self) -> float | None:
        """Average cores kept busy by other processes since construction; None off Linux."""
        end = self._snapshot()
        if end.machine_busy < 0:
            return None
        foreign = (end.machine_busy - self._start.machine_busy) - (end.ours - self._start.ours)
        return max(0.0, foreign) / (end.wall - self._start.wall)

    def _snapshot(self) -> _CpuSnapshot:
        own = os.times()  # this process plus the wrk runs it has waited for
        ours = own.user + own.system + own.children_user + own.children_system
        ours += sum(_process_cpu(pid) for pid in self._pids)
        return _CpuSnapshot(time.monotonic(), _machine_busy(), ours)


def _machine_busy() -> float:
    stat = Path("/proc/stat")
    if not stat.exists():
        return -1.0
    fields = stat.read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_SECOND


def _process_cpu(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return 0.0
    # The command name may hold spaces, so count fields from after its closing parenthesis.
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND
