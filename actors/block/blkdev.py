"""The block device (an actor) and the task-context block paths that may sleep.

Mirrors, at v4.19-v5.4: ``block/blk-core.c`` (``submit_bio`` →
``generic_make_request``), ``block/blk-mq.c`` (``blk_mq_make_request``, tags,
dispatch, ``blk_mq_end_request`` → ``bio_endio``), ``block/blk-rq-qos.c``
(``rq_qos_throttle``/``rq_qos_wait``/``rq_qos_done_bio``), the io.latency hooks
of ``block/blk-iolatency.c`` and ``blkcg_schedule_throttle`` /
``blkcg_maybe_throttle_current`` of ``block/blk-cgroup.c``.

Theory of operation
-------------------

``submit_bio`` runs in the *submitting task's* actor, like the kernel runs it
in task context, and follows ``blk_mq_make_request`` (4.19) step by step:

0. ``blk_throtl_bio``: io.max may hold the bio back on its group's queue
   (``actors.block.blk_throttle``); ``submit_bio`` then returns without
   sleeping, and the ``kthrotld`` worker submits it again when its time
   comes (``blk_throtl_dispatch_work_fn``). Only a bio that passes is
   traced ``block_bio_queue`` and timed for io.latency from here;
1. merge into a request on the task's plug (``blk_attempt_plug_merge``), else
2. into a request still waiting for dispatch (``blk_mq_sched_bio_merge``);
   a merged bio is done here: never throttled, never timed by io.latency;
3. ``rq_qos_throttle``: io.latency decides, level by level from the bio's
   cgroup up, whether the task may take an inflight slot or must sleep on
   that group's ``emu.WaitQueue`` (``rq_qos_wait``): this is where a task
   holding ``mmap_sem`` is put to sleep;
4. ``blk_mq_get_request``: one of ``nr_requests`` tags, FIFO sleep beyond;
5. the new request goes on the plug (flushed at ``blk_finish_plug``, at 16
   requests or behind a 128 KiB one, or when the task sleeps) or straight to
   the device actor. The caller waits on its page, not here::

    task (submit_bio)                 device actor "sda"            engine callbacks
    block_bio_queue
    plug / dispatch-list merge ── block_bio_backmerge (done)
    per level: rq_qos_throttle ··sleep on WaitQueue··┐
    tag (block_sleeprq) ─ plug? ─ SubmitRequest ──▶ driver slot? block_rq_issue   (completion from
      (returns)                       else dispatch list (mergeable)            the service model)
                                                                    block_rq_complete
                                     ◀── next request ───────────── done_bio → wake
                                                                    bi_end_io(each bio)

Device model: a request that reached the device takes one of
``queue_depth`` hardware slots (driver tags; ``block_rq_issue``) or waits,
FIFO and still mergeable, on the dispatch list. In the hardware it is
served by the kind's service model (``actors.block.blk_dev_model``: flash
units and a shared link, or one disk head), unless a ``service_time`` hook
supplies the time. Completions are engine callbacks (interrupt context):
they must not block, and neither may ``bi_end_io``.

The io.latency timer is armed by submissions (1 s, if not pending) and not
re-armed by itself, so it stops one tick after IO stops, as in the kernel.

Fault injection. ``bio_error`` is the device's one error-injection point,
for READ and WRITE bios alike. It is called once per bio at completion,
before ``block_rq_complete`` is traced; ``True`` completes the bio with
``BLK_STS_IOERR`` (counted in ``nr_errors``), like a driver ending a request
it could not service with ``blk_mq_end_request(rq, BLK_STS_IOERR)``. The
failed request has held its tag and the hardware for its whole service time,
and io.latency accounts it like any other completion: the model is a media
error (null_blk's ``badblocks``, scsi_debug's medium-error injection),
decided by a ``should_fail()``-style check (lib/fault-inject.c) on the
completion side, where blk-mq has its own injection point
(``fail_io_timeout``: ``blk_should_fake_timeout()`` in
``blk_mq_complete_request()``). It is deliberately not ``fail_make_request``
(``should_fail_bio()`` in ``generic_make_request_checks()``), which fails a
bio at submission, before rq_qos and the device see it: no tag, no service
time, no io.latency sample. Bios reach the hook in completion order, so a
hook that draws from a random stream draws in that order.

Emulation notes:
    * One hardware queue and no elevator: the dispatch list is FIFO;
      ``op`` does not change the timing model.
    * The plug is flushed before the task sleeps in ``submit_bio`` (as
      ``schedule()`` flushes it); other sleeps inside a plugged section are
      the callers' to flush (``blk_flush_plug``).
    * ``blkcg_maybe_throttle_current`` sleeps the whole delay; a fatal signal
      skips it but does not cut a sleep short.
    * Settings in ``io_latency`` for another device (``"8:16 target=..."``)
      are ignored by this one.
    * XX: the ``SubmitRequest`` message belongs in ``actors/messages.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol, final

import attrs

import emu
from actors.block.bio import Bio
from actors.block.blk_dev_model import DeviceParams, make_model
from actors.block.blk_merge import BLK_MAX_REQUEST_COUNT, BLK_PLUG_FLUSH_SIZE, BlkPlug, Request, attempt_merge
from actors.block.blk_cgroup import BlkcgHierarchy, parse_io_latency, split_io_latency
from actors.block.blk_iolatency import BlkIolatency, Decisions
from actors.block.blk_iolatency_rules import IolatencyVersion
from actors.block.blk_iolatency_stat import IolatencyStatistics
from actors.block.blk_throttle import BlkThrottle, IoMax
from actors.kernel_types import BlkStatus, ReqFlag
from actors.sched.core import cpu_work, wakeup
from emu import NSEC_PER_SEC, KernelBug


class Current(Protocol):
    """What the block paths need of the task (``current``; actors/sched/task.py).

    Attributes:
        actor: the task's engine actor (its log, its sleeps).
        comm, pid: names for the trace.
        blkcg: path of the task's io cgroup.
        throttle_queue: ``current->throttle_queue``: set by submission when
            a level has ``use_delay``; read and cleared on return to user.
        plug: ``current->plug`` (``None`` when not plugged); paths that never
            plug may leave it out.
    """

    actor: emu.Actor
    comm: str
    pid: int
    blkcg: str
    throttle_queue: BlockDevice | None

    def fatal_signal_pending(self) -> bool: ...

    def account_sleep(self, kind: str, ns: int) -> None: ...


@attrs.frozen(kw_only=True)
class SubmitRequest:
    """``blk_mq_try_issue_directly``/plug flush: hand a new request to the device."""

    rq: Request


@attrs.frozen(kw_only=True)
class BlkdevStatistics:
    """The request queue and device at one instant.

    ``in_flight`` are tags in use, ``queued`` submitters sleeping for a tag,
    ``dispatching`` requests waiting for a hardware slot, ``in_service``
    requests in the hardware. ``nr_submitted`` counts bios, ``nr_merged``
    those of them that joined another bio's request, ``nr_requests_done``
    completed requests.
    """

    name: str
    dev: str
    kind: str
    nr_requests: int
    queue_depth: int
    rotational: bool
    in_flight: int
    queued: int
    dispatching: int
    in_service: int
    nr_submitted: int
    nr_merged: int
    nr_requests_done: int
    nr_completed: int
    nr_errors: int
    nr_throttled: int
    throttle_wait_ns: int
    timer_pending: bool


def bio_issue_as_root_blkg(bio: Bio) -> bool:
    """Mirror of ``bio_issue_as_root_blkg()`` (include/linux/blk-cgroup.h): REQ_META or REQ_SWAP."""
    return bool(bio.flags & (ReqFlag.META | ReqFlag.SWAP))


def _bio_fields(q: BlockDevice, bio: Bio) -> dict[str, Any]:
    return {"dev": q.dev, "bio": bio.bio_id, "op": bio.op.name, "nr_sector": bio.nr_sectors, "blkcg": bio.blkcg}


def _rq_fields(q: BlockDevice, rq: Request) -> dict[str, Any]:
    first = rq.bios[0]
    return {"dev": q.dev, "bio": first.bio_id, "op": first.op.name, "nr_sector": rq.nr_sectors, "blkcg": rq.blkcg,
            "sector": rq.sector, "nr_bios": len(rq.bios)}  # fmt: skip


@final
class BlockDevice:
    """A request queue and its device, as an engine actor (``struct request_queue``).

    Args:
        engine: the engine; the device actor is spawned as a daemon named *name*.
        name: disk name (``"sda"``), also the actor's name.
        dev: ``"MAJ:MIN"``, as io.latency settings name it.
        nr_requests: tags (``q->nr_requests``); io.latency's ``qd``.
        params: the device (``blk_dev_model.device_params``); without it a
            flash device is built from the four arguments below.
        rotational: selects io.latency's mean rule instead of the SSD rule.
        parallelism: requests the device services at once.
        base_latency_ns: fixed cost of one IO.
        bandwidth_bytes_per_s: transfer rate.
        jitter_permille: uniform multiplicative jitter, ± this many 1/1000.
        io_latency: cgroup path → ``io.latency`` text (``"target=2000"``).
        io_max: cgroup path → its ``io.max`` limits (those for another
            device are ignored); any limit makes ``throtl`` active.
        hierarchy: the cgroups, shared with other devices (congestion).
        bio_error: the error-injection point (module header): called once
            per bio, READ or WRITE, at completion; ``True`` fails it with
            ``BlkStatus.IOERR``. ``None``: no bio ever fails.
        service_time: replaces the service model's time: first bio → ns.
        iolatency: which kernel's io.latency rules (``Policy.iolatency``).

    Raises:
        ValueError: a bad ``io.latency`` string or parameter.
    """

    def __init__(
        self,
        engine: emu.Engine,
        *,
        name: str = "sda",
        dev: str = "8:0",
        nr_requests: int = 64,
        params: DeviceParams | None = None,
        rotational: bool = False,
        parallelism: int = 1,
        base_latency_ns: int = 100_000,
        bandwidth_bytes_per_s: int = 500 * 1024 * 1024,
        jitter_permille: int = 0,
        io_latency: Mapping[str, str] | None = None,
        io_max: Mapping[str, IoMax] | None = None,
        hierarchy: BlkcgHierarchy | None = None,
        bio_error: Callable[[Bio], bool] | None = None,
        service_time: Callable[[Bio], int] | None = None,
        iolatency: IolatencyVersion = "5.4",
    ) -> None:
        if params is None:
            params = DeviceParams(kind="ssd", queue_depth=nr_requests, parallelism=parallelism, rotational=rotational,
                                  latency_ns=base_latency_ns, bandwidth=bandwidth_bytes_per_s,
                                  jitter_permille=jitter_permille)  # fmt: skip
        if params.parallelism < 1 or params.queue_depth < 1 or params.bandwidth < 1 or not 0 <= params.jitter_permille < 1000:
            raise ValueError("need parallelism >= 1, queue_depth >= 1, bandwidth >= 1, 0 <= jitter_permille < 1000")
        self.engine = engine
        self.name = name
        self.dev = dev
        self.nr_requests = nr_requests
        self.params = params
        self.rotational = params.rotational
        self.bio_error = bio_error
        self.service_time = service_time
        limits: dict[str, int | None] = {}
        for path, text in (io_latency or {}).items():
            target_dev, _body = split_io_latency(text)
            if target_dev is None or target_dev == dev:
                limits[path] = parse_io_latency(text)
        # blk_queue_depth(): the SCSI midlayer sets q->queue_depth (scsi_change_queue_depth →
        # blk_set_queue_depth); NVMe leaves it 0, so 4.19 falls back to nr_requests.
        queue_depth = None if params.kind == "nvme" else params.queue_depth
        self.iolat = BlkIolatency(
            nr_requests=nr_requests, rotational=self.rotational, limits=limits, hierarchy=hierarchy,
            now_ns=engine.now_ns, version=iolatency, queue_depth=queue_depth,
        )  # fmt: skip
        self.hierarchy = self.iolat.hierarchy
        self._rq_waits: dict[str, emu.WaitQueue] = {}
        self._tracked: dict[int, None] = {}  # BIO_TRACKED
        self._tag_wait = emu.WaitQueue(engine, f"blk_mq_get_tag {name}", self._tag_holders)
        self._dispatch: deque[Request] = deque()  # tagged, waiting for a hardware slot (mergeable)
        self._hw_wait: deque[Request] = deque()  # in the hardware, waiting for the service model
        self._tags_used = 0
        self._hw_used = 0
        self._timer_pending = False
        self._nr_submitted = self._nr_merged = self._nr_completed = self._nr_errors = self._nr_requests_done = 0
        self._nr_throttled = self._throttle_wait_ns = 0
        self.actor = engine.spawn(name, self._run, daemon=True)
        self.model = make_model(params, self.actor.rng("timing"))
        self.throtl = BlkThrottle(engine, dev=dev, limits=io_max or {}, log=self.actor.log)

    def __repr__(self) -> str:
        return f"<BlockDevice {self.name} {self.dev} {self.params.kind}>"

    # -- the device actor ---------------------------------------------------

    async def _run(self, actor: emu.Actor) -> None:
        while True:
            envelope = await actor.receive()
            msg = envelope.msg
            if not isinstance(msg, SubmitRequest):
                raise KernelBug(f"{self.name}: unexpected message {type(msg).__name__}")
            self._queue_rq(msg.rq)

    def _queue_rq(self, rq: Request) -> None:
        """``blk_mq_try_issue_directly``: a driver slot if one is free and nobody waits, else the dispatch list."""
        if self._hw_used < self.params.queue_depth and not self._dispatch:
            self._issue(rq)
        else:
            self._dispatch.append(rq)

    def _tag_holders(self) -> list[str]:
        return [f"{self.name}: {self._tags_used}/{self.nr_requests} tags in flight"]

    def _issue(self, rq: Request) -> None:
        """``blk_mq_start_request`` → ``queue_rq``: the request enters the hardware."""
        self._hw_used += 1
        rq.issue_ns = now = self.engine.now_ns
        for bio in rq.bios:
            bio.issue_ns = now
        self.actor.log.info("block_rq_issue", **_rq_fields(self, rq))
        if self.model.can_start():
            self._start_service(rq)
        else:
            self._hw_wait.append(rq)

    def _start_service(self, rq: Request) -> None:
        now = self.engine.now_ns
        if self.service_time is not None:
            self.model.busy += 1
            done = now + max(0, self.service_time(rq.bios[0]))
        else:
            done = self.model.start(rq.sector, rq.nr_bytes, now)
        self.engine.call_later(done - now, self._complete, rq)

    def _complete(self, rq: Request) -> None:
        """Completion interrupt: ``blk_mq_end_request`` → ``bio_endio`` of each bio (must not block)."""
        self.model.finish()
        self._hw_used -= 1
        self._tags_used -= 1
        self._nr_requests_done += 1
        now = self.engine.now_ns
        first = True
        for bio in rq.bios:
            if self.bio_error is not None and self.bio_error(bio):  # the injection point (module header)
                bio.status = BlkStatus.IOERR
                self._nr_errors += 1
            bio.complete_ns = now
            self._nr_completed += 1
            event = "block_rq_complete" if first else "block_bio_complete"
            self.actor.log.info(event, **_bio_fields(self, bio), error=int(bio.status), lat_ns=now - bio.queue_ns)
            first = False
            # bio_endio(): rq_qos_done_bio() runs before ->bi_end_io.
            if bio.bio_id in self._tracked:
                del self._tracked[bio.bio_id]
                decisions = self.iolat.done_bio(
                    bio.blkcg, now_ns=now, issue_ns=bio.queue_ns, issue_as_root=bio_issue_as_root_blkg(bio)
                )
                self._apply(decisions, self.actor.log)
            if bio.bi_end_io is not None:
                bio.bi_end_io(bio)
        if self._hw_wait and self.model.can_start():
            self._start_service(self._hw_wait.popleft())
        if self._dispatch and self._hw_used < self.params.queue_depth:
            self._issue(self._dispatch.popleft())
        key = self._tag_wait.first()
        if key is not None:
            # blk_mq_put_tag() → sbitmap wake-up: hand the tag to the first sleeper.
            self._tags_used += 1
            self._tag_wait.wake(key)

    # -- io.latency glue -----------------------------------------------------

    def _rq_wait(self, path: str) -> emu.WaitQueue:
        """The wait queue of a group's ``rq_wait`` (created on first use)."""
        wq = self._rq_waits.get(path)
        if wq is None:

            def holders(path: str = path) -> list[str]:
                st = self.iolat.statistics(path)
                return [f"{self.name}:{path or '/'} inflight={st.nr_inflight} max_depth={st.depth}"]

            wq = emu.WaitQueue(self.engine, f"rq_qos_wait {self.name}:{path}", holders)
            self._rq_waits[path] = wq
        return wq

    def _apply(self, decisions: Decisions, log: Any) -> None:
        """Trace the scale events, then wake the granted waiters in order."""
        for event in decisions.events:
            log.info("iolatency_scale", dev=self.dev, **attrs.asdict(event))
        for path, key in decisions.wakes:
            if not self._rq_wait(path).wake(key):
                # The sleeper is gone (teardown): iolat_cleanup_cb().
                self._apply(self.iolat.iolat_cleanup(path), log)

    def _arm_timer(self) -> None:
        """``if (!timer_pending(&blkiolat->timer)) mod_timer(..., jiffies + HZ)``."""
        if not self._timer_pending:
            self._timer_pending = True
            self.engine.call_later(NSEC_PER_SEC, self._blkiolatency_timer_fn)

    def _blkiolatency_timer_fn(self) -> None:
        self._timer_pending = False
        for event in self.iolat.timer_fn(self.engine.now_ns):
            self.actor.log.info("iolatency_scale", dev=self.dev, **attrs.asdict(event))

    # -- queries --------------------------------------------------------------

    def blk_cgroup_congested(self, blkcg: str) -> bool:
        """Mirror of ``blk_cgroup_congested()`` for a task in *blkcg*; readahead skips when true."""
        return self.hierarchy.blk_cgroup_congested(blkcg)

    def iolatency_statistics(self, blkcg: str) -> IolatencyStatistics:
        """io.latency statistics of one group on this queue."""
        return self.iolat.statistics(blkcg)

    def statistics(self) -> BlkdevStatistics:
        """A snapshot of the queue and device."""
        return BlkdevStatistics(
            name=self.name,
            dev=self.dev,
            kind=self.params.kind,
            nr_requests=self.nr_requests,
            queue_depth=self.params.queue_depth,
            rotational=self.rotational,
            in_flight=self._tags_used,
            queued=len(self._tag_wait),
            dispatching=len(self._dispatch),
            in_service=self._hw_used,
            nr_submitted=self._nr_submitted,
            nr_merged=self._nr_merged,
            nr_requests_done=self._nr_requests_done,
            nr_completed=self._nr_completed,
            nr_errors=self._nr_errors,
            nr_throttled=self._nr_throttled,
            throttle_wait_ns=self._throttle_wait_ns,
            timer_pending=self._timer_pending,
        )


