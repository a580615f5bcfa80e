"""A config as the probe runs it: the scenario spec, the guest's disk and its throttle.

``translate(config)`` turns an ``ExperimentConfig`` into a ``Scenario``: the
text spec ``probe.c`` parses (its header comment gives the format), the
files to put on the guest's ext4 disk, the disk's ``read_ahead_kb`` and the
qemu throttle derived from ``[device]``. What the probe cannot run is
refused here, before anything boots, with one located line per problem
(``ConfigError``), e.g.::

    x.toml: processes[0].threads[1].program[0].op: "io" is not run on a real kernel; supported: touch, mmap, munmap, mprotect, think, proc_read

What carries over and what does not:
    * ops: ``touch`` (all patterns), anonymous ``mmap``/``munmap`` (of the
      thread's last region), ``mprotect``, ``think``, ``proc_read`` of
      ``cmdline``, ``maps`` and ``mem``. ``hold`` and ``cost`` are the
      emulator's estimates of kernel time: the real kernel takes what it
      takes, so they are ignored. ``io``, ``truncate``, ``populate`` and a
      named ``mapping`` on ``mmap``/``munmap`` are refused.
    * ``proc_read`` of ``mem``: ``pattern = "sequential"`` is one ``pread`` of
      ``pages`` pages at a cursor moving through the mapping (the kernel holds
      the target's mmap_lock across the whole read); ``"random"`` is one
      4 KiB ``pread`` per page.
    * files: ``fs = "generic"`` becomes a file on ext4 (extents), cold at the
      start (``cached = 0``); btrfs, ``block_map = "indirect"`` and a cached
      fraction are refused. Every mapping must ask the same ``read_ahead_kb``
      (it is the disk's setting).
    * ``[device]``: the disk is throttled by qemu to the kind's IOPS
      (``parallelism`` / ``latency``; for ``hdd`` the average seek and half a
      revolution are added) and ``bandwidth``.
    * anonymous mappings (``size`` instead of ``file``) are
      ``MAP_PRIVATE | MAP_ANONYMOUS`` at the same fixed addresses.
    * cgroups: ``io.max`` and ``memory.max``/``memory.high`` are written to
      the guest's cgroup files (``+io +memory`` enabled above each group);
      ``io.latency`` is refused at the kernel check (no Debian kernel has it).
    * ``[swap]``: a swap file of ``size`` on the data disk (so its IO goes
      through the same throttled disk), ``mkswap``/``swapon`` at boot and
      ``vm.page-cluster`` = ``page_cluster``. The emulator's swap area is a
      range of the device after the files; a swap file on ext4 is mapped
      once by ``swapon`` and then written and read in place, the same IO.
    * ``[inject]`` and ``handle_signals`` are refused; ``[machine] cpus`` and
      ``[costs]`` have no meaning in a guest and are ignored.
"""

from __future__ import annotations

import fnmatch

import attrs

from actors.block.blk_dev_model import KIND_DEFAULTS
from actors.block.blk_throttle import IO_MAX_KEYS
from actors.lab.config_types import ConfigError
from actors.lab.realkernel.guest import SWAP_FILE
from actors.schema import (
    OP_NAMES,
    ExperimentConfig,
    InjectConfig,
    Mmap,
    Mprotect,
    Munmap,
    ProcRead,
    Think,
    Touch,
    process_instance_names,
)

#: The probe's limits (probe.c's MAX_*).
MAX_PROCS, MAX_MAPS, MAX_THREADS, MAX_OPS = 64, 8, 16, 16
SUPPORTED_OPS = ("touch", "mmap", "munmap", "mprotect", "think", "proc_read")
#: Where the data disk's files live in the guest.
GUEST_DATA = "/data"
_PATTERNS = {"sequential": 0, "random": 1, "hotset": 2}
_ADVICE = {"normal": 0, "random": 1, "sequential": 2}
_PROC_FILES = {"cmdline": 0, "maps": 1, "mem": 2}


