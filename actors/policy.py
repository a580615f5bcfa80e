"""Kernel variants as named sets of switches.

Each experiment compares policies on the same workload and seed. A policy
names the behaviour of each piece that changed across the history of the
series (docs/DESIGN.md, "Kernel variants" and "Kernel notes"):

================  ============================================================
switch            values
================  ============================================================
rwsem             ``4.19`` (writer preference, wake the readers at the head);
                  ``5.3`` (handoff after 4 ms, wake up to 256 readers; a
                  reader takes a free lock ahead of a woken writer)
fault_retry       ``never`` (before d065bd810b6d: faults never set
                  ALLOW_RETRY); ``once`` (4.19 x86: the second attempt has
                  ALLOW_RETRY cleared and TRIED set); ``many`` (5.7+,
                  4064b9827063: retries unbounded, sem dropped only on the
                  first attempt)
filemap_fault     ``4.19`` (only the page-lock wait drops the sem); ``v3``
                  (the seed's patches 2-5 as posted); ``v5.1`` (6b4c9f446981:
                  fpin, RETRY only once the page is uptodate)
cached_page       V3's ``vmf->cached_page`` (patches 1, 4, 5) on or off
page_mkwrite      ``hold`` (sem held across ->page_mkwrite); ``v3-btrfs``
                  (patches 6-7 as posted)
zero_readahead_fix  5c72feee3e45: do not drop the sem for async readahead
                  when ``ra_pages == 0``
bdp_drop_mmap_sem 89b15332af7c: drop the sem before balance_dirty_pages()
                  in a write fault and return RETRY
per_vma_lock      ``off`` (before 6.4); ``anon`` (6.4, 5e31275cc997 and
                  0bff0aaea03e: x86 tries ``lock_vma_under_rcu`` first, which
                  takes only anonymous VMAs that have an ``anon_vma``; every
                  file fault falls back to mmap_lock); ``file`` (6.7+ as in
                  6.12: file VMAs too, 350f6bbca1de in 6.6, fault-around under
                  the VMA lock f5617ffeb450, ``->fault`` for read, COW, shared
                  and write-protect faults 12214eba1992, 4de8c93a4751,
                  4ed4379881aa, 4a68fef16df9 in 6.7; ``filemap_fault`` drops
                  the VMA lock where it would drop mmap_lock, 5d74b2ab2c15;
                  a retry after a major fault sets TRIED, 46e714c729c8, 6.8).
                  Needs ``filemap_fault = "v5.1"`` (the config check says so)
memcg_high_delay  0e4b01df8659 (5.4): over memory.high, the return to user
                  sleeps ``calculate_high_delay`` (up to 2 s) after reclaim
swapin_charge     ``fault`` (up to 5.7: ``do_swap_page`` charges the page
                  after locking it); ``swapcache`` (5.8, 4c6355b25e8b: each
                  swap-cache page is charged when readahead allocates it)
fault_accounting  ``4.19`` (GUP faults counted to the ``tsk`` passed in,
                  none from ``access_remote_vm``); ``5.9`` (``mm_account_fault``
                  counts each completed fault, GUP's too, to ``current``)
swapin_sync       23955622ff8d (4.13) to its removal after 6.4: a swap-in whose
                  adaptive readahead window is one page (random swap-ins)
                  waits for its read inside ``swap_readpage``, mmap_sem
                  held; off in ``v2.6.36`` (before it) and ``v6.12`` (after)
page_wait         ``4.19`` (a woken page waiter re-checks the bit and queues
                  again at the tail if it lost); ``5.9`` (2a9127fcf229 in
                  5.8 and 5ef64cc8987a in 5.9: a woken non-exclusive waiter
                  is done, and a ``lock_page`` waiter that has queued
                  ``sysctl_page_lock_unfairness`` (5) times is handed the lock)
iolatency         ``4.19`` (io.latency as merged: the mean rule on every
                  device, one-window verdicts, no slot hand-off to the woken
                  waiter); ``5.4`` (what v5.1 to v5.7 ship: the SSD p90 rule,
                  ``cur_stat`` across windows, ``rq_qos_wait`` hand-off);
                  ``actors.block.blk_iolatency_rules`` lists every difference
================  ============================================================

``v5.10`` and ``v6.1`` take the ``v5.7`` switches but three: 5.8's swap-cache
charge (``swapin_charge``), 5.9's fault accounting and 5.8/5.9's page waits
(``page_wait``); what else changed in between does not change who holds
mmap_lock across IO here. 5.8 renamed mmap_sem to
mmap_lock behind wrappers (da1c55f1b272); 5.11 removed reader optimistic
spinning from the rwsem (617f3ef95177) for reader lock stealing
(1a728dff855a), which the "5.3" rwsem model stands in for (a reader takes a
free lock ahead of a woken writer);
5.16 moved filemap_fault to folios (``lock_folio_maybe_drop_mmap``, the
same rules); 5.15 added ``mapping->invalidate_lock`` (730633f0b7f9), taken
shared by a fault that reads a page and exclusively by truncate, not
modelled; 6.1 replaced the VMA rbtree with the maple tree (d4af56c5c7c6),
the same lock. The block layer of both has io.max (blk-throttle) as
``actors.block.blk_throttle`` models it.

``v6.4`` and ``v6.12`` are the ``v5.7`` switches with per-VMA locks
(``anon`` and ``file``); docs/KERNELS-6x.md says what else those releases
changed and what the model leaves out.
"""