# -- task-context paths --------------------------------------------------------


async def submit_bio(current: Current, bio: Bio) -> None:
    """Mirror of ``submit_bio()`` → ``generic_make_request()`` → ``blk_mq_make_request()`` (4.19).

    Runs in *current*'s context and may sleep in ``rq_qos_wait`` (io.latency)
    or for a tag. Returns once the bio is merged, plugged or handed to the
    device, without waiting for it. Charges ``[costs] bio_build`` (and any
    CPU work the path accrued) first.

    Raises:
        KernelBug: the bio has no ``bi_disk``.
    """
    q = bio.bi_disk
    if not isinstance(q, BlockDevice):
        raise KernelBug(f"submit_bio: bio {bio.bio_id} has no bi_disk")
    actor = current.actor
    await cpu_work(current, "bio_build")
    if q.throtl.blk_throtl_bio(bio):
        return
    bio.queue_ns = actor.now_ns  # bio_issue_init(), in blkcg_bio_issue_check()
    if not bio.submitter:
        bio.submitter = current.comm
    actor.log.info("block_bio_queue", **_bio_fields(q, bio), comm=current.comm, pid=current.pid)
    q._nr_submitted += 1
    plug: BlkPlug | None = getattr(current, "plug", None)
    # blk_attempt_plug_merge(), then blk_mq_sched_bio_merge(): a merged bio is done.
    if (plug is not None and attempt_merge(plug.mq_list, bio, actor.log, q.dev)) or attempt_merge(q._dispatch, bio, actor.log, q.dev):
        q._nr_merged += 1
        return
    await blkcg_iolatency_throttle(current, q, bio)
    await blk_mq_get_tag(current, q, bio)
    rq = Request(bio)
    if plug is None:
        actor.send(q.actor, SubmitRequest(rq=rq))
        return
    # plug && q->nr_hw_queues == 1
    mq_list = plug.mq_list
    if len(mq_list) >= BLK_MAX_REQUEST_COUNT or (mq_list and mq_list[-1].nr_bytes >= BLK_PLUG_FLUSH_SIZE):
        blk_flush_plug_list(current, plug)
    if not mq_list:
        actor.log.info("block_plug", dev=q.dev, comm=current.comm)
    mq_list.append(rq)


