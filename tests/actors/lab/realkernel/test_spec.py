"""Config-to-probe translation (actors.lab.realkernel.spec): the spec lines, the disk, the refusals."""

from __future__ import annotations

import pathlib

import attrs
import pytest

from actors.lab.config import ConfigError, MappingConfig, SwapConfig, load_config
from actors.lab.realkernel.guest import SWAP_FILE, swap_commands
from actors.lab.realkernel.spec import device_throttle, translate
from actors.schema import DeviceConfig

REPO = pathlib.Path(__file__).resolve().parents[4]
CASES = REPO / "configs" / "realkernel"


def test_iomax_mem_spec() -> None:
    scenario = translate(load_config(CASES / "iomax-mem.toml"))
    lines = scenario.spec.splitlines()
    assert lines[:3] == ["horizon 3000000000", "seed 1", "dev /sys/block/vda/dev"]
    assert "cgroup batch riops=10" in lines and "cgroup monitor -" in lines
    # the monitor reads /proc/batch/cmdline: file 0, target process index 1
    assert lines[lines.index("proc monitor monitor") + 1 :][:2] == ["thread monitor 0 10000000 0", "op proc_read 0 0 1 1 1 1"]
    # the memreader reads 8 pages of its own mapping 0 in one sequential pread (pattern 0), target -1 = self
    assert "op proc_read 2 0 8 0 1 -1" in lines
    assert "map /data/data 67108864 1 0 1" in lines  # shared, read-only, MADV_RANDOM
    assert scenario.files == {"data": 64 << 20}
    assert scenario.processes == ["monitor", "batch"]
    assert (scenario.iops, scenario.bps) == (80_000, 512 << 20)  # the ssd kind: 8 units / 100 us, 512 MiB/s


def test_replicas_and_globs_expand(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.toml"
    text = (CASES / "plain.toml").read_text().replace('target = "batch"', 'target = "batch*"')
    path.write_text(text.replace('name = "batch"\n', 'name = "batch"\ncount = 3\n'))
    scenario = translate(load_config(path))
    assert scenario.processes == ["monitor", "batch0", "batch1", "batch2"]
    assert "op proc_read 0 0 1 1 3 1 2 3" in scenario.spec.splitlines()
    assert scenario.spec.count("thread mapper") == 3


def test_unsupported_op_is_a_located_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.toml"
    text = (CASES / "plain.toml").read_text().replace('{ op = "munmap" }', '{ op = "io", size = "4KiB" }')
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        translate(load_config(path))
    assert error.value.problems == [
        f"{path}: processes[1].threads[1].program[1].op: 'io' is not run on a real kernel; supported: touch, mmap, munmap, mprotect, think, proc_read"
    ]


def test_every_refusal_is_listed(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.toml"
    text = (CASES / "plain.toml").read_text()
    text = text.replace('size = "64MiB"', 'size = "64MiB"\nfs = "btrfs"\ncached = 0.5')
    text = text.replace('{ op = "mmap", length = "64KiB" }', '{ op = "mmap", mapping = "data" }')
    text += '\n[inject]\nread_error = 0.1\n'
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        translate(load_config(path))
    assert [p.split(": ")[1] for p in error.value.problems] == ["inject", "files[0].fs", "files[0].cached", "processes[1].threads[1].program[0].mapping"]
    assert all(p.startswith(f"{path}: ") for p in error.value.problems)


def test_hdd_throttle_adds_seek_and_rotation() -> None:
    config = load_config(CASES / "plain.toml")
    hdd = attrs.evolve(config, device=DeviceConfig(kind="hdd"))
    # 100 us + (1 + 15) / 2 ms average seek + half of 8.33 ms a revolution: ~81 IOPS
    assert device_throttle(hdd) == (1_000_000_000 // (100_000 + 8_000_000 + 30_000_000_000 // 7200), 120 << 20)


def test_memory_limits_swap_and_anonymous_mappings_carry_over() -> None:
    """memory.max/high become the probe's memory records, an anonymous mapping a "map -", [swap] a swap file on the data disk."""
    config = load_config(CASES / "plain.toml")
    cgroups = [attrs.evolve(config.cgroups[0], memory_max=16 * 1024**2, memory_high=8 * 1024**2), *config.cgroups[1:]]
    process = config.processes[0]
    anon = attrs.evolve(process, mappings=[*process.mappings, MappingConfig(name="heap", size=1024**2)])
    changed = attrs.evolve(config, cgroups=cgroups, swap=SwapConfig(size=64 * 1024**2, page_cluster=2), processes=[anon, *config.processes[1:]])
    scenario = translate(changed)
    assert f"memory {config.cgroups[0].path} {16 * 1024**2} {8 * 1024**2}" in scenario.spec.splitlines()
    assert "map - 1048576 0 1 0" in scenario.spec.splitlines()
    assert scenario.files[SWAP_FILE] == 64 * 1024**2 and (scenario.swap_bytes, scenario.page_cluster) == (64 * 1024**2, 2)
    assert "swapon /data/.swapfile" in swap_commands(scenario.swap_bytes, scenario.page_cluster)
    assert swap_commands(0, 3) == ""
    clash = attrs.evolve(changed, files=[attrs.evolve(changed.files[0], name=SWAP_FILE)])
    with pytest.raises(ConfigError, match="the name of the guest's swap file"):
        translate(clash)


def test_shipped_swap_matrix_translates() -> None:
    for name in ("swap-iomax", "swap-control"):
        scenario = translate(load_config(CASES / f"{name}.toml"))
        assert scenario.swap_bytes and any(line.startswith("memory batch ") for line in scenario.spec.splitlines())