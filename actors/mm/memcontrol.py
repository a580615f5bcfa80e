"""The memory controller: charges, ``memory.max``, ``memory.high``, and the memcg OOM.

Mirrors mm/memcontrol.c (cgroup v2 interface) at v4.19, with the 5.4/5.7
memory.high penalty behind the policy switch ``memcg_high_delay``:

* ``try_charge`` (v4.19): charge the page counter of the memcg and every
  ancestor; when one is at its ``memory.max`` (``mem_over_limit``), the
  charging task reclaims from it (``try_to_free_mem_cgroup_pages``, in
  ``actors.mm.vmscan``) and tries again: at once if there is room now,
  again while reclaim made progress on a small charge, at most
  ``MEM_CGROUP_RECLAIM_RETRIES`` more times otherwise, then the OOM.
  ``__GFP_NORETRY`` (readahead's ``readahead_gfp_mask``) gives up after one
  reclaim pass: the readahead page is dropped, not read. A task with a
  fatal signal pending is let through over the limit (``force``). A
  charge that leaves a group above ``memory.high`` records the pages
  (``current->memcg_nr_pages_over_high``) for the return to user.
* ``mem_cgroup_handle_over_high`` (at return to user, v4.19): reclaim each
  group above ``memory.high`` (``reclaim_high``); from 5.4 (0e4b01df8659,
  ancestors' overage from 5.7, e26733e0d0ec) the task then sleeps
  ``calculate_high_delay``: ``overage**2 * HZ >> 34`` jiffies (overage is
  ``(usage - high) / high`` in 20-bit fixed point), scaled by the task's
  own pages over ``MEMCG_CHARGE_BATCH``, at most 2 s, none below 10 ms.
* ``mem_cgroup_oom`` in fault context ends in ``pagefault_out_of_memory``
  and the OOM killer.

Emulation notes:
    No per-CPU charge stock (the kernel precharges ``MEMCG_CHARGE_BATCH`` =
    32 pages at a time, so its usage runs up to 32 pages per CPU ahead of
    the pages in use); the counter here is exactly the charged pages. The
    OOM killer's victim is the faulting task (the kernel picks the
    largest by ``oom_badness``); the OOM is counted (``memcg_oom``,
    ``oom_kill`` per group). No swap limit (``memory.swap.max``), no
    ``memory.low``/``min``, no kmem. ``HZ`` is 250 (Debian's
    ``CONFIG_HZ``) for the penalty's jiffies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs

from actors.kernel_types import PAGE_SIZE, Errno, PageFlag

if TYPE_CHECKING:
    from actors.mm.page import Page
    from actors.schema import CgroupConfig
    from actors.sched.task import TaskStruct

# try_charge and mem_cgroup_handle_over_high import actors.mm.vmscan when they run:
# vmscan needs actors.mm.swap, which charges swap-in pages here (an import cycle otherwise).

MEMCG_CHARGE_BATCH = 32
MEM_CGROUP_RECLAIM_RETRIES = 5
PAGE_ALLOC_COSTLY_ORDER = 3
MEMCG_DELAY_PRECISION_SHIFT = 20
MEMCG_DELAY_SCALING_SHIFT = 14
HZ = 250
MEMCG_MAX_HIGH_DELAY_JIFFIES = 2 * HZ


@attrs.define(eq=False)
class MemCgroup:
    """``struct mem_cgroup`` of one cgroup: its page counter, limits (pages) and LRU lists.

    ``lru_file``/``lru_anon`` hold the charged pages oldest first (keyed by
    a global charge sequence): the inactive/active split and the
    referenced bit are not modelled, so reclaim takes the oldest.
    """

    path: str
    parent: MemCgroup | None
    max: int | None = None
    high: int | None = None
    usage: int = 0
    watermark: int = 0
    lru_file: dict[int, Page] = attrs.field(factory=dict)
    lru_anon: dict[int, Page] = attrs.field(factory=dict)
    events: dict[str, int] = attrs.field(factory=lambda: {"high": 0, "max": 0, "oom": 0, "oom_kill": 0})
    children: list[MemCgroup] = attrs.field(factory=list)
    #: Pages charged here and taken off the LRU by a reclaimer; pages charged past ``max`` (``force``).
    nr_isolated: int = 0
    nr_forced: int = 0

    #: ``ancestors()``: a group's parent exists before it, and never changes.
    _lineage: tuple[MemCgroup, ...] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._lineage = (self,) if self.parent is None else (self, *self.parent.ancestors())

    def ancestors(self) -> tuple[MemCgroup, ...]:
        """This group, then its parents up to the root."""
        return self._lineage

    def subtree(self) -> Iterator[MemCgroup]:
        """This group and its descendants, parents first (``mem_cgroup_iter`` order)."""
        yield self
        for child in self.children:
            yield from child.subtree()

    def margin(self) -> int:
        """``mem_cgroup_margin()``: pages that can still be charged before ``max`` (of this group only)."""
        return (1 << 62) if self.max is None else max(0, self.max - self.usage)

    def page_counter_try_charge(self, nr_pages: int) -> MemCgroup | None:
        """``page_counter_try_charge()`` up the hierarchy: ``None`` when charged, else the group at its limit."""
        lineage = self._lineage
        for memcg in lineage:
            if memcg.max is not None and memcg.usage + nr_pages > memcg.max:
                return memcg
        for memcg in lineage:
            usage = memcg.usage = memcg.usage + nr_pages
            if usage > memcg.watermark:
                memcg.watermark = usage
        return None

    def force_charge(self, nr_pages: int) -> None:
        """``page_counter_charge()``: charge past the limit (the ``force`` exit of ``try_charge``)."""
        self.nr_forced += nr_pages
        for memcg in self.ancestors():
            memcg.usage += nr_pages
            memcg.watermark = max(memcg.watermark, memcg.usage)

    def uncharge(self, page: Page) -> None:
        """``mem_cgroup_uncharge()`` when *page* is freed: off its LRU (or out of isolation), one page off every counter."""
        if not page.lru:
            self.nr_isolated -= 1
        (self.lru_anon if page.flags & PageFlag.SWAPBACKED else self.lru_file).pop(page.lru, None)
        page.mem_cgroup = None
        for memcg in self.ancestors():
            memcg.usage -= 1


class MemControl:
    """Every memcg of the machine, by cgroup path (the root is ``""``), and the LRU sequence."""

    def __init__(self, cgroups: list[CgroupConfig]) -> None:
        self.root = MemCgroup("", None)
        self.groups = {"": self.root}
        for cgroup in cgroups:
            parent = self.groups[cgroup.path.rpartition("/")[0]]
            memcg = MemCgroup(cgroup.path, parent, _pages(cgroup.memory_max), _pages(cgroup.memory_high))
            parent.children.append(memcg)
            self.groups[cgroup.path] = memcg
        #: Whether any group has a limit: without one no charge can fail, reclaim or throttle.
        self.limited = any(m.max is not None or m.high is not None for m in self.groups.values())
        self._seq = 0

    def lru_add(self, memcg: MemCgroup, page: Page) -> None:
        """``mem_cgroup_commit_charge()`` + ``lru_cache_add()``: *page* is charged to *memcg*, newest on its list."""
        self._seq += 1
        page.mem_cgroup = memcg
        page.lru = self._seq
        (memcg.lru_anon if page.flags & PageFlag.SWAPBACKED else memcg.lru_file)[self._seq] = page

    def isolate(self, page: Page) -> None:
        """``isolate_lru_page()``: a reclaimer takes *page* off its LRU (still charged)."""
        page.mem_cgroup.lru_anon.pop(page.lru)
        page.mem_cgroup.nr_isolated += 1
        page.lru = 0

    def putback(self, page: Page) -> None:
        """``putback_lru_page()``: a page reclaim kept goes back, newest."""
        page.mem_cgroup.nr_isolated -= 1
        self._seq += 1
        page.lru = self._seq
        (page.mem_cgroup.lru_anon if page.flags & PageFlag.SWAPBACKED else page.mem_cgroup.lru_file)[self._seq] = page


def _pages(limit: int | None) -> int | None:
    """``page_counter_memparse()``: bytes to whole pages (rounded down); ``None`` is ``"max"``."""
    return None if limit is None else limit // PAGE_SIZE


async def try_charge(current: TaskStruct, memcg: MemCgroup, nr_pages: int, *, noretry: bool = False) -> int:
    """``try_charge()`` (mm/memcontrol.c, v4.19): 0 once charged, ``-ENOMEM`` if the charge failed.

    Reclaim and its IO happen here, in the charging task, with whatever it
    holds (a fault's mmap_sem, a page lock).
    """
    from actors.mm.vmscan import try_to_free_mem_cgroup_pages

    kernel = current.kernel
    nr_retries = MEM_CGROUP_RECLAIM_RETRIES
    while True:
        over = memcg.page_counter_try_charge(nr_pages)
        if over is None:
            break
        over.events["max"] += 1
        if current.fatal_signal_pending():
            memcg.force_charge(nr_pages)  # force: a dying task may go over the limit
            return 0
        nr_reclaimed = await try_to_free_mem_cgroup_pages(current, over, nr_pages, may_swap=True)
        if over.margin() >= nr_pages:
            continue
        if noretry:
            kernel.count("memcg_charge_noretry_failed")
            return -Errno.ENOMEM
        if nr_reclaimed and nr_pages <= 1 << PAGE_ALLOC_COSTLY_ORDER:
            continue
        if nr_retries:
            nr_retries -= 1
            continue
        over.events["oom"] += 1
        kernel.count("memcg_oom")
        current.actor.log.info("mem_cgroup_oom", memcg=over.path, usage=over.usage, max=over.max)
        return -Errno.ENOMEM
    _note_over_high(current, memcg, nr_pages)
    return 0


def _note_over_high(current: TaskStruct, memcg: MemCgroup, nr_pages: int) -> None:
    """The end of ``try_charge()``: a charge that took a group past ``high`` is reclaimed at return to user."""
    for group in memcg.ancestors():
        if group.high is not None and group.usage > group.high:
            current.memcg_nr_pages_over_high += nr_pages  # set_notify_resume(): handled at return to user
            break


async def mem_cgroup_charge(current: TaskStruct, page: Page, memcg: MemCgroup, *, noretry: bool = False) -> int:
    """``mem_cgroup_try_charge()`` + ``mem_cgroup_commit_charge()`` of one page: 0 or ``-ENOMEM``."""
    if mem_cgroup_charge_fast(current, page, memcg):
        return 0
    ret = await try_charge(current, memcg, 1, noretry=noretry)
    if not ret:
        current.kernel.memcg.lru_add(memcg, page)
    return ret


def mem_cgroup_charge_fast(current: TaskStruct, page: Page, memcg: MemCgroup) -> bool:
    """``mem_cgroup_charge`` of one page when the page counter has room: charged and committed, ``True``.

    ``False``: nothing was done, and ``mem_cgroup_charge`` takes the way
    that may reclaim (its first pass repeats this one's test, which has no
    side effects when it fails). Synchronous, so a charge that needs no
    reclaim costs no coroutine.
    """
    if memcg.page_counter_try_charge(1) is not None:
        return False
    _note_over_high(current, memcg, 1)
    current.kernel.memcg.lru_add(memcg, page)
    return True


def mem_cgroup_oom_kill(current: TaskStruct, memcg: MemCgroup) -> None:
    """``pagefault_out_of_memory()`` → ``mem_cgroup_oom_synchronize()``: the OOM killer kills the faulter (simplified)."""
    memcg.events["oom_kill"] += 1
    current.kernel.count("memcg_oom_kill")
    current.actor.log.info("mark_victim", pid=current.pid, comm=current.comm, memcg=memcg.path)
    current.send_sigkill()


def calculate_high_delay(memcg: MemCgroup, nr_pages: int) -> int:
    """``calculate_high_delay()`` (mm/memcontrol.c, v5.7): the penalty in jiffies for *nr_pages* over high.

    The largest overage of the group and its ancestors, squared, times HZ,
    shifted down by 20 + 14 bits, times the task's share of a charge batch,
    at most ``MEMCG_MAX_HIGH_DELAY_JIFFIES``.
    """
    max_overage = 0
    for group in memcg.ancestors():
        if group.high is None or group.usage <= group.high:
            continue
        overage = ((group.usage - group.high) << MEMCG_DELAY_PRECISION_SHIFT) // max(group.high, 1)
        max_overage = max(max_overage, overage)
    if not max_overage:
        return 0
    penalty = (max_overage * max_overage * HZ) >> (MEMCG_DELAY_PRECISION_SHIFT + MEMCG_DELAY_SCALING_SHIFT)
    penalty = penalty * nr_pages // MEMCG_CHARGE_BATCH
    return min(penalty, MEMCG_MAX_HIGH_DELAY_JIFFIES)


async def mem_cgroup_handle_over_high(current: TaskStruct) -> None:
    """``mem_cgroup_handle_over_high()`` (v4.19; the penalty sleep from 5.4): at return to user, no lock held."""
    from actors.mm.vmscan import try_to_free_mem_cgroup_pages

    nr_pages = current.memcg_nr_pages_over_high
    if not nr_pages:
        return
    current.memcg_nr_pages_over_high = 0
    kernel = current.kernel
    memcg = kernel.memcg.groups[current.blkcg]
    for group in memcg.ancestors():  # reclaim_high()
        if group.high is not None and group.usage > group.high:
            group.events["high"] += 1
            await try_to_free_mem_cgroup_pages(current, group, nr_pages, may_swap=True)
    if not kernel.policy.memcg_high_delay:
        return
    penalty = calculate_high_delay(memcg, nr_pages)
    if penalty <= HZ // 100:
        return
    ns = penalty * 1_000_000_000 // HZ
    current.actor.log.info("memcg_high_delay", memcg=memcg.path, jiffies=penalty, ns=ns)
    entered = kernel.psi.memstall_enter(current)
    await current.actor.sleep(ns)  # schedule_timeout_killable()
    kernel.psi.memstall_leave(current, entered)
    current.account_sleep("delay", ns)
    kernel.count("memcg_high_delay_ns", ns)