async def submit_bio_wait(current: Current, bio: Bio, what: str) -> None:
    """Mirror of ``submit_bio_wait()`` (block/bio.c): submit, flush the plug, sleep until done (``io``)."""
    wq = emu.WaitQueue(current.actor.engine, what)
    state = {"done": False}
    end_io = bio.bi_end_io

    def done(bio: Bio) -> None:
        if end_io is not None:
            end_io(bio)
        state["done"] = True
        wq.wake("io")

    bio.bi_end_io = done
    await submit_bio(current, bio)
    blk_flush_plug(current)
    if not state["done"]:
        start = current.actor.now_ns
        await wq.wait(current.actor, "io")
        await wakeup(current)
        current.account_sleep("io", current.actor.now_ns - start)


async def blk_throtl_dispatch_work_fn(current: Current, q: BlockDevice) -> None:
    """Mirror of ``blk_throtl_dispatch_work_fn()`` (block/blk-throttle.c, v5.10): the ``kthrotld`` worker.

    Submits, under a plug and from its own context, every bio io.max let
    out; each passes the throttle (``BIO_THROTTLED``) and continues to
    merging, io.latency and the tags, where it is the worker that may sleep.
    """
    while True:
        bios = q.throtl.take_dispatched()
        if not bios:
            await q.throtl.work.wait(current.actor, "idle")
            continue
        blk_start_plug(current)
        for bio in bios:
            await submit_bio(current, bio)
        blk_finish_plug(current)


