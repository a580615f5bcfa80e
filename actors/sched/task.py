"""``task_struct`` and the workload a task runs.

Each thread of the config is one ``TaskStruct`` running as one engine actor.
Kernel paths (a page fault, an mmap, a /proc read) run as coroutines inside
that actor, exactly as the kernel runs them in task context, and the task is
the explicit ``current`` they receive.

The workload program (``actors.schema`` ops) runs in "user space": it
touches pages (each access that finds no usable PTE enters
``do_page_fault``), makes system calls (``mmap``, ``munmap``, ``mprotect``,
reading ``/proc/<pid>/cmdline`` or ``maps``, direct IO) and thinks. After
every fault and system call the task returns to user space, where
``blkcg_maybe_throttle_current`` makes it pay io.latency's induced delay with
no lock held.

Accounting: every sleep is reported through ``account_sleep(kind, ns)``;
a sleep while the task holds any ``mmap_sem`` is the inversion's signature
and counts by kind: on IO as ``mmap_sem_held_across_io``, on io.latency
throttling as ``mmap_sem_held_across_throttle``, in the filesystem
(reservation tickets, transaction waits) as
``mmap_sem_held_across_fs_sleep``, each with an ``_ns`` total. One on IO while it holds a per-VMA lock (6.4+) counts as
``vma_lock_held_across_io``. Each fault
ends with one canonical ``fault_done`` record.

CPU time (``actors.sched.core``, ``[costs]``): a user page access costs
``access`` and a fault's entry/exit ``fault_entry``; a system call pays
``syscall`` for entry and exit outside any lock; under mmap_sem held for
write ``mmap`` pays ``vma_alloc``, ``munmap`` ``vma_free`` and
``pgtable_teardown``, each on top of the op's own ``hold``; a ``munmap``
that zapped PTEs and an ``mprotect`` to read-only then pay one
``tlb_shootdown`` per other CPU running the mm (``flush_tlb_mm_range``
sends an IPI to each and waits; with nothing mapped there is nothing to
flush); a /proc
read pays its ``cost`` (default ``proc_read``) under the target's sem.

Emulation notes:
    The pages that /proc/<pid>/cmdline reads
    (the target's stack) are taken as present, so that reader never faults;
    a ``/proc/<pid>/mem`` reader reads pages of a file mapping, which fault
    (through GUP, under the target's sem) unless resident: how much of the
    file is cached at the start is the file's ``cached`` key.
    SIGSEGV/SIGBUS kill the faulting thread only. Fatal signals are sent
    with ``send_sigkill`` and end killable waits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from actors.arch.fault import do_page_fault
from actors.block.bio import Bio
from actors.block.blkdev import blkcg_maybe_throttle_current, submit_bio
from actors.kernel_types import PAGE_SIZE, BlkStatus, FaultFlag, ReqFlag, ReqOp
from actors.mm.filemap import truncate_inode_pages
from actors.mm.anon import vma_is_anonymous, zap_anon_range
from actors.mm.gup import faultin_page, mm_populate
from actors.mm.memcontrol import mem_cgroup_handle_over_high
from actors.mm.mmap import (
    VmAreaStruct,
    VmFlag,
    down_read,
    down_write,
    up_read,
    up_write,
    vma_start_write,
)
from actors.mm.page import wake_fatal
from actors.sched.core import burst_limit, cpu_work, wakeup
from actors.schema import (
    OP_NAMES,
    Io,
    Mmap,
    Mprotect,
    Munmap,
    Populate,
    ProcRead,
    Think,
    ThreadConfig,
    Touch,
    Truncate,
)
from emu import WaitQueue
from emu.rng import randbelow_many

if TYPE_CHECKING:
    from actors.kernel import Kernel
    from actors.mm.mmap import MmStruct
    from emu import Actor

IO_SLEEPS = ("io", "throttle")
#: Sleep kind → the counter (and trace event) of such a sleep taken holding an mmap_sem;
#: each has an ``_ns`` total. ``fs``: filesystem waits (btrfs reservation tickets, a
#: reservation's jiffy during a commit, joining a committing transaction).
HELD_ACROSS = {
    "io": "mmap_sem_held_across_io",
    "throttle": "mmap_sem_held_across_throttle",
    "fs": "mmap_sem_held_across_fs_sleep",
}
#: Direct IO lands in the first 64 GiB of the device (``direct_io``).
DIO_SPAN_SECTORS = 64 * 1024**3 // 512


class TaskStruct:
    """``struct task_struct`` of one thread.

    Attributes:
        comm: unique name (``process.thread``), also the actor's name.
        thread: the thread's name in the config (latency keys use it).
        pid, tgid: thread and process ids.
        mm: the process's ``mm_struct`` (shared by its threads).
        blkcg: the cgroup path its IO is charged to.
        mmap_sem_held: ``(mm, "read"|"write")`` for every mmap_sem it holds.
        vma_locks_held: the VMAs whose per-VMA lock it holds for read.
    """

    def __init__(self, kernel: Kernel, comm: str, thread: str, pid: int, tgid: int, mm: MmStruct | None, blkcg: str) -> None:
        self.kernel = kernel
        self.comm = comm
        self.thread = thread
        self.pid = pid
        self.tgid = tgid
        self.mm = mm
        self.blkcg = blkcg
        self.actor: Actor = None  # type: ignore[assignment]  # set by Kernel.spawn_task
        self.mmap_sem_held: list[tuple[MmStruct, str]] = []
        #: VMAs it holds for read by their per-VMA lock (6.4+: a fault under ``lock_vma_under_rcu``).
        self.vma_locks_held: list[VmAreaStruct] = []
        self.killable_queue: WaitQueue | None = None
        self._dropped_vma: VmAreaStruct | None = None
        #: Invariant bookkeeping (``actors.invariants``): the handler running
        #: (``"fault"``/``"mkwrite"``, set by the Kernel's vm_ops wrappers), the
        #: current fault attempt's flags, where and on what the sem was last
        #: dropped, why a pending retry is suspect, and the op in flight.
        self.io_scope: str | None = None
        self.fault_flags = 0
        self.drop_scope: str | None = None
        self.drop_snapshot: tuple | None = None
        self.retry_suspect: tuple | None = None
        self.op_start: tuple[str, int] | None = None
        self.throttle_queue = None
        self.pending_sigkill = False
        self.killed_by: str | None = None
        self.sleep_ns = {"io": 0, "throttle": 0, "delay": 0, "fs": 0, "mmap_sem": 0}
        self.maj_flt = 0
        self.min_flt = 0
        #: CPU time accrued by paths that cannot sleep, paid at the next
        #: ``cpu_work`` (``actors.sched.core.charge``); ``current->plug``.
        self.cpu_debt = 0
        self.plug = None
        #: ``current->memcg_nr_pages_over_high`` and ``PF_MEMSTALL`` (``actors.mm.memcontrol``, ``actors.sched.psi``).
        self.memcg_nr_pages_over_high = 0
        self.memstall = False

    def __repr__(self) -> str:
        return f"<task {self.comm} pid={self.pid}>"

    @property
    def dropped_vma(self) -> VmAreaStruct | None:
        """The VMA a path looked up before it dropped the mmap_sem (stale until re-found), or ``None``."""
        return self._dropped_vma

    @dropped_vma.setter
    def dropped_vma(self, vma: VmAreaStruct | None) -> None:
        self._dropped_vma = vma
        if vma is not None:
            self.drop_scope = self.io_scope
            inode = vma.vm_file.f_mapping.host if vma.vm_file is not None else None
            self.drop_snapshot = None if inode is None else (inode, inode.truncate_seq, inode.error_seq)

    # -- signals and sleeps -------------------------------------------------------

    def fatal_signal_pending(self) -> bool:
        """``fatal_signal_pending(current)``."""
        return self.pending_sigkill

    def send_sigkill(self) -> None:
        """Deliver SIGKILL: end a killable wait now, fail later ones."""
        self.pending_sigkill = True
        if self.killable_queue is not None:
            wake_fatal(self.killable_queue, self)

    def account_sleep(self, kind: str, ns: int) -> None:
        """Record a sleep of *kind*; under an mmap_sem, IO, throttle and fs sleeps count as the inversion.

        Each kind has its own counter (``HELD_ACROSS``); an IO or throttle
        sleep on a suspect retry is also checked by ``retry_io_under_sem``.
        """
        self.sleep_ns[kind] += ns
        if kind in IO_SLEEPS and self.vma_locks_held:
            self.kernel.count("vma_lock_held_across_io")
            self.kernel.count("vma_lock_held_across_io_ns", ns)
        counter = HELD_ACROSS.get(kind)
        if counter is None or not self.mmap_sem_held:
            return
        kernel = self.kernel
        if kind in IO_SLEEPS and self.retry_suspect is not None and self.fault_flags & FaultFlag.TRIED and self.io_scope is not None:
            kernel.retry_io_under_sem(self, kind, ns)
        kernel.count(counter)
        kernel.count(f"{counter}_ns", ns)
        self.actor.log.info(counter, kind=kind, ns=ns, held=[f"{mm.owner}:{mode}" for mm, mode in self.mmap_sem_held])

    def sleep_totals(self) -> tuple[int, ...]:
        return tuple(self.sleep_ns.values())

    def account_fault(self, major: bool) -> None:
        """``current->maj_flt++`` or ``min_flt++`` (what ``getrusage`` and /proc/<pid>/stat report)."""
        if major:
            self.maj_flt += 1
        else:
            self.min_flt += 1

    def fault_done(self, start_ns: int, before: tuple[int, ...], **fields: object) -> None:
        """The canonical per-fault record, with the fault's waits broken down."""
        after = self.sleep_totals()
        waits = {f"{kind}_wait_ns": a - b for kind, a, b in zip(self.sleep_ns, after, before, strict=True)}
        signal = fields.pop("signal")
        self.actor.log.info(
            "fault_done",
            **fields,
            signal=None if signal is None else signal.name,
            latency_ns=self.actor.now_ns - start_ns,
            **waits,
        )


