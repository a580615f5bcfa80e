"""The x86 user page-fault entry and its ``VM_FAULT_RETRY`` loop.

Mirrors arch/x86/mm/fault.c:__do_page_fault() at v4.19 (with V3 patch 1/7's
``vm_fault_init``/``handle_mm_fault_cacheable``/``vm_fault_cleanup`` when the
policy has ``cached_page``), and the retry rules the policy names:

* ``never`` (before d065bd810b6d, 2.6.36): ALLOW_RETRY is never set, so the
  fault path waits for everything with the sem held;
* ``once`` (4.19 to 5.6): on RETRY, clear ALLOW_RETRY, set TRIED, re-take the
  sem with a *blocking* ``down_read`` (queueing behind any waiting writer),
  re-find the VMA and fault again; a second RETRY returns to user space;
* ``many`` (5.7+, 4064b9827063): keep ALLOW_RETRY, set TRIED, retry until the
  fault completes (the sem is still dropped only on the first attempt).

Per-VMA locks (policy ``per_vma_lock``), as ``do_user_addr_fault`` has them
from 6.4 (0bff0aaea03e) to 6.12: a user fault first tries
``lock_vma_under_rcu`` and, holding only that VMA's lock, calls
``handle_mm_fault`` with ``FAULT_FLAG_VMA_LOCK``. No VMA (or an access
error) falls back to the mmap_lock path below. A fault that completes counts
``VMA_LOCK_SUCCESS`` and returns without touching mmap_lock; one that returns
``VM_FAULT_RETRY`` has already dropped the VMA lock (4089eef0e6ac, 6.5:
``handle_mm_fault`` drops it on RETRY; 6.4 dropped it here, the same
ordering for this model), counts ``VMA_LOCK_RETRY`` and goes on to take
mmap_lock and fault again, with ``TRIED`` if the first try was a major
fault (46e714c729c8, 6.8). ``lock_vma_under_rcu`` itself counts ``ABORT``
and ``MISS``.

A fault that returns without installing the PTE (RETRY exhausted, a killed
wait) simply returns; the access re-executes and faults again, as on real
hardware. ``VM_FAULT_MAJOR`` is OR-ed across attempts and counted once.

V3 keeps one ``vm_fault`` across attempts and cleans it up only on the
RETRY-exhausted branch and before the final ``up_read``: the ``bad_area``
exits of a retried attempt (its VMA unmapped while the sem was dropped)
leak the cached page reference (docs/DESIGN.md D5), which this emulation
reproduces rather than fixes.

Emulation notes:
    No kernel-mode faults, no stack expansion, no pkeys, no vsyscall. A
    SIGSEGV or SIGBUS kills the faulting thread (not its whole process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from actors.kernel_types import (
    VM_FAULT_ERROR,
    FaultFlag,
    Signal,
    VmFaultResult,
    flag_names,
    vm_fault_t,
)
from actors.mm.memory import (
    VmFault,
    handle_mm_fault,
    handle_mm_fault_cacheable,
    lock_vma_under_rcu,
    vm_fault_cleanup,
    vm_fault_init,
)
from actors.mm.mmap import VmFlag, down_read, down_read_trylock, up_read, vma_end_read
from actors.sched.core import cpu_work

if TYPE_CHECKING:
    from actors.sched.task import TaskStruct


@attrs.frozen
class FaultOutcome:
    """What one ``__do_page_fault`` did: attempts, major, and a signal if any."""

    attempts: int
    major: bool
    signal: Signal | None


def access_error(write: bool, vma) -> bool:
    """``access_error()``: a write to a VMA without VM_WRITE, or a read without VM_READ."""
    if write:
        return not vma.vm_flags & VmFlag.WRITE
    return not vma.vm_flags & VmFlag.READ


async def do_page_fault(current: TaskStruct, address: int, write: bool) -> FaultOutcome:
    """``__do_page_fault()`` (``do_user_addr_fault()`` from 5.8) for a user access to page *address*."""
    kernel = current.kernel
    policy = kernel.policy
    mm = current.mm
    flags = FaultFlag.KILLABLE | FaultFlag.USER
    if policy.fault_retry != "never":
        flags |= FaultFlag.ALLOW_RETRY
    if write:
        flags |= FaultFlag.WRITE
    cacheable = policy.cached_page
    vmf = VmFault()
    start_ns = current.actor.now_ns
    sleeps_before = current.sleep_totals()
    current.actor.log.info("page_fault_user", address=address, write=write)
    kernel.counters["faults"] += 1
    major = 0
    attempts = 0
    signal: Signal | None = None
    bad_area = None
    extra: dict[str, str] = {}

    lock_mmap = True
    if policy.per_vma_lock != "off":
        outcome, fault = await _fault_under_vma_lock(current, address, write, flags)
        extra["vma_lock"] = outcome
        if outcome != "abort":
            attempts = 1
            major = fault & VmFaultResult.MAJOR
        if outcome == "success":
            lock_mmap = False
            if fault & VM_FAULT_ERROR:
                signal = Signal.SIGSEGV if fault & VmFaultResult.SIGSEGV else Signal.SIGBUS
        elif outcome == "retry":
            if major and policy.per_vma_lock == "file":
                flags |= FaultFlag.TRIED  # 46e714c729c8 (6.8; 6.4 retried without it)
            lock_mmap = not current.fatal_signal_pending()  # fault_signal_pending(): return at once

    if lock_mmap:
        if not down_read_trylock(current, mm):
            await down_read(current, mm)
        while True:
            attempts += 1
            vma = mm.find_vma(address)
            if vma is None or vma.vm_start > address or access_error(write, vma):
                up_read(current, mm)  # bad_area / bad_area_access_error
                signal = Signal.SIGSEGV
                bad_area = "bad_area" if vma is None or vma.vm_start > address else "bad_area_access_error"
                break
            current.dropped_vma = None
            current.fault_flags = flags
            if cacheable:
                vm_fault_init(vmf, vma, address, flags)
                fault = await handle_mm_fault_cacheable(current, vmf)
            else:
                fault = await handle_mm_fault(current, vma, address, flags)
            # The attempt's CPU work (page-table walk, accounting; readahead and reads for a major
            # one), under the sem unless the attempt dropped it.
            await cpu_work(current, "minor_fault", "major_fault" if fault & VmFaultResult.MAJOR else None)
            major |= fault & VmFaultResult.MAJOR
            if fault & VmFaultResult.RETRY:
                kernel.counters["fault_retries"] += 1
                if current.dropped_vma is not None and hasattr(kernel, "note_retry"):
                    kernel.note_retry(current, address)
                if flags & FaultFlag.ALLOW_RETRY:
                    if policy.fault_retry == "once":
                        flags &= ~FaultFlag.ALLOW_RETRY
                    flags |= FaultFlag.TRIED
                    if not current.fatal_signal_pending():
                        await down_read(current, mm)
                        continue
                if cacheable:
                    vm_fault_cleanup(vmf)
                break
            if cacheable:
                vm_fault_cleanup(vmf)
            up_read(current, mm)
            if fault & VM_FAULT_ERROR:
                signal = Signal.SIGSEGV if fault & VmFaultResult.SIGSEGV else Signal.SIGBUS
            break

    current.fault_flags = 0
    current.retry_suspect = None
    kernel.invariant_checks += 1
    if vmf.cached_page is not None:
        # The vm_fault dies here with a reference (bad_area after a retry, defect 5).
        kernel.violation("page_ref_leak", task=current.comm, page=vmf.cached_page.name, address=address, cause=bad_area or "exit")
    if major:
        kernel.counters["major_faults"] += 1
    # 4.19 __do_page_fault: major if any attempt was; 5.9 mm_account_fault: the last attempt's, or TRIED
    current.account_fault(bool(major) or (policy.fault_accounting == "5.9" and bool(flags & FaultFlag.TRIED)))
    current.fault_done(
        start_ns, sleeps_before, address=address, flags=flag_names(FaultFlag, flags), attempts=attempts, major=bool(major), signal=signal, **extra
    )
    return FaultOutcome(attempts, bool(major), signal)


async def _fault_under_vma_lock(current: TaskStruct, address: int, write: bool, flags: int) -> tuple[str, vm_fault_t]:
    """The ``CONFIG_PER_VMA_LOCK`` block of ``do_user_addr_fault()`` (v6.4, v6.12): ``("success"|"retry"|"abort", fault)``.

    ``"abort"``: no VMA could be locked (or, under 6.4 rules, an access
    error), so the mmap_lock path runs as before. Under 6.12 rules an access
    error is handled under the VMA lock (SIGSEGV, counted a success: "x86:
    mm: accelerate pagefault when badaccess", 6.10).
    """
    kernel = current.kernel
    vma = lock_vma_under_rcu(current, current.mm, address)
    if vma is None:
        return "abort", 0
    if access_error(write, vma):
        vma_end_read(current, vma)
        if kernel.policy.per_vma_lock == "anon":
            return "abort", 0  # 6.4: goto lock_mmap
        kernel.count_vm_event("VMA_LOCK_SUCCESS", current)
        return "success", VmFaultResult.SIGSEGV
    current.dropped_vma = None
    current.fault_flags = flags | FaultFlag.VMA_LOCK
    fault = await handle_mm_fault(current, vma, address, flags | FaultFlag.VMA_LOCK)
    await cpu_work(current, "minor_fault", "major_fault" if fault & VmFaultResult.MAJOR else None)
    if not fault & VmFaultResult.RETRY:
        vma_end_read(current, vma)
        kernel.count_vm_event("VMA_LOCK_SUCCESS", current)
        return "success", fault
    if vma in current.vma_locks_held:  # 6.4: the arch code drops it after any return
        vma_end_read(current, vma)
    kernel.counters["fault_retries"] += 1
    if current.dropped_vma is not None and hasattr(kernel, "note_retry"):
        kernel.note_retry(current, address)
    kernel.count_vm_event("VMA_LOCK_RETRY", current)
    return "retry", fault