def blk_start_plug(current: Current) -> None:
    """Mirror of ``blk_start_plug()``: hold requests back until ``blk_finish_plug`` (no nesting)."""
    if getattr(current, "plug", None) is None:
        current.plug = BlkPlug()


def blk_finish_plug(current: Current) -> None:
    """Mirror of ``blk_finish_plug()``: flush the plug and drop it."""
    plug = getattr(current, "plug", None)
    if plug is not None:
        blk_flush_plug_list(current, plug)
        current.plug = None


def blk_flush_plug(current: Current) -> None:
    """``blk_schedule_flush_plug()``: what ``schedule()`` does for a plugged task about to sleep."""
    plug = getattr(current, "plug", None)
    if plug is not None and plug.mq_list:
        blk_flush_plug_list(current, plug)


def blk_flush_plug_list(current: Current, plug: BlkPlug) -> None:
    """Mirror of ``blk_mq_flush_plug_list()``: send the plugged requests to their device, in order."""
    requests, plug.mq_list[:] = list(plug.mq_list), []
    if not requests:
        return
    q = requests[0].bios[0].bi_disk
    current.actor.log.info("block_unplug", dev=q.dev, depth=len(requests), comm=current.comm)
    for rq in requests:
        current.actor.send(rq.bios[0].bi_disk.actor, SubmitRequest(rq=rq))


