"""Tests for actors/block/blk_dev_model.py: the service model of each device kind, and resolving a config."""

from __future__ import annotations

import random

import pytest

from actors.block.blk_dev_model import (
    GB,
    KIND_DEFAULTS,
    SECTOR,
    DeviceParams,
    DiskModel,
    FlashModel,
    device_params,
    make_model,
)
from actors.schema import DeviceConfig

US = 1_000
MS = 1_000_000
MiB = 1024**2


def flash(parallelism: int, *, latency: int = 100 * US, bandwidth: int = 100 * MiB) -> FlashModel:
    params = DeviceParams(kind="ssd", queue_depth=32, parallelism=parallelism, rotational=False, latency_ns=latency,
                          bandwidth=bandwidth)  # fmt: skip
    return FlashModel(params, random.Random(1))


def disk(**overrides: object) -> DiskModel:
    values = dict(kind="hdd", queue_depth=32, parallelism=1, rotational=True, latency_ns=100 * US, bandwidth=100 * MiB,
                  rpm=7200, seek_min_ns=1 * MS, seek_max_ns=15 * MS, capacity=1000 * GB)  # fmt: skip
    values.update(overrides)
    return DiskModel(DeviceParams(**values), random.Random(1))


def test_flash_at_parallelism_one_is_latency_plus_transfer() -> None:
    """One unit: each request takes latency + bytes / bandwidth (the old serial model)."""
    model = flash(1)
    assert model.can_start()
    done = model.start(0, 1 * MiB, 0)
    assert done == 100 * US + 10 * MS  # 1 MiB at 100 MiB/s
    assert not model.can_start()
    model.finish()
    assert model.can_start()


def test_flash_units_overlap_latency_but_share_the_link() -> None:
    """Four units start four requests at once: their latencies overlap, their transfers queue on the link."""
    model = flash(4)
    done = [model.start(None, 1 * MiB, 0) for _ in range(4)]
    assert done == [100 * US + (i + 1) * 10 * MS for i in range(4)]
    assert not model.can_start()


def test_flash_small_ios_scale_with_parallelism() -> None:
    """Small reads are latency-bound: eight units finish eight of them in one latency, not eight."""
    serial, parallel = flash(1, bandwidth=1024 * MiB), flash(8, bandwidth=1024 * MiB)
    last_serial = 0
    for _ in range(8):
        last_serial = serial.start(None, 4096, last_serial)
        serial.finish()
    last_parallel = max(parallel.start(None, 4096, 0) for _ in range(8))
    assert last_parallel < last_serial / 4


def test_disk_sequential_request_pays_no_positioning() -> None:
    """A request starting where the previous one ended: no seek, no rotation, only overhead and transfer."""
    model = disk()
    first = model.start(2048, 4096, 0)
    model.finish()
    second = model.start(2048 + 8, 4096, first) - first
    assert second == 100 * US + 4096 * 1_000_000_000 // (100 * MiB)
    assert (model.nr_seeks, model.nr_sequential) == (1, 1)


def test_disk_random_request_seeks_and_waits_for_rotation() -> None:
    """A far request pays at least a seek_min and at most a full stroke plus one revolution."""
    model = disk()
    model.start(0, 4096, 0)
    model.finish()
    far = model.start(500 * GB // SECTOR, 4096, 0)
    assert 1 * MS + 100 * US < far < 15 * MS + 60 * 1_000_000_000 // 7200 + 1 * MS


def test_disk_seek_grows_with_distance_as_a_square_root() -> None:
    """Seek time rises with distance, concavely (sqrt curve); rotation is drawn apart from it."""
    model = disk(rpm=1_000_000_000)  # a revolution of 60 ns: rotation out of the way
    times = []
    for fraction in (0.01, 0.04, 0.16, 0.64):
        model.head_sector = 0
        times.append(model.positioning_ns(int(fraction * 1000 * GB // SECTOR)))
    assert times == sorted(times)
    gains = [b - a for a, b in zip(times, times[1:])]
    assert gains[0] == pytest.approx(gains[1] / 2, rel=0.01) and gains[1] == pytest.approx(gains[2] / 2, rel=0.01)


def test_disk_average_random_seek_matches_the_datasheet() -> None:
    """Uniform random positions over the disk average the 8.5 ms read seek the defaults are set from."""
    model = disk(rpm=1_000_000_000)
    rng = random.Random(3)
    seeks = []
    for _ in range(20_000):
        model.head_sector = rng.randrange(1000 * GB // SECTOR)
        seeks.append(model.positioning_ns(rng.randrange(1000 * GB // SECTOR)))
    assert sum(seeks) / len(seeks) == pytest.approx(8.5 * MS, rel=0.03)


def test_disk_has_one_head() -> None:
    model = disk()
    model.start(None, 4096, 0)
    assert not model.can_start()


def test_device_params_fill_in_the_kind_defaults_and_keep_what_is_set() -> None:
    """Unset keys take the kind's defaults; set ones win; rotational follows the kind unless set."""
    ssd = device_params(DeviceConfig())
    assert (ssd.kind, ssd.queue_depth, ssd.parallelism, ssd.rotational) == ("ssd", 32, 8, False)
    hdd = device_params(DeviceConfig(kind="hdd", latency=50 * US))
    assert (hdd.queue_depth, hdd.parallelism, hdd.rotational, hdd.rpm, hdd.latency_ns) == (32, 1, True, 7200, 50 * US)
    nvme = device_params(DeviceConfig(kind="nvme", parallelism=4, rotational=True))
    assert (nvme.queue_depth, nvme.parallelism, nvme.rotational) == (1023, 4, True)
    assert isinstance(make_model(hdd, random.Random(0)), DiskModel)
    assert isinstance(make_model(nvme, random.Random(0)), FlashModel)


def test_every_kind_default_names_its_source() -> None:
    for kind, defaults in KIND_DEFAULTS.items():
        for key, (_value, source) in defaults.items():
            assert source.strip(), (kind, key)
