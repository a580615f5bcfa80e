"""A policy's timeline as intervals per task, from its trace records (no matplotlib: ``emu run``'s workers use it).

``timeline_intervals`` reads the records in order and returns, per task
actor, the intervals ``actors.lab.plots`` draws on its timeline:

=======================  ====================================================
interval                 records
=======================  ====================================================
mmap_sem read/write      ``mmap_lock_acquire_returned`` (success) to
                         ``mmap_lock_released`` of the same task and mm
mmap_sem wait            ``mmap_lock_start_locking`` to
                         ``mmap_lock_acquire_returned``
io.latency throttle      ``rq_qos_throttle`` to ``rq_qos_throttle_done``
io.latency delay         ``blkcg_maybe_throttle_current`` for ``delay_ns``
IO wait                  ``mmap_sem_held_across_io`` of kind ``io`` (exact),
                         and the task's own bios from ``block_bio_queue`` to
                         ``block_rq_complete``, cut at the end of the fault
                         that queued them; minus the throttled time
=======================  ====================================================

Emulation notes:
    Sleeps on IO taken without an mmap_sem are not traced one by one (only
    ``fault_done`` sums them), so the IO-wait lane shows the time the task's
    own bios are in flight while it is in the fault (or op) that queued
    them: a readahead bio the task does not wait for is drawn until the
    fault returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Interval = tuple[int, int]
#: The events ``timeline_intervals`` reads (of the others, only who logged them and when).
TIMELINE_EVENTS = frozenset(
    (
        *("page_fault_user", "fault_done", "blkcg_maybe_throttle_current", "mmap_sem_held_across_io"),
        *("mmap_lock_start_locking", "mmap_lock_acquire_returned", "mmap_lock_released", "rq_qos_throttle", "rq_qos_throttle_done"),
        *("block_bio_queue", "block_rq_complete"),
    )
)


def timeline_intervals(
    records: Iterable[dict[str, Any]], *, actors: Iterable[str] = (), end_ns: int = 0
) -> dict[str, dict[str, list[Interval]]]:
    """Per task actor (``process.thread``), per kind (``KINDS``), its intervals in ns, sorted.

    Every task actor that logged anything has an entry (maybe empty). Intervals still open at the last record end there. When *records*
    are only the drawn ones (``actors.lab.drawn.DrawnRecords``), *actors* and
    *end_ns* say who logged the others and when the trace ends. Kernel actors (names
    without a dot: the device, the flusher) are left out. ``"fault"``
    intervals (``page_fault_user`` to ``fault_done``) are included too, for
    choosing the window; they are not drawn. So are ``"stall_break"``
    points ``(ts, ts)`` where a new op must have begun: each fault's entry,
    and, outside a fault, an mmap_sem wait on the same mm as the task's
    previous one (``mmap`` then ``munmap`` of a loop are two ops; one
    ``/proc`` read that walks four processes' mmap_sems is one).
    """
    out: dict[str, dict[str, list[Interval]]] = {}
    holds: dict[tuple[str, str], list[tuple[int, bool]]] = {}
    waits: dict[str, int] = {}
    throttles: dict[tuple[str, Any], int] = {}
    faults: dict[str, int] = {}
    bios: dict[Any, tuple[str, int, bool]] = {}  # bio → (actor, queued at, queued inside a fault)
    fault_bios: dict[str, list[tuple[int, Any]]] = {}  # actor → bios queued in its open fault
    last_wait_mm: dict[str, Any] = {}  # actor → mm of its last mmap_sem wait outside a fault
    last = end_ns
    for actor in actors:
        if "." in actor:
            out[actor] = {}

    def stall_break(actor: str, ts: int) -> None:
        out.setdefault(actor, {}).setdefault("stall_break", []).append((ts, ts))

    def add(actor: str, kind: str, start: int, end: int) -> None:
        if end > start or kind == "fault":
            out.setdefault(actor, {}).setdefault(kind, []).append((start, end))

    for record in records:
        ts = record["ts"]
        if ts > last:
            last = ts
        actor = record.get("actor") or ""
        event = record["event"]
        task = "." in actor
        if task and actor not in out:
            out[actor] = {}  # a row for every task, busy or not
        if event not in TIMELINE_EVENTS:
            continue
        if event == "block_rq_complete":
            opened = bios.pop(record.get("bio"), None)
            if opened is not None:
                add(opened[0], "io", opened[1], ts)
            continue
        if not task:
            continue
        if event == "mmap_lock_start_locking":
            waits[actor] = ts
            if actor not in faults:
                if last_wait_mm.get(actor, ()) == record.get("mm"):
                    stall_break(actor, ts)
                last_wait_mm[actor] = record.get("mm")
        elif event == "mmap_lock_acquire_returned":
            start = waits.pop(actor, None)
            if start is not None:
                add(actor, "mmap_sem_wait", start, ts)
            if record.get("success", True):
                holds.setdefault((actor, record.get("mm", "")), []).append((ts, bool(record.get("write"))))
        elif event == "mmap_lock_released":
            stack = holds.get((actor, record.get("mm", "")))
            if stack:
                start, write = stack.pop()
                add(actor, "hold_write" if write else "hold_read", start, ts)
        elif event == "rq_qos_throttle":
            throttles[(actor, record.get("bio"))] = ts
        elif event == "rq_qos_throttle_done":
            start = throttles.pop((actor, record.get("bio")), ts - record.get("waited_ns", 0))
            add(actor, "throttle", start, ts)
        elif event == "blkcg_maybe_throttle_current":
            add(actor, "delay", ts, ts + record.get("delay_ns", 0))
        elif event == "mmap_sem_held_across_io" and record.get("kind") == "io":
            add(actor, "io", ts - record.get("ns", 0), ts)
        elif event == "block_bio_queue":
            inside = actor in faults
            bios[record.get("bio")] = (actor, ts, inside)
            if inside:
                fault_bios.setdefault(actor, []).append((ts, record.get("bio")))
        elif event == "page_fault_user":
            faults[actor] = ts
            stall_break(actor, ts)
        elif event == "fault_done":
            start = faults.pop(actor, ts - record.get("latency_ns", 0))
            add(actor, "fault", start, ts)
            # IO the fault queued and did not wait for ends with the fault.
            for queued, bio in fault_bios.pop(actor, []):
                opened = bios.get(bio)
                if opened is not None and opened[1] == queued:
                    add(actor, "io", queued, ts)
                    del bios[bio]

    # Close what the end of the trace cut off.
    for (actor, _mm), stack in holds.items():
        for start, write in stack:
            add(actor, "hold_write" if write else "hold_read", start, last)
    for actor, start in waits.items():
        add(actor, "mmap_sem_wait", start, last)
    for (actor, _bio), start in throttles.items():
        add(actor, "throttle", start, last)
    for actor, start, _inside in bios.values():
        add(actor, "io", start, last)
    for actor, start in faults.items():
        add(actor, "fault", start, last)

    for kinds in out.values():
        for kind, intervals in kinds.items():
            intervals.sort()
            if kind in ("io", "throttle", "delay"):
                kinds[kind] = _union(intervals)
        if "io" in kinds and "throttle" in kinds:
            kinds["io"] = _subtract(kinds["io"], kinds["throttle"])
    return {actor: out[actor] for actor in sorted(out)}


def _union(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(intervals: list[Interval], holes: list[Interval]) -> list[Interval]:
    """*intervals* minus *holes* (both sorted and disjoint)."""
    out: list[Interval] = []
    j = 0
    for start, end in intervals:
        while j < len(holes) and holes[j][1] <= start:
            j += 1
        k = j
        while k < len(holes) and holes[k][0] < end:
            if holes[k][0] > start:
                out.append((start, holes[k][0]))
            start = max(start, holes[k][1])
            k += 1
        if start < end:
            out.append((start, end))
    return out
