"""Hardware-aware defaults: ``auto`` precision picks bfloat16 only where bf16 matmuls are native
(ISA limits in the environment included), and ``threads=auto`` is the CPUs this process may
really use (affinity, physical cores, cgroup quota), read from fake /proc and /sys trees."""

import json
from dataclasses import dataclass

import pytest
import torch

from interplab.core import hardware, threads
from interplab.core.config import RecordFields, build_config
from interplab.core.errors import ConfigError
from interplab.core.result import Result
from interplab.core.threads import (
    cgroup_cpu_quota,
    parse_cpu_list,
    physical_cores,
    resolve_threads,
    torch_threads,
    usable_cpus,
)

ISA_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ISA_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "fma"}, "float32"), ({"avx2", "avx512f"}, "float32"),
    ({"avx512f", "avx512_bf16"}, "bfloat16"), ({"amx_bf16"}, "bfloat16")])
def test_auto_follows_the_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: frozenset(flags))
    assert hardware.resolve_matmul_dtype("auto", "cpu") == expected
    assert hardware.resolve_matmul_dtype("float32", "cpu") == "float32"
    assert hardware.resolve_matmul_dtype("bfloat16", "cpu") == "bfloat16"


@pytest.mark.parametrize(("name", "value", "native"), [
    ("ONEDNN_MAX_CPU_ISA", "AVX2", False), ("ONEDNN_MAX_CPU_ISA", "avx512_core", False),
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI", False), ("DNNL_MAX_CPU_ISA", "AVX2", False),
    ("ATEN_CPU_CAPABILITY", "avx2", False), ("ATEN_CPU_CAPABILITY", "default", False),
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", True), ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", True),
    ("ONEDNN_MAX_CPU_ISA", "ALL", True), ("ATEN_CPU_CAPABILITY", "avx512", True)])
def test_isa_limits_in_the_environment_turn_native_bf16_off(monkeypatch, name, value, native):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    assert hardware.native_bf16("cpu")
    monkeypatch.setenv(name, value)
    assert hardware.native_bf16("cpu") is native
    assert hardware.resolve_matmul_dtype("auto", "cpu") == ("bfloat16" if native else "float32")
    assert (hardware.isa_limited_below_bf16() is None) is native


def _tree(root, files: dict[str, str]):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _siblings(pairs) -> dict[str, str]:
    return {f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list": text for cpu, text in pairs}


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("150000 100000\n", 1),  # 1.5 CPUs: rounded down (a throttled extra thread stalls the rest)
    ("50000 100000\n", 1),   # half a CPU: still at least one thread
    ("250000 100000\n", 2), ("800000 100000\n", 4),  # a quota above the cores: the cores
    ("max 100000\n", 4)])    # no quota
