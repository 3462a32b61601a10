"""Process memory and CPU from /proc, and a description of the machine."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def _all_pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def tree(pid: int) -> list[int]:
    """`pid` and every live descendant (a Celery worker's main process and its pool)."""
    parents: dict[int, list[int]] = {}
    for p in _all_pids():
        fields = _stat(p)
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if _stat(p) is None:
            continue
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of one process; 0 once it is gone."""
    try:
        resident = (PROC / str(pid) / "statm").read_text().split()[1]
    except (OSError, IndexError):
        return 0
    return int(resident) * PAGE_SIZE


def tree_rss(pid: int) -> int:
    """RSS of a process plus its descendants. Pages shared after fork count once per process,
    as `ps` shows them: this overstates the pool's footprint, never understates it."""
    return sum(rss_bytes(p) for p in tree(pid))


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time these processes have used so far."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """User plus system CPU seconds of each of these processes that is still alive."""
    out = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (and so the processes it starts), in order."""
    return sorted(os.sched_getaffinity(0))


def _each_thread(pids: list[int], apply: Callable[[int], None]) -> int:
    """`apply` to every thread of these processes; the number it succeeded on. A process
    (or thread) that is gone is skipped."""
    done = 0
    for pid in pids:
        try:
            tids = [int(t.name) for t in (PROC / str(pid) / "task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            try:
                apply(tid)
            except OSError:
                continue
            done += 1
    return done


def weigh(pids: list[int], niceness: int) -> int:
    """Give every thread of these processes this niceness (CFS weight: -10 is about nine
    times the default's share of a contended core, what `cpu_shares` or a CPU request give
    a container); the number of threads set."""
    return _each_thread(pids, lambda tid: os.setpriority(os.PRIO_PROCESS, tid, niceness))


def pin(pids: list[int], cpus: set[int]) -> int:
    """Bind every thread of these processes to `cpus` (the threads and children they start
    later inherit it); the number of threads bound."""
    return _each_thread(pids, lambda tid: os.sched_setaffinity(tid, cpus))


@dataclass(frozen=True)
class MachineCpu:
    busy: float  # seconds of all cores, not idle nor waiting on I/O
    total: float

    def minus(self, earlier: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy - earlier.busy, self.total - earlier.total)


def machine_cpu() -> MachineCpu:
    fields = [int(x) for x in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])  # guest time is already inside user/nice
    return MachineCpu((total - idle) / CLOCK_TICKS, total / CLOCK_TICKS)


def cpu_model() -> str:
    for line in (PROC / "cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_total_bytes() -> int:
    for line in (PROC / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0
