"""Config schema: the frozen attrs classes a TOML config is structured into.

One class per table of a config file, fields and defaults as documented in
``configs/seed-inversion.toml``: the machine (``[device]``, ``[[cgroups]]``,
``[[files]]``, ``[btrfs]``, ``[writeback]``), the workload (``[[processes]]``,
their mappings and threads, and the ops a thread's ``program`` lists, with
``OP_NAMES`` giving each op's ``op = "..."`` spelling), custom ``[[policy]]``
entries, and the run's ``[inject]``, ``[checks]`` and ``[swarm]`` tables.
Field annotations use the value types of ``actors.config_types``; that is all
the checking a single field gets.

Not here: the root ``ExperimentConfig`` and its constructors
(``actors.config``), how TOML is structured into these classes
(``actors.config_convert``), and checks that look across fields
(``actors.config_check``).
"""

from __future__ import annotations

from typing import Literal

import attrs

from actors.config_types import (
    Count,
    Duration,
    Fraction,
    IoLatency,
    Natural,
    PositiveDuration,
    PositiveSize,
    Size,
)

# -- machine -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DeviceConfig:
    """The block device: queue depth and a per-IO timing model.

    IO time = ``latency`` + bytes / ``bandwidth`` per second, scaled by a
    seeded jitter of up to ``jitter_pct`` percent.
    """

    name: str = "sda"
    dev: str = "8:0"
    nr_requests: Count = 64
    rotational: bool = False
    latency: Duration = 100_000
    bandwidth: PositiveSize = 512 * 1024**2
    jitter_pct: Natural = 10


@attrs.frozen(kw_only=True)
class CgroupConfig:
    """A cgroup v2 directory and its io.latency setting (``None`` = no target)."""

    path: str
    io_latency: IoLatency | None = None


@attrs.frozen(kw_only=True)
class FileConfig:
    """A file on one of the filesystems; ``cached`` is the fraction in the page cache at start."""

    name: str
    size: PositiveSize
    fs: Literal["generic", "btrfs"] = "generic"
    cached: Fraction = 0.0


@attrs.frozen(kw_only=True)
class BtrfsConfig:
    """The btrfs-like filesystem's space and costs (``page_mkwrite`` reservation)."""

    space: PositiveSize = 256 * 1024**2
    reserve_cost: Duration = 20_000
    flush_threshold: Fraction = 0.1
    commit_cost: Duration = 2_000_000


@attrs.frozen(kw_only=True)
class WritebackConfig:
    """The flusher: ``dirty_writeback_interval`` and the dirty limit for ``balance_dirty_pages``.

    ``interval`` defaults to 500 ms, a tenth of the kernel's 5 s
    (``dirty_writeback_centisecs = 500``), so that runs of a few virtual
    seconds see periodic writeback.
    """

    interval: PositiveDuration = 500_000_000
    dirty_limit_pages: Count = 4096
    batch_pages: Count = 32


# -- workload ops ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Touch:
    """Touch pages of a mapping: each page access may fault."""

    mapping: str
    pattern: Literal["sequential", "random", "hotset"] = "random"
    pages: Count = 1
    write: bool = False
    hot_pages: Count = 64


@attrs.frozen(kw_only=True)
class Mmap:
    """``mmap()`` an anonymous region, or re-map the named file ``mapping`` if it is unmapped.

    mmap_sem is held for write for ``hold``; ``length`` is ignored with ``mapping``.
    """

    length: PositiveSize = 4096
    mapping: str | None = None
    hold: Duration = 20_000


@attrs.frozen(kw_only=True)
class Munmap:
    """``munmap()`` the region this thread mapped last (or ``mapping``)."""

    mapping: str | None = None
    hold: Duration = 20_000


@attrs.frozen(kw_only=True)
class Mprotect:
    """``mprotect()`` a mapping (or this thread's last region): write-held for ``hold``.

    ``prot = "r"`` removes write permission (and write-protects the PTEs),
    ``"rw"`` gives it back (the mapping must be writable); unset re-applies
    the current protection.
    """

    mapping: str | None = None
    prot: Literal["r", "rw"] | None = None
    hold: Duration = 10_000


@attrs.frozen(kw_only=True)
class Truncate:
    """``ftruncate(file, size)``: drop the page cache beyond ``size`` (waiting for locked pages,
    zapping PTEs), then, with ``extend``, grow the file back to its configured size after ``hold``
    (truncate-then-extend)."""

    file: str
    size: Size = 0
    extend: bool = True
    hold: Duration = 0


@attrs.frozen(kw_only=True)
class Populate:
    """``mlock()``/``MAP_POPULATE`` of a whole mapping: ``__mm_populate`` through GUP."""

    mapping: str