# -- the workload ------------------------------------------------------------------


class Workload:
    """Runs one thread's program in "user space" (see the module docstring)."""

    def __init__(self, current: TaskStruct, config: ThreadConfig) -> None:
        self.current = current
        self.config = config
        self.rng = current.actor.rng("workload")
        self.cursor: dict[str, int] = {}
        self.regions: list[VmAreaStruct] = []

    async def run(self) -> None:
        current, config = self.current, self.config
        actor = current.actor
        await actor.sleep(config.start)
        origin = actor.now_ns
        iteration = 0
        while config.iterations == 0 or iteration < config.iterations:
            intended = None
            if config.every is not None:
                intended = origin + iteration * config.every
                await actor.sleep_until(intended)
            for op in config.program:
                start = actor.now_ns if intended is None else intended
                intended = None
                if not isinstance(op, Think):
                    current.op_start = (OP_NAMES[type(op)], actor.now_ns)
                ok = await self.run_op(op)
                current.op_start = None
                if not isinstance(op, Think):
                    current.kernel.record_latency(current.thread, OP_NAMES[type(op)], actor.now_ns - start)
                if current.fatal_signal_pending():  # SIGKILL: the thread dies on its way back to user space
                    current.killed_by = current.killed_by or "SIGKILL"
                    return
                if not ok:
                    return
            iteration += 1

    async def run_op(self, op: object) -> bool:
        """Run one op; ``False`` if the thread died (a fatal fault signal)."""
        current = self.current
        if isinstance(op, Touch):
            return await self.touch(op)
        if isinstance(op, Think):
            ns = op.time if op.dist == "fixed" else _exponential(self.rng, op.time)
            await current.actor.sleep(ns)
            return True
        if isinstance(op, ProcRead):
            await proc_read(current, op, lambda op, vma: self._pages(op, vma, key=f"mem:{vma.vm_mm.owner}:{vma.name}"))
        elif isinstance(op, Mmap | Munmap | Mprotect):
            await self.vma_op(op)
        elif isinstance(op, Truncate):
            await truncate(current, op)
        elif isinstance(op, Io):
            await direct_io(current, op)
        elif isinstance(op, Populate):
            vma = current.kernel.mapping_vma(current.mm, op.mapping)
            if vma is not None:
                await mm_populate(current, vma.vm_start, vma.vm_end - vma.vm_start)
        await return_to_user(current)
        return True

    def _pages(self, op: Touch | ProcRead, vma: VmAreaStruct, key: str | None = None) -> list[int]:
        """The pages *op* accesses in *vma*, by its pattern; a sequential one goes on from where ``key`` stopped."""
        size = vma.vm_end - vma.vm_start
        key = vma.name if key is None else key
        if op.pattern == "sequential":
            first = self.cursor.get(key, 0)
            self.cursor[key] = (first + op.pages) % size
            return [vma.vm_start + (first + i) % size for i in range(op.pages)]
        span = size if op.pattern == "random" else min(op.hot_pages, size)
        start = vma.vm_start
        return [start + r for r in randbelow_many(self.rng, span, op.pages)]

    async def touch(self, op: Touch) -> bool:
        """User accesses to pages of a mapping; each unusable PTE means a fault.

        A run of accesses whose PTEs are usable when it starts is one CPU
        burst of ``access`` each, cut at ``burst_limit`` (the scheduler's
        minimum granularity): what each access costs is unchanged, but a
        PTE zapped during the burst (reclaim, a racing munmap) is seen only
        by the next run, at most one granularity late.
        """
        current = self.current
        mm = current.mm
        vma = current.kernel.mapping_vma(current.mm, op.mapping)
        if vma is None:
            # unmapped by a racing munmap: the access faults on no VMA, SIGSEGV (bad_area)
            await cpu_work(current, "access", "fault_entry")
            current.kernel.count("sigsegv_delivered")
            current.actor.log.info("signal_deliver", sig="SIGSEGV", address=None)
            if self.config.handle_signals:
                return True
            current.killed_by = "SIGSEGV"
            return False
        addresses = self._pages(op, vma)
        limit = burst_limit(current, "access")
        i = 0
        while i < len(addresses):
            run = mm.ptes.resident_run(addresses, i, op.write, limit)
            if run:  # accesses that need no fault: one burst for the run, no engine step per page
                await cpu_work(current, "access", n=run)
                i += run
                continue
            address = addresses[i]
            i += 1
            await cpu_work(current, "access")
            while True:
                if address in mm.ptes and (not op.write or mm.ptes.pte_write(address)):
                    break
                await cpu_work(current, "fault_entry")
                outcome = await do_page_fault(current, address, op.write)
                await return_to_user(current)
                if outcome.signal is not None:
                    current.killed_by = outcome.signal.name
                    current.kernel.count(f"{outcome.signal.name.lower()}_delivered")
                    current.actor.log.info("signal_deliver", sig=outcome.signal.name, address=address)
                    if self.config.handle_signals and not current.fatal_signal_pending():
                        current.killed_by = None  # the handler returns to the program, which skips this op
                        return True
                    return False
                if current.fatal_signal_pending():
                    return False
        return True

    async def vma_op(self, op: Mmap | Munmap | Mprotect) -> None:
        """``mmap``/``munmap``/``mprotect``: mmap_sem for write (killable) around the VMA change.

        With per-VMA locks (6.4+) each VMA changed is write-locked first, as
        the kernel does: the new VMA in ``mmap_region`` ("lock the VMA since
        it is modified after insertion", 6.4; ad9f006351c3, 6.6, before
        inserting it), each VMA ``do_vmi_align_munmap`` detaches, and the VMA
        ``mprotect_fixup`` changes. A writer thus waits for the faults that
        hold that VMA's lock; ``up_write`` unlocks them all.
        """
        current = self.current
        mm = current.mm
        kernel = current.kernel
        await cpu_work(current, "syscall")
        if await down_write(current, mm, killable=True):
            return
        work: tuple[str, ...] = ()
        shootdown = False
        if isinstance(op, Mmap) and op.mapping is not None:
            vma = kernel.remap(current, op.mapping)
            if vma is not None:
                await vma_start_write(current, vma)
            work = ("vma_alloc",)
        elif isinstance(op, Mmap):
            vma = mm.insert_vma(-(-op.length // 4096), VmFlag.READ | VmFlag.WRITE, None, f"anon.{current.comm}")
            await vma_start_write(current, vma)
            self.regions.append(vma)
            work = ("vma_alloc",)
        elif isinstance(op, Munmap):
            vma = kernel.mapping_vma(current.mm, op.mapping) if op.mapping else (self.regions.pop() if self.regions else None)
            if vma is not None:
                await vma_start_write(current, vma)
                kernel.vma_modified(current, vma, "munmap")
                if vma_is_anonymous(vma):
                    zap_anon_range(current, vma)
                work, shootdown = ("vma_free", "pgtable_teardown"), mm.remove_vma(vma) > 0
        elif isinstance(op, Mprotect) and op.prot is not None:
            vma = kernel.mapping_vma(current.mm, op.mapping)
            if vma is not None:
                await vma_start_write(current, vma)
                kernel.vma_modified(current, vma, "mprotect")
                mm.mprotect_vma(vma, write=op.prot == "rw")
                shootdown = op.prot == "r"
        await cpu_work(current, *work, extra_ns=op.hold)
        if shootdown:
            # flush_tlb_mm_range(): an IPI to each other CPU in mm_cpumask, waited for
            await cpu_work(current, "tlb_shootdown", n=current.kernel.other_cpus(current))
        up_write(current, mm)


async def truncate(current: TaskStruct, op: Truncate) -> None:
    """``ftruncate()`` down to ``op.size`` and, with ``extend``, back up after ``hold``.

    No mmap_sem: truncation serialises on the page locks (and i_rwsem,
    which nothing else here takes), which is why it races with a fault
    whose sem is dropped.
    """
    inode = current.kernel.inodes[op.file]
    size = current.kernel.file_size(op.file)
    await truncate_inode_pages(current, inode, op.size)
    if op.extend:
        await current.actor.sleep(op.hold)
        inode.i_size = size  # truncate_setsize() upwards: no pages to drop


async def return_to_user(current: TaskStruct) -> None:
    """``exit_to_usermode_loop`` → ``tracehook_notify_resume`` (v4.19), holding no lock.

    First ``mem_cgroup_handle_over_high`` (reclaim, and from 5.4 the
    penalty sleep, for charges that went over memory.high), then io.latency's
    induced delay (``blkcg_maybe_throttle_current``).
    """
    if current.mmap_sem_held or current.vma_locks_held:
        raise AssertionError(f"{current.comm} returns to user space holding {current.mmap_sem_held or current.vma_locks_held}")
    if current.memcg_nr_pages_over_high:
        await mem_cgroup_handle_over_high(current)
    await blkcg_maybe_throttle_current(current)


async def proc_read(current: TaskStruct, op: ProcRead, pages: Callable[[ProcRead, VmAreaStruct], list[int]]) -> None:
    """``proc_pid_cmdline_read``/``show_map``/``mem_rw``: read a process's mm under its mmap_sem.

    Mirrors fs/proc/base.c and fs/proc/task_mmu.c at v4.19: ``access_remote_vm``
    takes ``down_read(&mm->mmap_sem)`` (not killable in 4.19) and faults, if
    it must, through GUP without ALLOW_RETRY; ``maps`` holds the sem across
    the seq_file chunk and walks every VMA. ``mem`` reads the pages *pages*
    picks from the target's mapping ``target_mapping`` (``mem_rw``). The
    target ``"self"`` is the reader's own process (``/proc/self``).
    """
    await cpu_work(current, "syscall")
    kernel = current.kernel
    targets = [current.mm] if op.target == "self" else kernel.mms_matching(op.target)
    cost = kernel.sched.costs["proc_read"] if op.cost is None else op.cost
    for mm in targets:
        if op.file == "mem":
            vma = kernel.mapping_vma(mm, op.target_mapping)
            if vma is not None:  # the addresses user space took from maps
                await mem_rw(current, mm, pages(op, vma), cost)
            continue
        await down_read(current, mm)
        n = 1 if op.file == "cmdline" else max(1, len(mm.vmas))
        await cpu_work(current, extra_ns=cost * n)
        up_read(current, mm)


async def mem_rw(current: TaskStruct, mm: MmStruct, addresses: list[int], cost: int) -> None:
    """Mirror of ``mem_rw()`` (fs/proc/base.c, v4.19-v6.1): one ``access_remote_vm`` per page.

    ``__access_remote_vm`` (mm/memory.c) takes the target's sem for read and
    calls ``get_user_pages_remote(..., locked = NULL)``: an absent page is
    faulted in with no ``FAULT_FLAG_ALLOW_RETRY``, so the fault does its IO
    and waits for it *holding the target's sem*, under every kernel version
    (per-VMA locks do not apply: GUP takes the mm-wide lock). A page no VMA
    covers any more ends the read (``-EIO`` to user space, counted
    ``proc_mem_eio``). Each page copied costs *cost*.

    Emulation notes:
        5.x takes the sem with ``mmap_read_lock_killable``; the 4.19
        uninterruptible ``down_read`` is used for every version (it differs
        only when a fatal signal arrives during the wait).
    """
    kernel = current.kernel
    for address in addresses:
        await down_read(current, mm)
        vma = mm.find_vma(address)
        if vma is None or vma.vm_start > address:
            up_read(current, mm)
            kernel.count("proc_mem_eio")
            return
        if address not in mm.ptes:
            kernel.count("proc_mem_faults")
            if await faultin_page(current, vma, address, None, remote=True):
                up_read(current, mm)
                kernel.count("proc_mem_eio")
                return
        await cpu_work(current, extra_ns=cost)
        up_read(current, mm)


async def direct_io(current: TaskStruct, op: Io) -> None:
    """An O_DIRECT read or write: one bio from the task's cgroup, waited for.

    It lands at a 4 KiB-aligned sector drawn uniformly from the first
    ``DIO_SPAN_SECTORS`` of the device (the service's own file, not modelled).
    The bio covers whole pages but carries none: the user buffer's pages are
    not modelled, only their size.
    """
    kernel = current.kernel
    done = WaitQueue(current.actor.engine, f"dio {current.comm}")
    state = {"done": False}

    def end_io(bio: Bio) -> None:
        state["done"] = True
        done.wake(current.comm)

    bio = Bio(
        bio_id=kernel.next_bio_id(),
        op=ReqOp.WRITE if op.write else ReqOp.READ,
        flags=ReqFlag.SYNC,
        nr_bytes=-(-op.size // PAGE_SIZE) * PAGE_SIZE,
        blkcg=current.blkcg,
        submitter=current.comm,
        bi_end_io=end_io,
        bi_disk=kernel.bdev,
        sector=current.actor.rng("dio").randrange(DIO_SPAN_SECTORS // 8) * 8,
    )
    await cpu_work(current, "syscall")
    await submit_bio(current, bio)
    if not state["done"]:
        start = current.actor.now_ns
        await done.wait(current.actor, current.comm)
        await wakeup(current)
        current.account_sleep("io", current.actor.now_ns - start)
    if bio.status != BlkStatus.OK:
        kernel.count("dio_errors")


def _exponential(rng, mean_ns: int) -> int:
    """An exponential draw with mean *mean_ns*, from 53 random bits."""
    u = (rng.getrandbits(53) + 1) / (1 << 53)
    return int(-math.log(u) * mean_ns)

