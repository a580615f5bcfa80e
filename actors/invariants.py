"""Invariant checks: what must hold in any correct kernel, checked on every run.

Checks run during the run (recorded with ``Kernel.violation``) and at the
end (``check_invariants``). A violation is a dict with the invariant's name,
the virtual time and what was seen; results.json lists them under
``invariants`` and ``emu run --strict`` fails on any.

During the run:
    ``page_ref_leak``: a ``vm_fault`` went out of scope still holding a
    page reference (V3's ``cached_page`` on a ``bad_area`` exit, KERNEL.md
    defect 5).

At the end:
    ``page_refcount_balanced``: when every task has finished, each cached
    page's ``_refcount`` is 1 (the page cache) plus one per PTE mapping it.
    Runs cut by the horizon skip this (faults in flight hold references).
    ``page_unlocked_at_rest``: when every task has finished and no IO is in
    flight, no cached page is still locked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.kernel_types import PageFlag

if TYPE_CHECKING:
    from actors.kernel import Kernel


def check_invariants(kernel: Kernel) -> dict[str, Any]:
    """End-of-run checks, merged with the violations recorded during the run."""
    violations = list(kernel.violations)
    checked = kernel.invariant_checks
    finished = all(task.actor.finished or task.actor.daemon for task in kernel.tasks)
    if finished:
        idle = kernel.bdev.statistics().in_flight == 0
        for inode in kernel.inodes.values():
            for page in inode.i_mapping.pages.values():
                checked += 1
                expected = 1 + len(page.rmap)
                if page.refcount != expected:
                    violations.append(
                        {"invariant": "page_refcount_balanced", "page": page.name, "refcount": page.refcount, "expected": expected}
                    )
                if idle and page.flags & PageFlag.LOCKED:
                    violations.append({"invariant": "page_unlocked_at_rest", "page": page.name, "locker": page.locker})
    return {"checked": checked, "violations": violations}
