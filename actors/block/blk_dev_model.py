"""Device service models: how long the hardware takes for one request, per device kind.

Not a kernel file: this is the hardware behind a blk-mq driver's
``queue_rq``. The request queue (tags, dispatch, merging, plugging) is
``actors.block.blkdev`` and ``actors.block.blk_merge``; this module only
answers "a request entered the hardware at *now*: when does it complete?"
and keeps the state that answer depends on (busy units, the shared link,
the head position). Sans-IO: it never sleeps; randomness comes from the
stream the caller passes (the device actor's ``rng("timing")``).

Kinds (``DeviceConfig.kind``):

* ``ssd`` / ``nvme`` (flash): ``parallelism`` internal units (channels or
  dies) each serve one request at a time. A request holds a unit for its
  command ``latency``, then its bytes cross one link shared by all units at
  ``bandwidth`` (the SATA link or the PCIe lanes), in the order the requests
  reached the link; the unit is released at completion. One seeded jitter
  factor within ``1 ± jitter_pct/100`` scales both parts. At parallelism 1
  this is the old serial model, ``latency + bytes / bandwidth``.
* ``hdd`` (rotational): one head, one request at a time. A request that
  starts at the sector where the previous one ended is sequential: no
  positioning. Any other pays a seek of ``seek_min + (seek_max - seek_min) *
  sqrt(distance / capacity)`` (the square-root seek curve of short seeks,
  Ruemmler and Wilkes, "An introduction to disk drive modeling", IEEE
  Computer 1994) plus a rotational delay drawn uniformly within one
  revolution (``60 s / rpm``); then ``latency`` (command overhead, jittered)
  and the media transfer at ``bandwidth``. A request of unknown position
  (``sector is None``) seeks from a uniformly drawn sector.

``KIND_DEFAULTS`` holds each kind's defaults, each with its source or
marked as an estimate.

Emulation notes:
    No write cache, no garbage collection or SLC-cache exhaustion on flash,
    no NCQ/TCQ reordering (the drive serves its queue FIFO), no zoned
    recording (one media rate), no read-ahead cache in the drive. Reads and
    writes cost the same.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

import attrs

from actors.schema import DeviceConfig
from emu import NSEC_PER_MSEC, NSEC_PER_SEC, NSEC_PER_USEC

MiB = 1024**2
GB = 1000**3
SECTOR = 512


@attrs.frozen(kw_only=True)
class DeviceParams:
    """A device's resolved parameters (``DeviceConfig`` with the kind's defaults filled in)."""

    kind: str
    queue_depth: int
    parallelism: int
    rotational: bool
    latency_ns: int
    bandwidth: int
    jitter_permille: int = 0
    rpm: int | None = None
    seek_min_ns: int | None = None
    seek_max_ns: int | None = None
    capacity: int | None = None


#: Per kind: the defaults of every ``None`` field of ``DeviceConfig``, and where each comes from.
KIND_DEFAULTS: dict[str, dict[str, tuple[object, str]]] = {
    "ssd": {
        "queue_depth": (32, "SATA NCQ: 32 command slots (the AHCI/NCQ limit)"),
        "parallelism": (8, "estimate: an 8-channel SATA SSD controller"),
        "latency": (100 * NSEC_PER_USEC, "QD1 4 KiB random read ~10,000 IOPS (Samsung 850 EVO datasheet class)"),
        "bandwidth": (512 * MiB, "SATA 6 Gb/s: ~540 MB/s sequential read (same datasheet class)"),
    },
    "nvme": {
        "queue_depth": (1023, "Linux nvme io_queue_depth = 1024, one slot kept (drivers/nvme/host/pci.c, 4.19)"),
        "parallelism": (32, "estimate: dies working in parallel on a 4-lane consumer NVMe drive"),
        "latency": (70 * NSEC_PER_USEC, "QD1 4 KiB random read ~15,000 IOPS (Samsung 970 EVO datasheet class)"),
        "bandwidth": (3200 * MiB, "PCIe 3.0 x4: ~3,400 MB/s sequential read (same datasheet class)"),
    },
    "hdd": {
        "queue_depth": (32, "SATA NCQ: 32 command slots"),
        "parallelism": (1, "one head"),
        "latency": (100 * NSEC_PER_USEC, "estimate: command overhead"),
        "bandwidth": (120 * MiB, "7200 rpm 1 TB desktop drive media rate (Seagate Barracuda 7200.12 class)"),
        "rpm": (7200, "7200 rpm: 8.33 ms a revolution, 4.17 ms average rotational delay"),
        "seek_min": (1 * NSEC_PER_MSEC, "track-to-track ~1 ms (same class, estimate)"),
        "seek_max": (15 * NSEC_PER_MSEC, "full stroke, set so the sqrt curve averages 8.5 ms, the datasheet's average read seek"),
        "capacity": (1000 * GB, "1 TB"),
    },
}


class TimingStream(Protocol):
    """The random stream a model draws from (``random.Random``'s interface)."""

    def randint(self, a: int, b: int) -> int: ...

    def randrange(self, stop: int) -> int: ...


class FlashModel:
    """``ssd``/``nvme``: parallel units and one shared link (module docstring)."""

    def __init__(self, params: DeviceParams, rng: TimingStream | random.Random) -> None:
        self.params = params
        self.rng = rng
        self.busy = 0
        self._link_free_ns = 0

    def can_start(self) -> bool:
        return self.busy < self.params.parallelism

    def start(self, sector: int | None, nr_bytes: int, now_ns: int) -> int:
        """Take a unit for a request entering at *now_ns*; return its completion time."""
        p = self.params
        self.busy += 1
        latency = p.latency_ns
        transfer = nr_bytes * NSEC_PER_SEC // p.bandwidth
        if p.jitter_permille:
            factor = 1000 + self.rng.randint(-p.jitter_permille, p.jitter_permille)
            latency = latency * factor // 1000
            transfer = transfer * factor // 1000
        link_start = max(now_ns + latency, self._link_free_ns)
        self._link_free_ns = link_start + transfer
        return self._link_free_ns

    def finish(self) -> None:
        self.busy -= 1


class DiskModel:
    """``hdd``: one head, seek + rotation unless sequential (module docstring)."""

    def __init__(self, params: DeviceParams, rng: TimingStream | random.Random) -> None:
        self.params = params
        self.rng = rng
        self.busy = 0
        self.head_sector = 0
        self.nr_sequential = 0
        self.nr_seeks = 0

    def can_start(self) -> bool:
        return self.busy < 1

    def positioning_ns(self, sector: int) -> int:
        """Seek plus rotational delay to reach *sector* from the head (0 if sequential)."""
        p = self.params
        if sector == self.head_sector:
            self.nr_sequential += 1
            return 0
        nr_sectors = p.capacity // SECTOR
        self.nr_seeks += 1
        distance = min(abs(sector - self.head_sector), nr_sectors) / nr_sectors
        seek = p.seek_min_ns + int((p.seek_max_ns - p.seek_min_ns) * math.sqrt(distance))
        revolution = 60 * NSEC_PER_SEC // p.rpm
        return seek + self.rng.randrange(revolution)

    def start(self, sector: int | None, nr_bytes: int, now_ns: int) -> int:
        """Take the head for a request entering at *now_ns*; return its completion time."""
        p = self.params
        self.busy += 1
        if sector is None:
            sector = self.rng.randrange(p.capacity // SECTOR)
        ns = self.positioning_ns(sector)
        overhead = p.latency_ns
        if p.jitter_permille:
            overhead = overhead * (1000 + self.rng.randint(-p.jitter_permille, p.jitter_permille)) // 1000
        ns += overhead + nr_bytes * NSEC_PER_SEC // p.bandwidth
        self.head_sector = sector + nr_bytes // SECTOR
        return now_ns + ns

    def finish(self) -> None:
        self.busy -= 1


def device_params(config: DeviceConfig) -> DeviceParams:
    """*config* with its kind's defaults filled in (``emu validate`` prints the result)."""
    defaults = {key: value for key, (value, _source) in KIND_DEFAULTS[config.kind].items()}

    def pick(key: str) -> object:
        value = getattr(config, key)
        return defaults.get(key) if value is None else value

    return DeviceParams(
        kind=config.kind,
        queue_depth=pick("queue_depth"),
        parallelism=pick("parallelism"),
        rotational=config.kind == "hdd" if config.rotational is None else config.rotational,
        latency_ns=pick("latency"),
        bandwidth=pick("bandwidth"),
        jitter_permille=config.jitter_pct * 10,
        rpm=pick("rpm"),
        seek_min_ns=pick("seek_min"),
        seek_max_ns=pick("seek_max"),
        capacity=pick("capacity"),
    )


def make_model(params: DeviceParams, rng: TimingStream | random.Random) -> FlashModel | DiskModel:
    """The service model of *params*' kind."""
    return DiskModel(params, rng) if params.kind == "hdd" else FlashModel(params, rng)