@attrs.frozen(kw_only=True)
class ProcRead:
    """Read ``/proc/<pid>/<file>`` of each process matching ``target`` (a glob)."""

    target: str
    file: Literal["cmdline", "maps"] = "cmdline"
    cost: Duration = 5_000


@attrs.frozen(kw_only=True)
class Io:
    """Direct IO of ``size`` from the thread's cgroup, waited for (an IO-bound service)."""

    size: PositiveSize = 4096
    write: bool = False


@attrs.frozen(kw_only=True)
class Think:
    """Compute or sleep for ``time`` (``dist = "exp"``: exponential with that mean)."""

    time: Duration
    dist: Literal["fixed", "exp"] = "fixed"


Op = Touch | Mmap | Munmap | Mprotect | Truncate | Populate | ProcRead | Io | Think
OP_NAMES: dict[type, str] = {
    Touch: "touch",
    Mmap: "mmap",
    Munmap: "munmap",
    Mprotect: "mprotect",
    Truncate: "truncate",
    Populate: "populate",
    ProcRead: "proc_read",
    Io: "io",
    Think: "think",
}


@attrs.frozen(kw_only=True)
class MappingConfig:
    """A file mapping in a process (``mmap(MAP_SHARED)`` by default).

    ``madvise`` sets VM_RAND_READ/VM_SEQ_READ; ``read_ahead_kb`` is the
    device's setting when the file was opened (``file->f_ra.ra_pages``).
    """

    name: str
    file: str
    shared: bool = True
    writable: bool = False
    madvise: Literal["normal", "random", "sequential"] = "normal"
    read_ahead_kb: Natural = 128


@attrs.frozen(kw_only=True)
class ThreadConfig:
    """A thread running ``program`` ``iterations`` times (0 = until the horizon).

    With ``every``, iterations start on a fixed schedule (open loop) and the
    latency of an iteration's first op counts from its intended start.
    With ``handle_signals`` the thread has SIGSEGV/SIGBUS handlers that
    skip the rest of the op (as a JVM or a database does) instead of dying.
    """

    name: str
    program: list[Op]
    iterations: Natural = 0
    every: PositiveDuration | None = None
    start: Duration = 0
    handle_signals: bool = False


@attrs.frozen(kw_only=True)
class ProcessConfig:
    """``count`` processes named ``name`` (``name0``, ``name1``... when count > 1)."""

    name: str
    cgroup: str = ""
    count: Count = 1
    mappings: list[MappingConfig] = attrs.field(factory=list)
    threads: list[ThreadConfig] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class InjectConfig:
    """Fault injection (``actors.inject``), drawn from the run's own ``inject`` stream.

    Probabilities are per event; ``tasks`` (a glob of ``process.thread``
    names) and ``files`` (a glob of file names) narrow who is hit.
    ``sigkill_every`` is the mean of an exponential gap between SIGKILLs
    sent to a random live task matching ``tasks`` (at most ``sigkill_max``);
    0 turns signals off.
    """

    read_error: Fraction = 0.0
    write_error: Fraction = 0.0
    enospc: Fraction = 0.0
    sigkill_every: Duration = 0
    sigkill_max: Natural = 1
    tasks: str = "*"
    files: str = "*"


@attrs.frozen(kw_only=True)
class ChecksConfig:
    """Invariant tuning: ``liveness`` is how long an op may stay in flight at the end of a run."""

    liveness: PositiveDuration = 1_000_000_000


#: What ``[swarm] off`` may switch off: fault families, then op kinds of the workload mix.
SWARM_FAMILIES = ("read_error", "write_error", "enospc", "sigkill")
SWARM_OPS = ("munmap", "mmap", "mprotect", "truncate", "proc_read", "populate", "io")


@attrs.frozen(kw_only=True)
class SwarmConfig:
    """Swarm testing: fault families and op kinds switched off for this config (``emu explore --swarm``)."""

    off: list[Literal[SWARM_FAMILIES + SWARM_OPS]] = attrs.field(factory=list)  # type: ignore[valid-type]


@attrs.frozen(kw_only=True)
class PolicyConfig:
    """A custom policy: a preset with some switches changed."""

    name: str
    base: str = "v4.19"
    rwsem: Literal["4.19", "5.3"] | None = None
    fault_retry: Literal["never", "once", "many"] | None = None
    filemap_fault: Literal["4.19", "v3", "v5.1"] | None = None
    cached_page: bool | None = None
    page_mkwrite: Literal["hold", "v3-btrfs"] | None = None
    zero_readahead_fix: bool | None = None
    bdp_drop_mmap_sem: bool | None = None



def process_instance_names(process: ProcessConfig) -> list[str]:
    """The names of a process entry's replicas: ``name`` or ``name0..nameN-1``."""
    if process.count == 1:
        return [process.name]
    return [f"{process.name}{i}" for i in range(process.count)]
