"""Trace records → a Perfetto (Chrome JSON) timeline.

The emulator's trace (``emu.Trace``) is a flat list of records stamped with
virtual time, sequence and actor; ``to_perfetto`` reads those records, in
order, and draws what a kernel engineer looks for in the inversion:

=========================  ====================================================
what                       how it is drawn
=========================  ====================================================
emulated process           a Perfetto process, named after the config's
                           process (``batch0``); its threads (actors named
                           ``process.thread``) are named threads
kernel actor               its own process (the block device ``sda``, the
                           flusher, ...): actor names without a ``.``
page fault                 a complete slice on the thread, from
                           ``page_fault_user`` to ``fault_done`` (a thread
                           runs one fault at a time, so they nest)
mmap_sem wait              a complete slice on the thread, from
                           ``mmap_lock_start_locking`` to
                           ``mmap_lock_acquire_returned``
mmap_sem hold              an async slice in the mm owner's process (on its
                           ``mmap_sem`` pseudo-thread), from
                           ``mmap_lock_acquire_returned`` (success) to
                           ``mmap_lock_released`` of the same actor and mm
                           (holds of different tasks overlap)
io.latency throttle        a complete slice on the thread, ``rq_qos_throttle``
                           → ``rq_qos_throttle_done``; the induced delay
                           (``blkcg_maybe_throttle_current``) likewise
IO under mmap_sem          a complete slice on the thread covering the sleep
                           that ``mmap_sem_held_across_io`` reports (the
                           inversion's signature); likewise "throttle under
                           mmap_sem" (``_throttle``) and "fs sleep under
                           mmap_sem" (``_fs_sleep``)
bio                        an async slice in the device's process, from
                           ``block_bio_queue`` (or ``block_rq_issue``) to
                           ``block_rq_complete``, keyed by bio id
fault → IO                 a flow arrow from the fault that queued the bio to
                           a zero-length ``bio complete`` slice on the
                           device's ``completions`` thread
counters                   io.latency ``depth``/``use_delay`` per group (from
                           ``iolatency_scale``, in the device's process, whoever
                           logged it), mmap_sem ``waiters`` per mm
                           (from ``mmap_lock_start_locking``)
=========================  ====================================================

Slice names never carry ids (a bio's number, a task's pid), so Perfetto
groups slices by name; the ids are in each slice's args (``bio``, ``mm``,
``holder``).

Numbering. Given *tasks* (``{actor: (tgid, pid)}``, the kernel's
``task_struct`` ids, as ``RunResult.tasks`` keeps them), a task's thread is
tid = its pid and its process pid = its tgid, the numbers ``trace.jsonl``
records carry (``"pid"`` of ``block_bio_queue``) and ``/proc`` would show.
Everything else (the block device, the flusher's helpers, an mm's
``mmap_sem`` track, tasks when *tasks* is not given) is numbered by first
appearance: process *k* (from 1, skipping the tasks' numbers) and threads
``1_000_000 + 1000 * k + j``, so no tid is used twice across the trace.
The output is a pure function of the records and *tasks* (same trace,
same bytes). Slices still open at the end of the trace are closed at the
last record's time and marked ``unfinished``.

Emulation notes:
    A trylock that succeeds (``trylock=True``) opens a hold with no wait
    slice. A failed acquire (``success=False``, a fatal signal) ends the wait
    slice and opens no hold. io.latency's "unlimited" depth (``UINT_MAX``) is
    drawn as *depth_cap* (the device's queue depth) when given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from emu import PerfettoTrace

#: ``UINT_MAX``: io.latency's "no depth limit".
_UNLIMITED_DEPTH = 0xFFFF_FFFF
#: Thread names for tracks that are not actors.
_COMPLETIONS = "completions"
#: The held-across trace events (``TaskStruct.account_sleep``) and the slice each becomes.
_HELD_ACROSS = {
    "mmap_sem_held_across_io": "IO under mmap_sem",
    "mmap_sem_held_across_throttle": "throttle under mmap_sem",
    "mmap_sem_held_across_fs_sleep": "fs sleep under mmap_sem",
}


class _Ids:
    """pid/tid numbering: the kernel's for tasks, by first appearance for the rest."""

    def __init__(self, out: PerfettoTrace, tasks: dict[str, tuple[int, int]]) -> None:
        self.out = out
        self.tasks = tasks
        #: Each task's process (``batch0`` of ``batch0.faulter``; a kernel thread is its own) → its tgid.
        self.tgids = {_process_of(actor): tgid for actor, (tgid, _pid) in tasks.items()}
        self.taken = {tgid for tgid, _pid in tasks.values()} | {pid for _tgid, pid in tasks.values()}
        self.pids: dict[str, int] = {}
        self.tids: dict[tuple[str, str], int] = {}
        self.nthreads: dict[str, int] = {}
        self.actors: dict[str, tuple[int, int]] = {}  # actor → (pid, tid), once named
        self.next_pid = 1

    def process(self, name: str) -> int:
        known = self.pids.get(name)
        if known is not None:
            return known
        pid = self.tgids.get(name)
        if pid is None:
            while self.next_pid in self.taken:
                self.next_pid += 1
            pid = self.next_pid
            self.taken.add(pid)
        self.pids[name] = pid
        self.nthreads[name] = 0
        self.out.process(pid, name)
        return pid

    def thread(self, process: str, thread: str) -> tuple[int, int]:
        pid = self.process(process)
        tid = self.tids.get((process, thread))
        if tid is None:
            self.nthreads[process] += 1
            tid = self.tids[(process, thread)] = 1_000_000 + 1000 * pid + self.nthreads[process]
            self.out.thread(pid, tid, thread)
        return pid, tid

    def actor(self, actor: str) -> tuple[int, int]:
        """(pid, tid) of an actor: a task's tgid and pid, or ``process.thread``, or a kernel actor alone in its process.

        The first call names the actor's process and thread; later ones
        only look the pair up.
        """
        known = self.actors.get(actor)
        if known is not None:
            return known
        name = _process_of(actor)
        task = self.tasks.get(actor)
        if task is None:
            ids = self.thread(name, actor)
        else:
            pid = self.process(name)
            if (name, actor) not in self.tids:
                self.tids[(name, actor)] = task[1]
                self.out.thread(pid, task[1], actor)
            ids = pid, task[1]
        self.actors[actor] = ids
        return ids


