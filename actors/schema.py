"""What an emulated machine and workload are made of: the config schema.

The kernel is built from these frozen attrs classes (``actors.kernel``,
``actors.sched.task`` read them); the lab (``actors.lab.config``) structures
TOML files into them. One class per table of a config file, fields and
defaults as ``docs/CONFIG.md`` lists them: the machine (``[device]``,
``[[cgroups]]``, ``[[files]]``, ``[btrfs]``, ``[writeback]``), the workload
(``[[processes]]``, their mappings and threads, and the ops a thread's
``program`` lists, with ``OP_NAMES`` giving each op's ``op = "..."``
spelling), custom ``[[policy]]`` entries, the run's ``[inject]``,
``[checks]`` and ``[swarm]`` tables, the lab's ``[report]``, and the root
``ExperimentConfig``.

Field annotations use the value types defined here (``Duration``, ``Size``,
...: ``NewType``s over ``int``/``float``, so code building a config passes
plain numbers); how a TOML file spells them, and every check, is the lab's
(``actors.lab.config_types``, ``config_convert``, ``config_check``).
Nothing here imports the lab.
"""

from __future__ import annotations

from typing import Literal, NewType

import attrs

from actors.block.blk_throttle import IoMax

# Value types. Each is an ``int``/``float`` at run time; the cattrs hooks
# below parse and check TOML values into them, so a bad value is reported at
# its own key path. Code building configs directly passes plain numbers.
Duration = NewType("Duration", int)  # ns; TOML: "10ms" (or 0)
PositiveDuration = NewType("PositiveDuration", int)
Size = NewType("Size", int)  # bytes; TOML: "4KiB" or an integer
PositiveSize = NewType("PositiveSize", int)
Bandwidth = NewType("Bandwidth", int)  # bytes per second; TOML: "512MiB/s", "200MB/s" or an integer
Count = NewType("Count", int)  # an integer >= 1
Natural = NewType("Natural", int)  # an integer >= 0
Fraction = NewType("Fraction", float)  # 0..1
Factor = NewType("Factor", float)  # a number >= 0
IoLatency = NewType("IoLatency", int)  # min_lat_nsec from "target=<usec>"; "max" means off
MemoryLimit = NewType("MemoryLimit", int)  # bytes; TOML: "64MiB" or an integer; "max" means no limit


# -- machine -------------------------------------------------------------------


#: Device kinds and what each models (``actors.block.blk_dev_model``).
DEVICE_KINDS = ("ssd", "nvme", "hdd")


@attrs.frozen(kw_only=True)
class DeviceConfig:
    """The block device: the request queue, the hardware queue and a service model per ``kind``.

    ``ssd``/``nvme``: ``parallelism`` internal units each serve one request
    for ``latency`` (scaled by a seeded jitter of up to ``jitter_pct``
    percent), then its bytes cross one shared link at ``bandwidth``.
    ``hdd``: one head; a request that does not start where the previous one
    ended pays a seek (``seek_min`` + (``seek_max`` - ``seek_min``) *
    sqrt(distance / ``capacity``)) and a rotational delay (uniform within
    one revolution at ``rpm``), then ``latency`` and the media transfer at
    ``bandwidth``. ``None`` means the kind's default
    (``actors.block.blk_dev_model.KIND_DEFAULTS``). ``rotational`` is
    ``queue/rotational`` (io.latency's rule); ``None``: true for ``hdd``.
    """

    name: str = "sda"
    dev: str = "8:0"
    kind: Literal[DEVICE_KINDS] = "ssd"  # type: ignore[valid-type]
    nr_requests: Count = 64
    queue_depth: Count | None = None
    parallelism: Count | None = None
    rotational: bool | None = None
    latency: Duration | None = None
    bandwidth: Bandwidth | None = None
    jitter_pct: Natural = 10
    rpm: Count | None = None
    seek_min: Duration | None = None
    seek_max: Duration | None = None
    capacity: PositiveSize | None = None


@attrs.frozen(kw_only=True)
class MachineConfig:
    """The machine: ``cpus`` CPUs tasks contend for (0: one per task, no contention).

    ``cgroup_writeback``: ``CONFIG_CGROUP_WRITEBACK`` (default y with memcg
    and blkcg, as distribution kernels build it): writeback is done per
    cgroup and charged to the cgroup that dirtied the inode
    (``actors.mm.page_writeback``); off, all of it is the root's.
    """

    cpus: Natural = 0
    cgroup_writeback: bool = True