@attrs.frozen(kw_only=True)
class Scenario:
    """What the guest needs to run a config."""

    spec: str  # the probe's input
    files: dict[str, int]  # file name -> size in bytes, on the data disk (the swap file included)
    read_ahead_kb: int
    swap_bytes: int  # 0: no swap
    page_cluster: int
    iops: int  # qemu throttling.iops-total
    bps: int  # qemu throttling.bps-total
    horizon_ns: int
    processes: list[str]  # instance names, in spec order


def device_throttle(config: ExperimentConfig) -> tuple[int, int]:
    """The (IOPS, bytes/s) qemu limits the guest's disk to, from ``[device]`` and its kind's defaults."""
    device = config.device
    defaults = {key: value for key, (value, _source) in KIND_DEFAULTS[device.kind].items()}

    def get(key: str) -> int:
        value = getattr(device, key)
        return int(defaults[key] if value is None else value)

    service = get("latency")
    if device.kind == "hdd":
        service += (get("seek_min") + get("seek_max")) // 2 + 30_000_000_000 // get("rpm")  # half a revolution, ns
    return max(1, get("parallelism") * 1_000_000_000 // service), get("bandwidth")


def translate(config: ExperimentConfig) -> Scenario:
    """The ``Scenario`` of *config*; ``ConfigError`` lists every part the probe cannot run."""
    problems: list[str] = []

    def refuse(path: str, what: str) -> None:
        problems.append(f"{config.source}: {path}: {what}")

    if config.inject != InjectConfig():
        refuse("inject", "fault injection is not run on a real kernel; remove [inject]")
    files = {}
    for i, f in enumerate(config.files):
        if f.fs != "generic":
            refuse(f"files[{i}].fs", f'{f.fs!r} is not run on a real kernel; supported: "generic" (ext4 in the guest)')
        if f.cached:
            refuse(f"files[{i}].cached", "the guest's files start cold; supported: 0")
        if f.block_map != "extents":
            refuse(f"files[{i}].block_map", 'the guest\'s ext4 maps by extents; supported: "extents"')
        files[f.name] = f.size
    if config.swap.size:
        if SWAP_FILE in files:
            refuse("files", f"{SWAP_FILE!r} is the name of the guest's swap file; rename that file")
        files[SWAP_FILE] = config.swap.size
    readahead = sorted({m.read_ahead_kb for p in config.processes for m in p.mappings if m.file is not None})
    if len(readahead) > 1:
        refuse("processes", f"mappings ask different read_ahead_kb {readahead}; on a real kernel it is the disk's one setting")
    instances = [(p, name) for p in config.processes for name in process_instance_names(p)]
    names = [name for _p, name in instances]
    if len(instances) > MAX_PROCS:
        refuse("processes", f"{len(instances)} processes; the probe runs at most {MAX_PROCS}")
    lines = [f"horizon {config.horizon}", f"seed {config.seed}", "dev /sys/block/vda/dev"]
    for c in config.cgroups:
        body = "-"
        if c.io_max is not None and c.io_max.limited:
            body = " ".join(f"{key}={getattr(c.io_max, key)}" for key in IO_MAX_KEYS if getattr(c.io_max, key) is not None)
        lines.append(f"cgroup {c.path} {body}")
        if c.memory_max is not None or c.memory_high is not None:
            lines.append(f"memory {c.path} {-1 if c.memory_max is None else c.memory_max} {-1 if c.memory_high is None else c.memory_high}")
    for i, p in enumerate(config.processes):
        where = f"processes[{i}]"
        if len(p.mappings) > MAX_MAPS:
            refuse(f"{where}.mappings", f"{len(p.mappings)} mappings; the probe maps at most {MAX_MAPS}")
        if len(p.threads) > MAX_THREADS:
            refuse(f"{where}.threads", f"{len(p.threads)} threads; the probe runs at most {MAX_THREADS}")
        maps = {m.name: k for k, m in enumerate(p.mappings)}
        body = []
        for m in p.mappings:
            if m.file is None:  # anonymous: private and writable
                body.append(f"map - {m.size} 0 1 {_ADVICE[m.madvise]}")
            else:
                shared = True if m.shared is None else m.shared
                body.append(f"map {GUEST_DATA}/{m.file} {files.get(m.file, 0)} {int(shared)} {int(bool(m.writable))} {_ADVICE[m.madvise]}")
        for t_index, t in enumerate(p.threads):
            twhere = f"{where}.threads[{t_index}]"
            if t.handle_signals:
                refuse(f"{twhere}.handle_signals", "signal handlers are not run on a real kernel; supported: false")
            if len(t.program) > MAX_OPS:
                refuse(f"{twhere}.program", f"{len(t.program)} ops; the probe runs at most {MAX_OPS}")
            body.append(f"thread {t.name} {t.iterations} {t.every or 0} {t.start}")
            for o_index, op in enumerate(t.program):
                line = _op_line(op, maps, config, names, p, f"{twhere}.program[{o_index}]", refuse)
                if line is not None:
                    body.append(line)
        cgroup = p.cgroup or "-"
        for name in process_instance_names(p):
            lines.append(f"proc {name} {cgroup}")
            lines.extend(body)
    if problems:
        raise ConfigError(problems)
    iops, bps = device_throttle(config)
    return Scenario(
        spec="\n".join(lines) + "\n",
        files=files,
        read_ahead_kb=readahead[0] if readahead else 128,
        swap_bytes=config.swap.size,
        page_cluster=config.swap.page_cluster,
        iops=iops,
        bps=bps,
        horizon_ns=config.horizon,
        processes=names,
    )


def _op_line(op: object, maps: dict[str, int], config: ExperimentConfig, names: list[str], process: object, where: str, refuse) -> str | None:
    """The probe's ``op ...`` line for *op*, or ``None`` after refusing it."""
    if isinstance(op, Touch):
        return f"op touch {maps[op.mapping]} {_PATTERNS[op.pattern]} {op.pages} {int(op.write)} {op.hot_pages}"
    if isinstance(op, Think):
        return f"op think {op.time} {int(op.dist == 'exp')}"
    if isinstance(op, Mmap | Munmap):
        if op.mapping is not None:
            refuse(f"{where}.mapping", f"{OP_NAMES[type(op)]} of a named mapping is not run on a real kernel; supported: anonymous regions (no mapping)")
            return None
        return f"op mmap {op.length}" if isinstance(op, Mmap) else "op munmap"
    if isinstance(op, Mprotect):
        prot = {None: 0, "r": 1, "rw": 2}[op.prot]
        return f"op mprotect {maps[op.mapping] if op.mapping is not None else -1} {prot}"
    if isinstance(op, ProcRead):
        if op.target == "self":
            targets = [-1]
            target_processes = [process]
        else:
            targets = [k for k, name in enumerate(names) if fnmatch.fnmatchcase(name, op.target)]
            by_name = {name: p for p in config.processes for name in process_instance_names(p)}
            target_processes = [by_name[names[k]] for k in targets]
        if not targets:
            refuse(f"{where}.target", f"{op.target!r} matches no process")
            return None
        map_index = 0
        if op.file == "mem":
            indices = {next((k for k, m in enumerate(p.mappings) if m.name == op.target_mapping), None) for p in target_processes}
            if len(indices) != 1 or None in indices:
                refuse(f"{where}.target_mapping", f"{op.target_mapping!r} must be a mapping of every target, at the same position")
                return None
            map_index = indices.pop()
        return f"op proc_read {_PROC_FILES[op.file]} {map_index} {op.pages} {int(op.pattern == 'random')} {len(targets)} {' '.join(map(str, targets))}"
    refuse(f"{where}.op", f"{OP_NAMES.get(type(op), type(op).__name__)!r} is not run on a real kernel; supported: {', '.join(SUPPORTED_OPS)}")
    return None