def _process_of(actor: str) -> str:
    """The Perfetto process of an actor: ``batch0`` of ``batch0.faulter``; an actor without a dot is its own."""
    process, dot, _thread = actor.partition(".")
    return process if dot else actor


#: Record keys that are not a slice's args.
_NOT_ARGS = ("seq", "ts", "actor", "event")
#: The events ``to_perfetto`` draws; it passes over the others (most of a trace: page-cache insertions, readahead, plugs).
DRAWN = frozenset(
    (
        *("page_fault_user", "fault_done", "blkcg_maybe_throttle_current", "iolatency_scale", *_HELD_ACROSS),
        *("mmap_lock_start_locking", "mmap_lock_acquire_returned", "mmap_lock_released", "rq_qos_throttle", "rq_qos_throttle_done"),
        *("block_bio_queue", "block_rq_issue", "block_rq_complete"),
    )
)


def _args(record: dict[str, Any]) -> dict[str, Any]:
    """The record's fields after seq, ts, actor and event, in their order."""
    args = record.copy()
    for key in _NOT_ARGS:
        args.pop(key, None)
    return args


def to_perfetto(
    records: Iterable[dict[str, Any]],
    *,
    depth_cap: int | None = None,
    out: PerfettoTrace | None = None,
    tasks: dict[str, tuple[int, int]] | None = None,
    end_ns: int = 0,
) -> PerfettoTrace:
    """Draw *records* (trace records, in order) as a Perfetto timeline.

    Args:
        records: the run's trace records (``Trace.records()`` or ``read_jsonl``).
        depth_cap: draw io.latency's unlimited depth as this value (the
            device's ``nr_requests``); without it, unlimited depth samples are
            left out of the depth counter.
        out: where to draw (a streaming ``PerfettoTrace(file)``); a new
            in-memory one by default.
        tasks: ``{actor: (tgid, pid)}`` of the run's tasks, so tracks carry
            the kernel's ids; without it every track is numbered by first
            appearance.
        end_ns: the trace's last time when *records* are only the drawn
            ones (``DrawnRecords.end_ns`` of ``actors.lab.drawn``): slices
            still open end at the later of it and the last record.

    Returns:
        The timeline (*out*); ``.write(path)`` renders an in-memory one as
        ``trace.perfetto.json``, a streamed one needs ``close()``.
    """
    out = PerfettoTrace() if out is None else out
    ids = _Ids(out, tasks or {})
    faults: dict[str, dict[str, Any]] = {}  # actor → open fault
    waits: dict[str, dict[str, Any]] = {}  # actor → open mmap_sem wait
    throttles: dict[tuple[str, int], dict[str, Any]] = {}  # (actor, bio) → open throttle
    holds: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (actor, mm) → open holds
    bios: dict[int, dict[str, Any]] = {}  # bio id → queued/issued, not complete
    delays: list[tuple[str, int, int, dict[str, Any]]] = []
    devices: dict[str | None, str] = {}  # dev "8:0" → the device actor
    scales: list[dict[str, Any]] = []
    hold_seq = 0
    last_ts = end_ns

    for record in records:
        ts = record["ts"]
        if ts > last_ts:
            last_ts = ts
        event = record["event"]
        if event not in DRAWN:
            continue
        actor = record.get("actor") or "<engine>"
        if event == "page_fault_user":
            ids.actor(actor)
            faults[actor] = {"ts": ts, "args": _args(record)}
        elif event == "fault_done":
            pid, tid = ids.actor(actor)
            opened = faults.pop(actor, None)
            start = ts - record.get("latency_ns", 0) if opened is None else opened["ts"]
            args = {**(opened or {}).get("args", {}), **_args(record)}
            name = "major fault" if record.get("major") else "fault"
            out.complete(name, pid, tid, start, ts - start, cat="fault", args=args)
        elif event == "mmap_lock_start_locking":
            ids.actor(actor)
            waits[actor] = {"ts": ts, "args": _args(record)}
            mm = record.get("mm")
            if mm is not None and "waiters" in record:
                out.counter(f"mmap_sem waiters {mm}", ids.process(mm), ts, {"waiters": record["waiters"]})
        elif event == "mmap_lock_acquire_returned":
            pid, tid = ids.actor(actor)
            opened = waits.pop(actor, None)
            if opened is not None:
                mode = "write" if record.get("write") else "read"
                args = {**opened["args"], **_args(record)}
                out.complete(f"mmap_sem wait ({mode})", pid, tid, opened["ts"], ts - opened["ts"], cat="mmap_sem", args=args)
            if record.get("success", True):
                hold_seq += 1
                holds.setdefault((actor, record.get("mm", "")), []).append(
                    {"ts": ts, "write": bool(record.get("write")), "n": hold_seq}
                )
        elif event == "mmap_lock_released":
            stack = holds.get((actor, record.get("mm", "")))
            if stack:
                _hold_slice(out, ids, actor, record.get("mm", ""), stack.pop(), ts, finished=True)
        elif event == "rq_qos_throttle":
            ids.actor(actor)
            throttles[(actor, record.get("bio", -1))] = {"ts": ts, "args": _args(record)}
        elif event == "rq_qos_throttle_done":
            pid, tid = ids.actor(actor)
            opened = throttles.pop((actor, record.get("bio", -1)), None)
            start = ts - record.get("waited_ns", 0) if opened is None else opened["ts"]
            args = {**(opened or {}).get("args", {}), **_args(record)}
            out.complete("io.latency throttle", pid, tid, start, ts - start, cat="throttle", args=args)
        elif event == "blkcg_maybe_throttle_current":
            ids.actor(actor)
            delays.append((actor, ts, record.get("delay_ns", 0), _args(record)))
        elif event == "block_bio_queue":
            pid, tid = ids.actor(actor)
            bio = bios.setdefault(record["bio"], {"ts": ts, "args": {}})
            bio["args"].update(_args(record))
            bio["ts"] = ts
            if actor in faults:
                bio["flow_from"] = (pid, tid, ts)
        elif event == "block_rq_issue":
            ids.actor(actor)
            bio = bios.setdefault(record["bio"], {"ts": ts, "args": _args(record)})
            bio["issue_ts"] = ts
            devices.setdefault(record.get("dev"), actor)
        elif event == "block_rq_complete":
            pid, tid = ids.actor(actor)
            devices.setdefault(record.get("dev"), actor)
            bio_id = record["bio"]
            opened = bios.pop(bio_id, {"ts": ts, "args": {}})
            args = {**opened["args"], **_args(record)}
            if "issue_ts" in opened:
                args["issue_ts_ns"] = opened["issue_ts"]
            name = f"bio {record.get('op', '')}".rstrip()
            out.async_slice(name, pid, tid, opened["ts"], ts - opened["ts"], id=f"bio:{bio_id}", cat="block", args=args)
            if "flow_from" in opened:
                cpid, ctid = ids.thread(actor, _COMPLETIONS)
                out.complete("bio complete", cpid, ctid, ts, 0, cat="block", args={"bio": bio_id})
                out.flow("bio", f"bio:{bio_id}", opened["flow_from"], (cpid, ctid, ts), cat="block")
        elif event in _HELD_ACROSS:
            pid, tid = ids.actor(actor)
            ns = record.get("ns", 0)
            out.complete(_HELD_ACROSS[event], pid, tid, ts - ns, ns, cat="inversion", args=_args(record))
        elif event == "iolatency_scale":
            scales.append(record)  # drawn at the end, once every device is known

    # Close what the end of the trace cut off.
    for actor, opened in faults.items():
        pid, tid = ids.actor(actor)
        out.complete("fault", pid, tid, opened["ts"], last_ts - opened["ts"], cat="fault", args={**opened["args"], "unfinished": True})
    for actor, opened in waits.items():
        pid, tid = ids.actor(actor)
        out.complete("mmap_sem wait", pid, tid, opened["ts"], last_ts - opened["ts"], cat="mmap_sem", args={**opened["args"], "unfinished": True})
    for (actor, _bio), opened in throttles.items():
        pid, tid = ids.actor(actor)
        out.complete("io.latency throttle", pid, tid, opened["ts"], last_ts - opened["ts"], cat="throttle", args={**opened["args"], "unfinished": True})
    for (actor, mm), stack in holds.items():
        for hold in stack:
            _hold_slice(out, ids, actor, mm, hold, last_ts, finished=False)
    for bio_id, opened in bios.items():
        device = devices.get(opened["args"].get("dev"))
        pid, tid = ids.actor(device) if device is not None else ids.thread("block", "unknown device")
        args = {**opened["args"], "unfinished": True}
        name = f"bio {opened['args'].get('op', '')}".rstrip()
        out.async_slice(name, pid, tid, opened["ts"], last_ts - opened["ts"], id=f"bio:{bio_id}", cat="block", args=args)
    for record in scales:
        # Logged by whoever triggered the change; drawn on the device's process.
        device = devices.get(record.get("dev"))
        pid = ids.actor(device)[0] if device is not None else ids.process(f"dev {record.get('dev')}")
        _iolatency_counter(out, pid, record, record["ts"], depth_cap)
    for actor, ts, delay, args in delays:
        pid, tid = ids.actor(actor)
        end = min(ts + delay, last_ts)
        out.complete("io.latency delay", pid, tid, ts, end - ts, cat="throttle", args=args)
    return out