@attrs.frozen(kw_only=True)
class CostsConfig:
    """CPU and scheduling costs (``actors.sched.core``); each default's source is ``COST_SOURCES``.

    Fault path: ``access`` (a user access that needs no fault),
    ``fault_entry`` (exception entry and exit, per fault), ``minor_fault``
    (an attempt that maps a cached page, under the sem), ``major_fault``
    (extra for an attempt that had to read), ``page_alloc`` (per page
    allocated and inserted into the page cache), ``bio_build`` (per bio
    built and submitted), ``fault_around_pte`` (per PTE fault-around maps).
    VMA system calls: ``syscall`` (entry and exit), ``vma_alloc``
    (``mmap``), ``vma_free`` and ``pgtable_teardown`` (``munmap``),
    ``tlb_shootdown`` (``munmap``/``mprotect``, per other thread of the mm:
    one IPI each). ``proc_read``: one ``/proc/<pid>/cmdline`` read under the
    target's sem (``maps``: per VMA). ``wakeup``: from a wake-up to running.
    ``scale`` multiplies every one of them (a sweep knob).
    """

    access: Duration = 50
    fault_entry: Duration = 1_000
    minor_fault: Duration = 1_000
    major_fault: Duration = 10_000
    page_alloc: Duration = 500
    bio_build: Duration = 2_000
    fault_around_pte: Duration = 50
    syscall: Duration = 500
    vma_alloc: Duration = 1_000
    vma_free: Duration = 500
    pgtable_teardown: Duration = 1_000
    tlb_shootdown: Duration = 3_000
    proc_read: Duration = 5_000
    wakeup: Duration = 5_000
    scale: Factor = 1.0


#: Where each ``CostsConfig`` default comes from, or ``"estimate: ..."``: the one
#: place the sources live (``emu validate`` prints them, docs/MODEL.md explains them).
COST_SOURCES: dict[str, str] = {
    "access": "estimate: a TLB miss and a cache miss",
    "fault_entry": "estimate: exception entry and exit to do_page_fault's sem",
    "minor_fault": "estimate: 1-2 us a minor fault on 2018 x86",
    "major_fault": "estimate: 10-30 us CPU a major fault on 2018 x86, less page_alloc and bio_build",
    "page_alloc": "estimate: __page_cache_alloc and add_to_page_cache_lru",
    "bio_build": "estimate: bio_alloc and submit_bio down to the driver",
    "fault_around_pte": "estimate: one PTE filemap_map_pages maps",
    "syscall": "estimate: entry and exit with KPTI (post-2018)",
    "vma_alloc": "estimate: vm_area_alloc, get_unmapped_area, vma_link",
    "vma_free": "estimate: detach and free one VMA",
    "pgtable_teardown": "estimate: unmap_region of a small region",
    "tlb_shootdown": "estimate: a few us a remote flush IPI on 2018 x86",
    "proc_read": "estimate: the model's earlier fixed /proc read cost",
    "wakeup": "estimate: between Skylake-SP C1 (2 us) and C1E (10 us) exit latency (intel_idle skx_cstates)",
}


@attrs.frozen(kw_only=True)
class CgroupConfig:
    """A cgroup v2 directory: its io.latency target (``None`` = none), io.max limits and memory limits.

    ``memory_max``/``memory_high`` (TOML ``"memory.max"``/``"memory.high"``)
    are in bytes, ``None`` for ``"max"`` (no limit); the kernel keeps whole
    pages (``page_counter_memparse`` rounds down), and so does the model
    (``actors.mm.memcontrol``).

    ``dirty_limit_pages``: the dirty limit of the cgroup's own writeback
    domain (``mdtc``), which the kernel derives from the memcg's memory;
    ``None``: the domain's limit is the global one.
    """

    path: str
    io_latency: IoLatency | None = None
    io_max: IoMax | None = None
    memory_max: MemoryLimit | None = None
    memory_high: MemoryLimit | None = None
    dirty_limit_pages: Count | None = None


@attrs.frozen(kw_only=True)
class FileConfig:
    """A file on one of the filesystems; ``cached`` is the fraction in the page cache at start.

    ``block_map = "indirect"`` (generic fs only): ext2/ext3-style block
    mapping, one 4 KiB indirect block per 1024 data blocks, read
    synchronously by ``get_block`` the first time a data block it maps is
    read (``actors.fs.generic``); ``"extents"``: the mapping is always cached.
    """

    name: str
    size: PositiveSize
    fs: Literal["generic", "btrfs"] = "generic"
    cached: Fraction = 0.0
    block_map: Literal["extents", "indirect"] = "extents"


