"""The emulated machine: one kernel built from a config and a policy.

``Kernel`` is the world object every path reaches through ``current.kernel``
(the emulator has no globals): the policy, the block device with its
io.latency state, the filesystems, the writeback flusher, the processes with
their mms and VMAs, and the run's counters and latency samples. It is the
only module that wires subsystems together; they do not import each other's
actors.

Placement: files lie one after another on the device from 1 MiB in, each
on a 1 MiB boundary, contiguous (with its indirect blocks inline for
``block_map = "indirect"``), so a disk sees the seeks a fresh filesystem
would give.

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
from actors.block.blk_dev_model import device_params
from actors.block.blkdev import BlockDevice, blk_throtl_dispatch_work_fn
from actors.fs.btrfs import BtrfsFs
from actors.fs.generic import GenericFs
from actors.inject import Injector
from actors.invariants import check_lock_seq_advanced, check_rwsem_acquire, check_vma_modify
from actors.kernel_types import PAGE_SIZE, PageFlag
from actors.locking.rwsem import RwsemSemantics
from actors.fs.generic import layout_bytes
from actors.mm.filemap import File, Inode, cached_fraction_fill
from actors.mm.memcontrol import MemControl
from actors.mm.memory import VmOperations
from actors.mm.mmap import MmStruct, VmAreaStruct, VmFlag
from actors.mm.page import Page
from actors.mm.page_writeback import Writeback
from actors.mm.swap import SwapInfo
from actors.policy import Policy
from actors.sched.core import Scheduler
from actors.sched.psi import Psi
from actors.sched.task import TaskStruct, Workload
from actors.schema import ExperimentConfig, apply_swarm, process_instance_names
from emu import Engine

#: Where the first file starts on the device (1 MiB in, past the superblock and group descriptors).
FIRST_FILE_SECTOR = 2048
#: Files are laid out one after another on the device, each starting on a 1 MiB boundary.
LAYOUT_ALIGN = 1024 * 1024

_MADVISE = {"normal": 0, "random": VmFlag.RAND_READ, "sequential": VmFlag.SEQ_READ}


class Kernel:
    """The machine of one run: built by ``Kernel(engine, config, policy)``."""

    def __init__(self, engine: Engine, config: ExperimentConfig, policy: Policy) -> None:
        config = apply_swarm(config)
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
        self._mappings: dict[tuple[str, str], tuple[Any, File]] = {}
        self._file_sizes = {file.name: file.size for file in config.files}
        #: Pages dirtied and not yet written back (``dirty_data_lost``), by id.
        self.dirtied: dict[int, Any] = {}
        self.inject = inject = Injector(self, config.inject)
        device = config.device
        self.sched = Scheduler(engine, config.machine, config.costs)
        self.bdev = BlockDevice(
            engine,
            name=device.name,
            dev=device.dev,
            nr_requests=device.nr_requests,
            params=device_params(device),  # jitter at most 990 permille: config_check bounds jitter_pct
            io_latency={c.path: format_io_latency(device.dev, c.io_latency) for c in config.cgroups if c.io_latency},
            io_max={c.path: c.io_max for c in config.cgroups if c.io_max is not None},
            bio_error=inject.bio_error_hook(),
            iolatency=policy.iolatency,
        )
        if self.bdev.throtl.active:
            self.spawn_kthread("kthrotld", lambda current: blk_throtl_dispatch_work_fn(current, self.bdev))
        self.writeback = Writeback(
            self,
            config.writeback,
            cgroup_writeback=config.machine.cgroup_writeback,
            memcg_dirty_limits={c.path: c.dirty_limit_pages for c in config.cgroups if c.dirty_limit_pages},
        )
        self._track_dirty()
        self.filesystems = {
            "generic": GenericFs(self),
            "btrfs": BtrfsFs(self, config.btrfs, reserve_fail=inject.reserve_fail_hook()),
        }
        for fs in self.filesystems.values():
            ops = fs.vm_ops  # mark which handler runs, for io_under_mmap_sem_on_retry
            fs.vm_ops = VmOperations(fault=_scoped(ops.fault, "fault"), page_mkwrite=_scoped(ops.page_mkwrite, "mkwrite"))
        self.inodes: dict[str, Inode] = {}
        sector = FIRST_FILE_SECTOR
        for ino, file in enumerate(config.files, start=1):
            inode = Inode(ino, file.name, file.size, self.filesystems[file.fs])
            inode.start_sector = sector
            inode.block_map = file.block_map
            sector += -(-layout_bytes(file) // LAYOUT_ALIGN) * LAYOUT_ALIGN // 512
            self.inodes[file.name] = inode
            nr_cached = int(inode.nr_pages * file.cached)
            if nr_cached:
                rng = engine.streams.get("setup", f"cached:{file.name}")
                cached_fraction_fill(inode, sorted(rng.sample(range(inode.nr_pages), nr_cached)))
        #: The swap partition, after the files (``[swap]``; ``None`` without one).
        self.swap = SwapInfo(sector, config.swap.size // PAGE_SIZE, config.swap.page_cluster) if config.swap.size >= 2 * PAGE_SIZE else None
        self.memcg = MemControl(config.cgroups)
        self.psi = Psi(
            [c.path for c in config.cgroups],
            [p.cgroup for p in config.processes for _name in process_instance_names(p) for _t in p.threads],
        )
        #: The shared zero page anonymous read faults map (``ZERO_PAGE``).
        self.zero_page = Page(None, 0)
        self.zero_page.flags = PageFlag.UPTODATE
        #: Each process's cgroup: its mm's memcg (``mm->owner``'s).
        self.mm_cgroup: dict[str, str] = {}
        semantics = RwsemSemantics(policy.rwsem)
        for process in config.processes:
            for name in process_instance_names(process):
                self._build_process(process, name, semantics)
        if config.inject.sigkill_every:
            inject.start_sigkill()

    def _build_process(self, process, name: str, semantics: RwsemSemantics) -> None:
        tgid = self._next_pid()
        mm = MmStruct(self.engine, name, tgid, semantics, per_vma_lock=self.policy.per_vma_lock != "off")
        self.mms[name] = mm
        self.mm_cgroup[name] = process.cgroup
        for spec in process.mappings:
            if spec.file is None:
                self._mappings[(name, spec.name)] = (spec, None)
                self.vmas[(name, spec.name)] = mm.insert_vma(-(-spec.size // PAGE_SIZE), _vm_flags(spec), None, spec.name)
                continue
            inode = self.inodes[spec.file]
            file = File(inode, f"{name}:{spec.file}", spec.read_ahead_kb * 1024 // PAGE_SIZE)
            self._mappings[(name, spec.name)] = (spec, file)
            self.vmas[(name, spec.name)] = mm.insert_vma(inode.nr_pages, _vm_flags(spec), file, spec.name)
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

    def remap(self, current: TaskStruct, name: str) -> VmAreaStruct | None:
        """``mmap()`` the process's file mapping *name* again if it is unmapped (at a new address)."""
        if self.mapping_vma(current.mm, name) is not None:
            return None
        spec, file = self._mappings[(current.mm.owner, name)]
        nr_pages = -(-(spec.size if file is None else self._file_sizes[spec.file]) // PAGE_SIZE)
        vma = current.mm.insert_vma(nr_pages, _vm_flags(spec), file, spec.name)
        self.vmas[(current.mm.owner, name)] = vma
        return vma

    def file_size(self, name: str) -> int:
        """The configured size of file *name* (what truncate-then-extend grows it back to)."""
        return self._file_sizes[name]

    def count(self, name: str, n: int = 1) -> None:
        """Add to a run counter (results.json ``counters``)."""
        self.counters[name] += n

    def violation(self, invariant: str, **seen: Any) -> None:
        """Record a broken invariant (see ``actors.invariants``) at the current time and trace position."""
        self.violations.append({"invariant": invariant, "ts": self.engine.now_ns, "event": self.engine.trace.count, **seen})

    # -- invariant hooks (cheap; see actors.invariants) ---------------------------------

    def rwsem_acquired(self, current: TaskStruct, mm: MmStruct, mode: str, queued_ns: int | None) -> None:
        """After *current* took *mm*'s mmap_sem: the rwsem invariants."""
        self.invariant_checks += 1
        for name, fields in check_rwsem_acquire(mm.mmap_sem, current.comm, mode, queued_ns):
            self.violation(name, task=current.comm, mm=mm.owner, mode=mode, **fields)

    def vma_modified(self, current: TaskStruct, vma: VmAreaStruct, what: str) -> None:
        """A writer is about to change *vma* (per-VMA locks only): no reader may hold it, and it must be write-locked."""
        if not vma.vm_mm.per_vma_lock:
            return
        self.invariant_checks += 1
        for name, fields in check_vma_modify(vma.vm_lock):
            self.violation(name, task=current.comm, vma=vma.name, what=what, **fields)

    def lock_seq_advanced(self, current: TaskStruct, lock: str, which: str, before: int, after: int) -> None:
        """``mm_lock_seq`` or a ``vm_lock_seq`` changed from *before* to *after*: it must have grown."""
        self.invariant_checks += 1
        for name, fields in check_lock_seq_advanced(which, before, after):
            self.violation(name, task=current.comm, lock=lock, **fields)

    def vma_use(self, current: TaskStruct, vma: VmAreaStruct, where: str) -> None:
        """A fault path is about to use *vma*: it must not be the one looked up before a drop."""
        self.invariant_checks += 1
        if vma is current.dropped_vma:
            self.violation("dropped_means_dropped", task=current.comm, vma=vma.name, where=where, cause="used_after_drop")
        elif vma.freed:
            self.violation("dropped_means_dropped", task=current.comm, vma=vma.name, where=where, cause="used_after_unmap")

    def note_retry(self, current: TaskStruct, address: int) -> None:
        """An attempt returned RETRY after dropping the sem: will the retry have to do IO under it?

        Suspect (the retry's IO under the sem is then ``io_under_mmap_sem_on_retry``) when
        ``->fault`` dropped for IO and returned before the page was uptodate (docs/DESIGN.md
        D2), or V3's ``->page_mkwrite`` dropped (the retry redoes it: D7, B19).
        """
        vma = current.dropped_vma
        snapshot = current.drop_snapshot
        cause = None
        if snapshot is None:
            return
        if current.drop_scope == "fault" and self.policy.filemap_fault in ("v3", "v5.1"):
            page = vma.vm_file.f_mapping.pages.get(address - vma.vm_start + vma.vm_pgoff)
            if page is None or not page.flags & PageFlag.UPTODATE:
                cause = "retry_before_uptodate"
        elif current.drop_scope == "mkwrite" and self.policy.page_mkwrite == "v3-btrfs":
            cause = "mkwrite_redone_under_sem"
        current.retry_suspect = None if cause is None else (cause, current.drop_scope, *snapshot)

    def retry_io_under_sem(self, current: TaskStruct, kind: str, ns: int) -> None:
        """*current*, on a retried attempt with a suspect retry, slept on IO holding the sem."""
        cause, scope, inode, truncate_seq, error_seq = current.retry_suspect
        if scope != current.io_scope:
            return
        current.retry_suspect = None  # one report per fault
        if inode.truncate_seq != truncate_seq or inode.error_seq != error_seq:
            self.count("retry_io_after_truncate_or_error")  # the page went away: not the policy's doing
            return
        self.violation("io_under_mmap_sem_on_retry", task=current.comm, cause=cause, scope=scope, kind=kind, ns=ns)

    def _track_dirty(self) -> None:
        """Follow every page dirtied until written back, for ``dirty_data_lost``."""
        writeback = self.writeback
        set_page_dirty = writeback.set_page_dirty
        dirtied = self.dirtied

        def tracked_set_page_dirty(page) -> bool:
            newly = set_page_dirty(page)
            if page.mapping is not None:
                dirtied[id(page)] = page
            return newly

        def written(bio) -> None:
            if bio.status:
                return
            for page in bio.pages:
                if not page.flags & (PageFlag.DIRTY | PageFlag.WRITEBACK):
                    dirtied.pop(id(page), None)

        writeback.set_page_dirty = tracked_set_page_dirty
        writeback.completion_hooks.append(written)

    def other_cpus(self, current: TaskStruct) -> int:
        """CPUs other than *current*'s that run its mm (a TLB shootdown IPIs each): its other live threads."""
        others = sum(1 for task in self.tasks if task.mm is current.mm and task is not current and not task.killed_by)
        return min(others, self.sched.cpus - 1) if self.sched.cpus else others

    def count_vm_event(self, name: str, current: TaskStruct) -> None:
        """``count_vm_event()`` (and the memcg twin): a named event counter."""
        self.counters[name.lower()] += 1

    def next_bio_id(self) -> int:
        self._bio_id += 1
        return self._bio_id

    def record_latency(self, task: str, op: str, ns: int) -> None:
        """One latency sample of ``<task>/<op>``."""
        self.latency.setdefault((task, op), []).append(ns)

    def mapping_vma(self, mm: MmStruct, name: str) -> VmAreaStruct | None:
        """The VMA of mapping *name* in *mm*'s process, ``None`` once unmapped."""
        vma = self.vmas.get((mm.owner, name))
        return None if vma is None or vma.freed else vma

    def mms_matching(self, pattern: str) -> list[MmStruct]:
        """The mms of processes whose names match *pattern*, in config order."""
        return [mm for name, mm in self.mms.items() if fnmatch.fnmatchcase(name, pattern)]

    @property
    def page_size(self) -> int:
        return PAGE_SIZE


def _vm_flags(spec) -> int:
    """A mapping's ``VM_*``: a file mapping is shared and read-only unless it says otherwise, an anonymous one private and writable."""
    flags = VmFlag.READ | _MADVISE[spec.madvise]
    anon = spec.file is None
    if spec.shared if spec.shared is not None else not anon:
        flags |= VmFlag.SHARED
    if spec.writable if spec.writable is not None else anon:
        flags |= VmFlag.WRITE | VmFlag.MAYWRITE
    return flags


def _scoped(handler: Callable[[TaskStruct, Any], Coroutine[Any, Any, Any]], scope: str):
    """*handler* (``vm_ops->fault``/``->page_mkwrite``) with ``current.io_scope`` set while it runs."""

    async def scoped(current: TaskStruct, vmf: Any) -> Any:
        outer = current.io_scope
        current.io_scope = scope
        try:
            return await handler(current, vmf)
        finally:
            current.io_scope = outer

    return scoped
