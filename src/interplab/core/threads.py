"""Torch's thread count: the CPUs this process may really use.

``resolve_threads("auto")`` is the number of CPUs this process can really use: its affinity set,
counted in physical cores (hyperthread siblings once), capped by a cgroup CPU quota rounded
down (at least 1). torch's own default ignores the quota and so oversubscribes a container
limited to fewer CPUs than the host shows. ``OMP_NUM_THREADS``, when set, is the user's choice
and wins.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from interplab.core.errors import ConfigError


def parse_threads(value, field: str = "threads") -> str | int:
    """``"auto"`` or a whole number ≥ 1 (an int, or a string of one); anything else is a
    ConfigError naming ``field``."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < 1:
        raise ConfigError(f"{field}={value!r}: use auto (the CPUs this process may use: affinity, "
                          "cgroup quota, physical cores) or a whole number of threads >= 1.")
    return number


def resolve_threads(choice="auto", field: str = "threads", root: str | Path = "/") -> int:
    """The torch thread count for ``choice``: an int ≥ 1 as is; ``auto`` → ``OMP_NUM_THREADS``
    when set, else ``usable_cpus()``. ``root`` is where /proc and /sys are read (tests)."""
    choice = parse_threads(choice, field)
    if choice != "auto":
        return choice
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    return usable_cpus(root)


@contextlib.contextmanager
def torch_threads(choice="auto", field: str = "threads"):
    """Run the block with torch's intra-op thread count set from ``choice`` (see
    ``resolve_threads``); the previous count is restored afterwards. Yields the count."""
    import torch

    count, before = resolve_threads(choice, field), torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def usable_cpus(root: str | Path = "/", affinity: set[int] | None = None) -> int:
    """Physical cores in the affinity set, capped by the cgroup CPU quota (rounded down, ≥ 1).

    Rounded down because a parallel region ends with its slowest thread: with more threads than
    the quota, some are throttled each period and stall the others (1.5 CPUs → 1 thread)."""
    root = Path(root)
    cpus = set(os.sched_getaffinity(0) if affinity is None else affinity)
    count = physical_cores(cpus, root)
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        count = min(count, max(1, math.floor(quota)))
    return max(1, count)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def parse_cpu_list(text: str) -> set[int]:
    """``"0-3,8,10-11"`` (the kernel's CPU list format) → {0, 1, 2, 3, 8, 10, 11}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def physical_cores(cpus: set[int], root: str | Path = "/") -> int:
    """How many physical cores the logical CPUs ``cpus`` are: hyperthread siblings (per sysfs
    ``thread_siblings_list``, else /proc/cpuinfo's physical id and core id) count once; when
    neither tells, every logical CPU counts."""
    root = Path(root)
    if not cpus:
        return 1
    groups = set()
    for cpu in sorted(cpus):
        text = _read(root / f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            groups.add(frozenset(parse_cpu_list(text) & cpus) if text else None)
        except ValueError:
            groups.add(None)
    if None not in groups:
        return len(groups)
    cores = _cpuinfo_cores(_read(root / "proc/cpuinfo") or "")
    if cpus <= set(cores):
        return len({cores[c] for c in cpus})
    return len(cpus)


def _cpuinfo_cores(text: str) -> dict[int, tuple[str, str]]:
    """processor → (physical id, core id), for the processors /proc/cpuinfo gives both."""
    cores: dict[int, tuple[str, str]] = {}
    for block in text.split("\n\n"):
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        if {"processor", "physical id", "core id"} <= set(fields) and fields["processor"].isdigit():
            cores[int(fields["processor"])] = (fields["physical id"], fields["core id"])
    return cores


def cgroup_cpu_quota(root: str | Path = "/") -> float | None:
    """CPUs' worth of time the cgroup quota allows (quota / period), the tightest over this
    process's cgroup and its ancestors; None when there is no limit. cgroup v2 ``cpu.max``
    ("max 100000" or "150000 100000"), else v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``."""
    root = Path(root)
    v2, v1 = "", ""
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    limits = []
    for base in _cgroup_dirs(root / "sys/fs/cgroup", v2):
        text = _read(base / "cpu.max")
        if text and len(text.split()) == 2 and text.split()[0] != "max":
            limits.append(_ratio(*text.split()))
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for base in _cgroup_dirs(root / "sys/fs/cgroup" / mount, v1):
            quota, period = _read(base / "cpu.cfs_quota_us"), _read(base / "cpu.cfs_period_us")
            if quota and period:
                limits.append(_ratio(quota, period))
    limits = [x for x in limits if x is not None]
    return min(limits) if limits else None


def _cgroup_dirs(mount: Path, path: str) -> list[Path]:
    """The cgroup directory of ``path`` under ``mount`` and its ancestors (the mount itself last;
    in a container the mount is often the process's own cgroup)."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    dirs = [mount.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)]
    return [d for d in dirs if d.is_dir()] + [mount]


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota.strip()), int(period.strip())
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None