@attrs.frozen(kw_only=True)
class SwapConfig:
    """A swap partition on the device (``mkswap`` + ``swapon``), placed after the files.

    ``size`` 0 means no swap. ``page_cluster`` is ``/proc/sys/vm/page-cluster``
    (default 3: swap-in reads up to 2**3 = 8 slots around the faulting one).
    """

    size: Size = 0
    page_cluster: Natural = 3


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
    """Read ``/proc/<pid>/<file>`` of each process matching ``target`` (a glob; ``"self"``: the reader's own).

    ``cost``: the time under the target's sem; ``None`` takes ``[costs] proc_read``.
    ``file = "mem"`` reads ``pages`` pages of the target's mapping
    ``target_mapping`` (in ``pattern`` order), as ``pread`` on
    ``/proc/<pid>/mem`` does.
    """

    target: str
    file: Literal["cmdline", "maps", "mem"] = "cmdline"
    cost: Duration | None = None
    target_mapping: str | None = None
    pages: Count = 1
    pattern: Literal["sequential", "random"] = "random"


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
    """A mapping in a process: of ``file`` (``mmap(MAP_SHARED)`` by default), or anonymous.

    An anonymous mapping gives ``size`` instead of ``file``: private and
    writable (``mmap(MAP_PRIVATE | MAP_ANONYMOUS, PROT_READ | PROT_WRITE)``);
    ``shared`` and ``writable`` then default to false and true.
    ``madvise`` sets VM_RAND_READ/VM_SEQ_READ; ``read_ahead_kb`` is the
    device's setting when the file was opened (``file->f_ra.ra_pages``).
    """

    name: str
    file: str | None = None
    size: PositiveSize | None = None
    shared: bool | None = None
    writable: bool | None = None
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
class ReportConfig:
    """What ``emu run`` prints as this config's answer: figures of the results (``actors.lab.figures``).

    The lab's concern, not the kernel's: nothing in the emulated kernel reads it.
    """

    answer: list[str] = attrs.field(factory=list)


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
    per_vma_lock: Literal["off", "anon", "file"] | None = None
    memcg_high_delay: bool | None = None
    swapin_charge: Literal["fault", "swapcache"] | None = None
    iolatency: Literal["4.19", "5.4"] | None = None
    fault_accounting: Literal["4.19", "5.9"] | None = None
    swapin_sync: bool | None = None
    page_wait: Literal["4.19", "5.9"] | None = None


@attrs.frozen(kw_only=True)
class ExperimentConfig:
    """One experiment: a machine, a workload, and the policies to compare."""

    name: str
    seed: Natural = 1
    horizon: PositiveDuration = 10_000_000_000
    policies: list[str] = attrs.field(factory=lambda: ["v4.19", "v3", "v5.1"])
    machine: MachineConfig = attrs.field(factory=MachineConfig)
    device: DeviceConfig = attrs.field(factory=DeviceConfig)
    costs: CostsConfig = attrs.field(factory=CostsConfig)
    cgroups: list[CgroupConfig] = attrs.field(factory=list)
    files: list[FileConfig] = attrs.field(factory=list)
    btrfs: BtrfsConfig = attrs.field(factory=BtrfsConfig)
    writeback: WritebackConfig = attrs.field(factory=WritebackConfig)
    swap: SwapConfig = attrs.field(factory=SwapConfig)
    processes: list[ProcessConfig] = attrs.field(factory=list)
    policy: list[PolicyConfig] = attrs.field(factory=list)
    inject: InjectConfig = attrs.field(factory=InjectConfig)
    checks: ChecksConfig = attrs.field(factory=ChecksConfig)
    swarm: SwarmConfig = attrs.field(factory=SwarmConfig)
    report: ReportConfig = attrs.field(factory=ReportConfig)
    source: str = attrs.field(default="<config>", eq=False)


def process_instance_names(process: ProcessConfig) -> list[str]:
    """The names of a process entry's replicas: ``name`` or ``name0..nameN-1``."""
    if process.count == 1:
        return [process.name]
    return [f"{process.name}{i}" for i in range(process.count)]


def apply_swarm(config: ExperimentConfig) -> ExperimentConfig:
    """*config* with ``[swarm] off`` applied: families set to 0, ops of those kinds removed.

    A program left empty gets one ``think`` for the whole horizon, so the
    thread idles instead of spinning.
    """
    off = set(config.swarm.off)
    if not off:
        return config
    inject = attrs.evolve(config.inject, **{name: 0 for name in SWARM_FAMILIES if name in off and name != "sigkill"})
    if "sigkill" in off:
        inject = attrs.evolve(inject, sigkill_every=0)
    by_name = {name: cls for cls, name in OP_NAMES.items()}
    removed = tuple(by_name[name] for name in off if name in by_name)
    processes = []
    for process in config.processes:
        threads = []
        for thread in process.threads:
            program = [op for op in thread.program if not isinstance(op, removed)] if removed else list(thread.program)
            if not program:
                program = [Think(time=config.horizon)]
            threads.append(attrs.evolve(thread, program=program))
        processes.append(attrs.evolve(process, threads=threads))
    return attrs.evolve(config, inject=inject, processes=processes)