from __future__ import annotations

from typing import Literal

import attrs


@attrs.frozen(kw_only=True)
class Policy:
    """One kernel variant."""

    name: str
    rwsem: Literal["4.19", "5.3"] = "4.19"
    fault_retry: Literal["never", "once", "many"] = "once"
    filemap_fault: Literal["4.19", "v3", "v5.1"] = "4.19"
    cached_page: bool = False
    page_mkwrite: Literal["hold", "v3-btrfs"] = "hold"
    zero_readahead_fix: bool = False
    bdp_drop_mmap_sem: bool = False
    per_vma_lock: Literal["off", "anon", "file"] = "off"
    memcg_high_delay: bool = False
    swapin_charge: Literal["fault", "swapcache"] = "fault"
    iolatency: Literal["4.19", "5.4"] = "4.19"
    fault_accounting: Literal["4.19", "5.9"] = "4.19"
    swapin_sync: bool = True
    page_wait: Literal["4.19", "5.9"] = "4.19"
    description: str = ""


_V5_7 = Policy(
    name="v5.7",
    iolatency="5.4",
    rwsem="5.3",
    fault_retry="many",
    filemap_fault="v5.1",
    zero_readahead_fix=True,
    bdp_drop_mmap_sem=True,
    memcg_high_delay=True,
    description="5.7: unbounded retries, rwsem handoff, zero-readahead fix, bdp drop",
)

#: 5.10 LTS, and what the later presets build on: 5.8's swap-cache charge, 5.9's fault accounting and page waits.
_V5_10 = attrs.evolve(
    _V5_7,
    name="v5.10",
    swapin_charge="swapcache",
    fault_accounting="5.9",
    page_wait="5.9",
    description="5.10 LTS: the 5.7 fault path (mmap_lock is mmap_sem renamed, 5.8); io.max as 5.10",
)

PRESETS: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy(
            name="v2.6.36",
            fault_retry="never",
            swapin_sync=False,
            description="before d065bd810b6d: no ALLOW_RETRY, every wait under mmap_sem",
        ),
        Policy(name="v4.19", description="baseline: sem dropped only to wait for a locked page"),
        Policy(
            name="v3",
            filemap_fault="v3",
            cached_page=True,
            page_mkwrite="v3-btrfs",
            description="the V3 series as posted (patches 1-7), flaws included",
        ),
        Policy(
            name="v3-no-cached-page",
            filemap_fault="v3",
            cached_page=False,
            page_mkwrite="hold",
            description="V3 patches 2-3 only: drop for IO, no cached_page (Kara's question)",
        ),
        Policy(name="v5.1", filemap_fault="v5.1", iolatency="5.4", description="6b4c9f446981 as merged"),
        _V5_7,
        _V5_10,
        attrs.evolve(_V5_10, name="v6.1", description="6.1 LTS: the 5.7 fault path on folios; maple tree and invalidate_lock not modelled"),
        attrs.evolve(_V5_10, name="v6.4", per_vma_lock="anon", description="6.4: per-VMA locks for anonymous faults; file faults take mmap_lock"),
        attrs.evolve(_V5_10, name="v6.12", swapin_sync=False, per_vma_lock="file", description="6.12 LTS: per-VMA locks for file faults too; filemap_fault drops the VMA lock for IO"),
    )
}