async def blk_mq_get_tag(current: Current, q: BlockDevice, bio: Bio) -> None:
    """Mirror of ``blk_mq_get_request()`` → ``blk_mq_get_tag()``: one of ``nr_requests`` tags.

    With every tag in flight the submitter flushes its plug and sleeps
    (``io_schedule``) until a completion hands it one, FIFO; the legacy
    ``block_sleeprq`` tracepoint names this sleep.
    """
    if q._tags_used < q.nr_requests and not len(q._tag_wait):
        q._tags_used += 1
        return
    actor = current.actor
    start = actor.now_ns
    blk_flush_plug(current)
    actor.log.info("block_sleeprq", dev=q.dev, bio=bio.bio_id, comm=current.comm, pid=current.pid)
    await q._tag_wait.wait(actor, bio.bio_id)
    await wakeup(current)
    current.account_sleep("io", actor.now_ns - start)


async def blkcg_iolatency_throttle(current: Current, q: BlockDevice, bio: Bio) -> None:
    """Mirror of ``rq_qos_throttle()`` → ``blkcg_iolatency_throttle()``.

    Walks the bio's cgroup and its ancestors (root excluded), leaf first. At
    each level: follow the parent's scale cookie (``check_scale_change``),
    mark the task for induced delay if the level has ``use_delay``, then take
    an inflight slot or sleep FIFO (flushing the plug first) until a
    completion grants one, then pay ``[costs] wakeup``; in 4.19 the woken
    task then tries for the slot itself and sleeps again, at the tail, if a
    newcomer took it during that wake-up. REQ_META /
    REQ_SWAP bios and tasks with a fatal signal never sleep. Arms the 1 s
    timer afterwards.
    """
    iolat = q.iolat
    actor = current.actor
    levels = iolat.levels(bio.blkcg, now_ns=actor.now_ns)
    if not levels:
        return
    q._tracked[bio.bio_id] = None
    issue_as_root = bio_issue_as_root_blkg(bio)
    for path in levels:
        q._apply(iolat.check_scale_change(path, actor.now_ns), actor.log)
        verdict = iolat.iolatency_throttle(
            path, bio.bio_id, issue_as_root=issue_as_root, fatal_signal_pending=current.fatal_signal_pending()
        )
        if verdict.schedule_throttle:
            blkcg_schedule_throttle(current, q)
        if verdict.wait:
            # rq_qos_wait(): io_schedule() until rq_qos_wake_function hands us a slot.
            st = iolat.statistics(path)
            start = actor.now_ns
            actor.log.info(
                "rq_qos_throttle", dev=q.dev, bio=bio.bio_id, blkcg=path, inflight=st.nr_inflight, max_depth=st.depth,
                comm=current.comm, pid=current.pid,
            )  # fmt: skip
            blk_flush_plug(current)
            await q._rq_wait(path).wait(actor, bio.bio_id)
            await wakeup(current)
            while not iolat.handoff and not iolat.iolatency_retry(path, bio.bio_id):
                await q._rq_wait(path).wait(actor, bio.bio_id)
                await wakeup(current)
            waited = actor.now_ns - start
            q._nr_throttled += 1
            q._throttle_wait_ns += waited
            actor.log.info("rq_qos_throttle_done", dev=q.dev, bio=bio.bio_id, blkcg=path, waited_ns=waited)
            current.account_sleep("throttle", waited)
    q._arm_timer()


def blkcg_schedule_throttle(current: Current, q: BlockDevice) -> None:
    """Mirror of ``blkcg_schedule_throttle()``: pay the delay on return to user (set_notify_resume)."""
    current.throttle_queue = q


async def blkcg_maybe_throttle_current(current: Current) -> int:
    """Mirror of ``blkcg_maybe_throttle_current()``: the induced delay, on return to user space.

    If a submission marked the task, sleep ``min(accumulated delay, 250 ms)``
    of its cgroup (the largest over levels with ``use_delay``), holding no
    locks. Returns the nanoseconds slept.
    """
    q = current.throttle_queue
    if q is None:
        return 0
    current.throttle_queue = None
    actor = current.actor
    delay_ns = q.iolat.blkcg_maybe_throttle_blkg(current.blkcg, actor.now_ns)
    if not delay_ns or current.fatal_signal_pending():
        return 0
    actor.log.info(
        "blkcg_maybe_throttle_current", dev=q.dev, blkcg=current.blkcg, delay_ns=delay_ns, comm=current.comm,
        pid=current.pid,
    )  # fmt: skip
    await actor.sleep(delay_ns)
    current.account_sleep("delay", delay_ns)
    return delay_ns