def test_a_cgroup_v2_quota_caps_the_threads(tmp_path, cpu_max, expected):
    root = _tree(tmp_path, {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/cpu.max": cpu_max})
    assert usable_cpus(root, affinity={0, 1, 2, 3}) == expected


def test_the_tightest_quota_on_the_cgroup_path_counts(tmp_path):
    root = _tree(tmp_path, {"proc/self/cgroup": "0::/job/step\n",
                            "sys/fs/cgroup/cpu.max": "max 100000\n",
                            "sys/fs/cgroup/job/cpu.max": "300000 100000\n",
                            "sys/fs/cgroup/job/step/cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(root) == 3.0
    assert usable_cpus(root, affinity=set(range(8))) == 3


def test_a_cgroup_v1_quota_caps_the_threads(tmp_path):
    # In a container the host's path (/docker/abc) is absent: the mount is its own cgroup.
    root = _tree(tmp_path, {"proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n0::/\n",
                            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "150000\n",
                            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(root) == 1.5
    assert usable_cpus(root, affinity={0, 1}) == 1
    (tmp_path / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert cgroup_cpu_quota(root) is None and usable_cpus(root, affinity={0, 1}) == 2


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path) is None
    assert usable_cpus(tmp_path, affinity={0, 1, 2}) == 3


def test_hyperthread_siblings_count_once(tmp_path):
    # 4 logical CPUs on 2 cores: 0 and 2 share a core, 1 and 3 share the other.
    root = _tree(tmp_path, _siblings([(0, "0,2\n"), (1, "1,3\n"), (2, "0,2\n"), (3, "1,3\n")]))
    assert physical_cores({0, 1, 2, 3}, root) == 2
    assert physical_cores({0, 2}, root) == 1   # both halves of one core
    assert physical_cores({0, 1}, root) == 2   # one thread on each core
    assert usable_cpus(root, affinity={0, 1, 2, 3}) == 2


def test_sibling_ranges_are_parsed(tmp_path):
    assert parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    root = _tree(tmp_path, _siblings([(c, "0-1\n" if c < 2 else "2-3\n") for c in range(4)]))
    assert physical_cores({0, 1, 2, 3}, root) == 2


def test_cpuinfo_tells_the_cores_when_sysfs_does_not(tmp_path):
    blocks = [f"processor\t: {p}\nphysical id\t: 0\ncore id\t\t: {p % 2}\n" for p in range(4)]
    root = _tree(tmp_path, {"proc/cpuinfo": "\n".join(blocks)})
    assert physical_cores({0, 1, 2, 3}, root) == 2
    assert physical_cores({1, 3}, root) == 1
    assert physical_cores({0, 1, 2, 3}, tmp_path / "nothing") == 4  # nothing tells: logical CPUs


def test_threads_auto_and_numbers(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda root="/": 3)
    assert resolve_threads("auto") == 3
    assert resolve_threads(5) == 5 and resolve_threads("2") == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's explicit choice wins over auto
    assert resolve_threads("auto") == 1 and resolve_threads(4) == 4


@pytest.mark.parametrize("bad", [0, -1, "0", "two", 1.5, "1.5", True, None, ""])
def test_bad_thread_counts_are_refused_naming_the_field(bad):
    with pytest.raises(ConfigError, match=r"threads=.*auto.*>= 1"):
        resolve_threads(bad)
    with pytest.raises(ConfigError, match=r"^workers="):
        resolve_threads(bad, field="workers")


def test_the_real_machine_gives_a_sane_count():
    assert 1 <= resolve_threads("auto") <= len(hardware.os.sched_getaffinity(0))


def test_torch_threads_restores_the_count_even_after_an_error():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with pytest.raises(RuntimeError), torch_threads(target) as count:
        assert count == target and torch.get_num_threads() == target
        raise RuntimeError("analysis failed")
    assert torch.get_num_threads() == before


def test_every_run_config_has_threads_checked_before_work():
    from interplab.analyses.patching_run import PatchRunConfig

    assert PatchRunConfig().threads == "auto"
    assert build_config(PatchRunConfig, {"threads": "3"}).threads == "3"
    with pytest.raises(ConfigError, match="threads='0'"):
        build_config(PatchRunConfig, {"threads": "0"})
    with pytest.raises(ConfigError, match="threads='many'"):
        RecordFields(threads="many")


@dataclass(frozen=True)
class _Config(RecordFields):
    """A run without a model."""


@dataclass
class _Seen(Result):
    threads: int

    def headline(self) -> dict:
        return {"threads": self.threads}


def test_the_runner_sets_threads_for_the_run_and_restores_them(tmp_path, monkeypatch):
    from interplab.core.analysis import Analysis
    from interplab.runs import runner

    entry = Analysis("threads-probe", _Config, lambda cfg, ctx: _Seen(torch.get_num_threads()), _Seen, "x")
    monkeypatch.setattr(runner, "analysis", lambda name: entry)
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    outcome = runner.run_analysis("threads-probe", out=str(tmp_path), threads=str(target), progress=False)
    assert outcome.result.threads == target
    assert torch.get_num_threads() == before
    assert json.loads((outcome.path / "provenance.json").read_text())["torch_threads"] == target
