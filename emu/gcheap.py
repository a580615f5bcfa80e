"""Cyclic GC during a run: the set-up heap frozen, young collections rarer.

A run builds its model (engine, kernel, page cache, tasks) and then steps
it for a long time. CPython's cyclic collector would keep re-scanning that
set-up heap in its older generations and collect the young one every 700
allocations. ``frozen_heap()`` moves every object alive at its start to the
permanent generation (``gc.freeze``), so collections traverse only what the
run allocates, and raises the young generation's threshold. Everything is
restored on the way out, also on an exception.

Collection never changes what a run does: no emulated code has a
finalizer or a weak reference that behaviour depends on, so the trace digest
is the same with any GC settings (tests/emu/test_gcheap.py checks it).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["RUN_THRESHOLD", "frozen_heap"]

#: ``gc.set_threshold`` during a run: young collections every 50,000 net
#: allocations instead of 700 (an estimate: GC time on seed-inversion falls
#: from ~8 % to ~1 % of the simulation; docs/PERFORMANCE.md), older
#: generations as CPython's defaults scaled to match.
RUN_THRESHOLD = (50_000, 20, 100)


@contextlib.contextmanager
def frozen_heap(threshold: tuple[int, int, int] = RUN_THRESHOLD) -> Iterator[None]:
    """Freeze the heap as it is, collect less often inside; restore both after.

    Nested use is safe: only the outermost one that froze unfreezes.
    """
    old = gc.get_threshold()
    outermost = gc.get_freeze_count() == 0
    gc.freeze()
    gc.set_threshold(*threshold)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        if outermost:
            gc.unfreeze()
