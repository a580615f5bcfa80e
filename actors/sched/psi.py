"""Pressure stall information for memory, per cgroup: ``memory.pressure``'s ``total=``.

Mirrors the memory half of kernel/sched/psi.c (Johannes Weiner, 4.20,
eb414681d5a0; unchanged in what it counts through 6.1):
``psi_memstall_enter``/``psi_memstall_leave`` mark a task as stalled on
memory (the flag ``PF_MEMSTALL``; entering twice is a no-op, so nested
sections count once), and each cgroup from the task's own up to the root
accumulates

* ``some``: time during which at least one of its tasks was stalled;
* ``full``: time during which all of its non-idle tasks were stalled.

The kernel marks the stall around direct reclaim
(``try_to_free_mem_cgroup_pages``), the memory.high penalty sleep
(``mem_cgroup_handle_over_high``), io.latency's delay for swap IO
(``blkcg_maybe_throttle_current`` with ``use_memdelay``) and the read of a
refaulting page (``swap_readpage``/``wait_on_page_locked`` of a
``PageWorkingset`` page). 4.19 has no PSI; the model measures it under
every policy, so the figure means "what a 4.20+ kernel would report for
this run".

Emulation notes:
    ``full`` treats every thread configured in the group as non-idle for the
    whole run (the kernel counts a task sleeping in ``think`` or on a lock
    as idle), so it is a lower bound. No per-CPU state, no averages
    (``avg10``...): only the totals. Every swap-in read counts as a
    refault (the model has no workingset shadow entries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from actors.sched.task import TaskStruct


@attrs.define
class PsiGroup:
    """One cgroup's memory stall state: ``nr_tasks`` threads, ``nr_memstall`` of them stalled now."""

    path: str
    nr_tasks: int = 0
    nr_memstall: int = 0
    some_since: int = 0
    full_since: int = 0
    some_ns: int = 0
    full_ns: int = 0


class Psi:
    """The memory stall totals of every cgroup (the root is ``""``)."""

    def __init__(self, paths: list[str], task_cgroups: list[str]) -> None:
        self.groups = {path: PsiGroup(path) for path in ["", *paths]}
        for cgroup in task_cgroups:
            for group in self._chain(cgroup):
                group.nr_tasks += 1

    def _chain(self, cgroup: str) -> list[PsiGroup]:
        """The group of *cgroup* and its ancestors, up to the root."""
        out = []
        path = cgroup
        while True:
            out.append(self.groups[path])
            if not path:
                return out
            path = path.rpartition("/")[0]

    def memstall_enter(self, current: TaskStruct) -> bool:
        """``psi_memstall_enter()``: ``False`` if *current* was stalled already (nothing changes)."""
        if current.memstall:
            return False
        current.memstall = True
        now = current.actor.now_ns
        for group in self._chain(current.blkcg):
            group.nr_memstall += 1
            if group.nr_memstall == 1:
                group.some_since = now
            if group.nr_memstall == group.nr_tasks:
                group.full_since = now
        return True

    def memstall_leave(self, current: TaskStruct, entered: bool) -> None:
        """``psi_memstall_leave()`` of a section whose ``memstall_enter`` returned *entered*."""
        if not entered:
            return
        current.memstall = False
        now = current.actor.now_ns
        for group in self._chain(current.blkcg):
            if group.nr_memstall == group.nr_tasks:
                group.full_ns += now - group.full_since
            if group.nr_memstall == 1:
                group.some_ns += now - group.some_since
            group.nr_memstall -= 1

    def totals(self, now_ns: int) -> dict[str, tuple[int, int]]:
        """``(some_ns, full_ns)`` of every group, counting stalls still open at *now_ns*."""
        out = {}
        for path, group in self.groups.items():
            some, full = group.some_ns, group.full_ns
            if group.nr_memstall:
                some += now_ns - group.some_since
            if group.nr_tasks and group.nr_memstall == group.nr_tasks:
                full += now_ns - group.full_since
            out[path] = (some, full)
        return out