def _hold_slice(out: PerfettoTrace, ids: _Ids, actor: str, mm: str, hold: dict[str, Any], end: int, *, finished: bool) -> None:
    mode = "write" if hold["write"] else "read"
    # Async tracks belong to a process; the tid only has to be a named thread of it.
    pid, tid = ids.thread(mm, "mmap_sem") if mm else ids.actor(actor)
    args: dict[str, Any] = {"holder": actor, "mm": mm, "mode": mode}
    if not finished:
        args["unfinished"] = True
    out.async_slice(
        f"mmap_sem {mode}", pid, tid, hold["ts"], end - hold["ts"], id=f"hold:{mm}:{actor}:{hold['n']}", cat="mmap_sem", args=args
    )


def _iolatency_counter(out: PerfettoTrace, pid: int, record: dict[str, Any], ts: int, depth_cap: int | None) -> None:
    if record.get("max_depth") is None and record.get("use_delay") is None:
        return  # a parent's cookie event
    values: dict[str, int] = {}
    depth = record.get("max_depth")
    if depth is not None:
        if depth >= _UNLIMITED_DEPTH:
            if depth_cap is not None:
                values["depth"] = depth_cap
        else:
            values["depth"] = depth
    if record.get("use_delay") is not None:
        values["use_delay"] = record["use_delay"]
    if values:
        out.counter(f"io.latency {record.get('blkcg') or '/'}", pid, ts, values)
