"""The emulated machine: one kernel built from a config and a policy.

``Kernel`` is the world object every path reaches through ``current.kernel``
(the emulator has no globals): the policy, the block device with its
io.latency state, the filesystems, the writeback flusher, the processes with
their mms and VMAs, and the run's counters and latency samples. It is the
only module that wires subsystems together; they do not import each other's
actors.

Start-up order (which is also the order actors start at t=0): the block
device, the flusher, then every thread of every process in config order.
Process replicas (``count = 3``) are named ``name0..name2``; a thread's actor
and ``comm`` is ``process.thread``.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

from actors.block.blk_cgroup import format_io_latency
from actors.block.blkdev import BlockDevice
from actors.config import ExperimentConfig, process_instance_names
from actors.fs.btrfs import BtrfsFs
from actors.fs.generic import GenericFs
from actors.kernel_types import PAGE_SIZE
from actors.locking.rwsem import RwsemSemantics
from actors.mm.filemap import File, Inode, cached_fraction_fill
from actors.mm.mmap import MmStruct, VmAreaStruct, VmFlag
from actors.mm.page_writeback import Writeback
from actors.policy import Policy
from actors.sched.task import TaskStruct, Workload
from emu import Engine

_MADVISE = {"normal": VmFlag(0), "random": VmFlag.RAND_READ, "sequential": VmFlag.SEQ_READ}


class Kernel:
    """The machine of one run: built by ``Kernel(engine, config, policy)``."""

    def __init__(self, engine: Engine, config: ExperimentConfig, policy: Policy) -> None:
        self.engine = engine
        self.config = config
        self.policy = policy
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.violations: list[dict[str, Any]] = []
        self.invariant_checks = 0
        self.latency: dict[tuple[str, str], list[int]] = {}
        self._bio_id = 0
        self._pid = 100
        self.tasks: list[TaskStruct] = []
        self.mms: dict[str, MmStruct] = {}
        self.vmas: dict[tuple[str, str], VmAreaStruct] = {}
        device = config.device
        self.bdev = BlockDevice(
            engine,
            name=device.name,
            dev=device.dev,
            nr_requests=device.nr_requests,
            rotational=device.rotational,
            base_latency_ns=device.latency,
            bandwidth_bytes_per_s=device.bandwidth,
            jitter_permille=min(999, device.jitter_pct * 10),
            io_latency={c.path: format_io_latency(device.dev, c.io_latency) for c in config.cgroups if c.io_latency},
        )
        self.writeback = Writeback(self, config.writeback)
        self.filesystems = {"generic": GenericFs(self), "btrfs": BtrfsFs(self, config.btrfs)}
        self.inodes: dict[str, Inode] = {}
        for ino, file in enumerate(config.files, start=1):
            inode = Inode(ino, file.name, file.size, self.filesystems[file.fs])
            self.inodes[file.name] = inode
            nr_cached = int(inode.nr_pages * file.cached)
            if nr_cached:
                rng = engine.streams.get("setup", f"cached:{file.name}")
                cached_fraction_fill(inode, sorted(rng.sample(range(inode.nr_pages), nr_cached)))
        semantics = RwsemSemantics(policy.rwsem)
        for process in config.processes:
            for name in process_instance_names(process):
                self._build_process(process, name, semantics)

    def _build_process(self, process, name: str, semantics: RwsemSemantics) -> None:
        tgid = self._next_pid()
        mm = MmStruct(self.engine, name, tgid, semantics)
        self.mms[name] = mm
        for spec in process.mappings:
            inode = self.inodes[spec.file]
            file = File(inode, f"{name}:{spec.file}", spec.read_ahead_kb * 1024 // PAGE_SIZE)
            flags = VmFlag.READ | _MADVISE[spec.madvise]
            if spec.shared:
                flags |= VmFlag.SHARED
            if spec.writable:
                flags |= VmFlag.WRITE | VmFlag.MAYWRITE
            self.vmas[(name, spec.name)] = mm.insert_vma(inode.nr_pages, flags, file, spec.name)
        for i, thread in enumerate(process.threads):
            pid = tgid if i == 0 else self._next_pid()
            task = TaskStruct(self, f"{name}.{thread.name}", thread.name, pid, tgid, mm, process.cgroup)
            self.spawn_task(task, lambda current, thread=thread: Workload(current, thread).run())

    def _next_pid(self) -> int:
        self._pid += 1
        return self._pid

    # -- services for paths ---------------------------------------------------------

    def spawn_task(self, task: TaskStruct, fn: Callable[[TaskStruct], Coroutine[Any, Any, None]], *, daemon: bool = False) -> TaskStruct:
        """Run ``fn(task)`` as the actor of *task*."""

        async def main(actor) -> None:
            await fn(task)

        task.actor = self.engine.spawn(task.comm, main, daemon=daemon)
        self.tasks.append(task)
        return task

    def spawn_kthread(self, name: str, fn: Callable[[TaskStruct], Coroutine[Any, Any, None]]) -> TaskStruct:
        """A kernel thread (no mm, root cgroup) that does not keep the run alive."""
        return self.spawn_task(TaskStruct(self, name, name, self._next_pid(), 0, None, ""), fn, daemon=True)

    def count(self, name: str, n: int = 1) -> None:
        """Add to a run counter (results.json ``counters``)."""
        self.counters[name] += n

    def violation(self, invariant: str, **seen: Any) -> None:
        """Record a broken invariant (see ``actors.invariants``) at the current time."""
        self.violations.append({"invariant": invariant, "ts": self.engine.now_ns, **seen})

    def count_vm_event(self, name: str, current: TaskStruct) -> None:
        """``count_vm_event()`` (and the memcg twin): a named event counter."""
        self.counters[name.lower()] += 1

    def next_bio_id(self) -> int:
        self._bio_id += 1
        return self._bio_id

    def record_latency(self, task: str, op: str, ns: int) -> None:
        """One latency sample of ``<task>/<op>``."""
        self.latency.setdefault((task, op), []).append(ns)

    def mapping_vma(self, current: TaskStruct, name: str) -> VmAreaStruct | None:
        """The VMA of mapping *name* in *current*'s process, ``None`` once unmapped."""
        vma = self.vmas.get((current.mm.owner, name))
        return None if vma is None or vma.freed else vma

    def mms_matching(self, pattern: str) -> list[MmStruct]:
        """The mms of processes whose names match *pattern*, in config order."""
        return [mm for name, mm in self.mms.items() if fnmatch.fnmatchcase(name, pattern)]

    @property
    def page_size(self) -> int:
        return PAGE_SIZE
