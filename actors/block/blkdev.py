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
in task context. io.latency decides there, level by level from the bio's
cgroup up, whether the task may take an inflight slot or must sleep on that
group's ``emu.WaitQueue`` (``rq_qos_wait``): this is where a task holding
``mmap_sem`` is put to sleep. Once through, the bio is cast to the device
actor and ``submit_bio`` returns; the caller waits on its page, not here::

    task (submit_bio)                 device actor "sda"          engine callbacks
    block_bio_queue
    per level: check_scale_change
               rq_qos_throttle ··sleep on WaitQueue··┐
    ─ SubmitBio ───────────────────▶ tag? block_rq_issue          (completion at
      (returns)                        channel? service ─────────▶ issue + service)
                                                                  block_rq_complete
                                     ◀── next request ─────────── done_bio → wake
                                                                  bi_end_io(bio)

Device model: ``nr_requests`` tags; bios beyond wait FIFO for a tag. A tagged
request waits FIFO for one of ``parallelism`` channels, then is serviced for
``base_latency_ns + nr_bytes * 1e9 // bandwidth_bytes_per_s``, scaled by a
uniform multiplicative jitter of ±``jitter_permille``/1000 drawn from the
device actor's ``rng("timing")`` (one draw per IO, none when 0), unless a
``service_time`` hook supplies the time. Completions are engine callbacks
(interrupt context): they must not block, and neither may ``bi_end_io``.

The io.latency timer is armed by submissions (1 s, if not pending) and not
re-armed by itself, so it stops one tick after IO stops, as in the kernel.

Fault injection. ``bio_error`` is the device's one error-injection point,
for READ and WRITE bios alike. It is called once per bio at completion,
before ``block_rq_complete`` is traced; ``True`` completes the bio with
``BLK_STS_IOERR`` (counted in ``nr_errors``), like a driver ending a request
it could not service with ``blk_mq_end_request(rq, BLK_STS_IOERR)``. The
failed request has held its tag and a channel for its whole service time,
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
    * One hardware queue, no merging, no plugging, no elevator; ``op`` does
      not change the timing model.
    * ``blkcg_maybe_throttle_current`` sleeps the whole delay; a fatal signal
      skips it but does not cut a sleep short.
    * Settings in ``io_latency`` for another device (``"8:16 target=..."``)
      are ignored by this one.
    * XX: the ``SubmitBio`` message belongs in ``actors/messages.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol, final

import attrs

import emu
from actors.block.bio import Bio
from actors.block.blk_cgroup import BlkcgHierarchy, parse_io_latency, split_io_latency
from actors.block.blk_iolatency import BlkIolatency, Decisions
from actors.block.blk_iolatency_stat import IolatencyStatistics
from actors.kernel_types import BlkStatus, ReqFlag
from emu import NSEC_PER_SEC, KernelBug


class Current(Protocol):
    """What the block paths need of the task (``current``; actors/sched/task.py).

    Attributes:
        actor: the task's engine actor (its log, its sleeps).
        comm, pid: names for the trace.
        blkcg: path of the task's io cgroup.
        throttle_queue: ``current->throttle_queue``: set by submission when
            a level has ``use_delay``; read and cleared on return to user.
    """

    actor: emu.Actor
    comm: str
    pid: int
    blkcg: str
    throttle_queue: BlockDevice | None

    def fatal_signal_pending(self) -> bool: ...

    def account_sleep(self, kind: str, ns: int) -> None: ...


@attrs.frozen(kw_only=True)
class SubmitBio:
    """``submit_bio()`` past rq_qos: hand *bio* to the device (blk_mq_make_request)."""

    bio: Bio


@attrs.frozen(kw_only=True)
class BlkdevStatistics:
    """The request queue and device at one instant.

    ``in_flight`` are tags in use, ``queued`` submitters sleeping for a tag,
    ``in_service`` requests on a channel.
    """

    name: str
    dev: str
    nr_requests: int
    rotational: bool
    in_flight: int
    queued: int
    in_service: int
    nr_submitted: int
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


@final
class BlockDevice:
    """A request queue and its device, as an engine actor (``struct request_queue``).

    Args:
        engine: the engine; the device actor is spawned as a daemon named *name*.
        name: disk name (``"sda"``), also the actor's name.
        dev: ``"MAJ:MIN"``, as io.latency settings name it.
        nr_requests: tags (queue depth); io.latency's ``qd``.
        rotational: selects io.latency's mean rule instead of the SSD rule.
        parallelism: requests the device services at once.
        base_latency_ns: fixed cost of one IO.
        bandwidth_bytes_per_s: transfer rate.
        jitter_permille: uniform multiplicative jitter, ± this many 1/1000.
        io_latency: cgroup path → ``io.latency`` text (``"target=2000"``).
        hierarchy: the cgroups, shared with other devices (congestion).
        bio_error: the error-injection point (module header): called once
            per bio, READ or WRITE, at completion; ``True`` fails it with
            ``BlkStatus.IOERR``. ``None``: no bio ever fails.
        service_time: replaces the timing model: bio → service ns.

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
        rotational: bool = False,
        parallelism: int = 1,
        base_latency_ns: int = 100_000,
        bandwidth_bytes_per_s: int = 500 * 1024 * 1024,
        jitter_permille: int = 0,
        io_latency: Mapping[str, str] | None = None,
        hierarchy: BlkcgHierarchy | None = None,
        bio_error: Callable[[Bio], bool] | None = None,
        service_time: Callable[[Bio], int] | None = None,
    ) -> None:
        if parallelism < 1 or bandwidth_bytes_per_s < 1 or not 0 <= jitter_permille < 1000:
            raise ValueError("need parallelism >= 1, bandwidth_bytes_per_s >= 1, 0 <= jitter_permille < 1000")
        self.engine = engine
        self.name = name
        self.dev = dev
        self.nr_requests = nr_requests
        self.rotational = rotational
        self.parallelism = parallelism
        self.base_latency_ns = base_latency_ns
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.jitter_permille = jitter_permille
        self.bio_error = bio_error
        self.service_time = service_time
        limits: dict[str, int | None] = {}
        for path, text in (io_latency or {}).items():
            target_dev, _body = split_io_latency(text)
            if target_dev is None or target_dev == dev:
                limits[path] = parse_io_latency(text)
        self.iolat = BlkIolatency(
            nr_requests=nr_requests, rotational=rotational, limits=limits, hierarchy=hierarchy, now_ns=engine.now_ns
        )
        self.hierarchy = self.iolat.hierarchy
        self._rq_waits: dict[str, emu.WaitQueue] = {}
        self._tracked: dict[int, None] = {}  # BIO_TRACKED
        self._tag_wait = emu.WaitQueue(engine, f"blk_mq_get_tag {name}", self._tag_holders)
        self._hw_queue: deque[Bio] = deque()  # tagged, waiting for a channel
        self._tags_used = 0
        self._in_service = 0
        self._timer_pending = False
        self._nr_submitted = self._nr_completed = self._nr_errors = 0
        self._nr_throttled = self._throttle_wait_ns = 0
        self.actor = engine.spawn(name, self._run, daemon=True)

    def __repr__(self) -> str:
        return f"<BlockDevice {self.name} {self.dev}>"

    # -- the device actor ---------------------------------------------------

    async def _run(self, actor: emu.Actor) -> None:
        while True:
            envelope = await actor.receive()
            msg = envelope.msg
            if not isinstance(msg, SubmitBio):
                raise KernelBug(f"{self.name}: unexpected message {type(msg).__name__}")
            self._blk_mq_make_request(msg.bio)

    def _blk_mq_make_request(self, bio: Bio) -> None:
        """Mirror of ``blk_mq_make_request()`` past rq_qos and the tag: issue the request."""
        self._nr_submitted += 1
        self._issue(bio)

    def _tag_holders(self) -> list[str]:
        return [f"{self.name}: {self._tags_used}/{self.nr_requests} tags in flight"]

    def _issue(self, bio: Bio) -> None:
        """``blk_mq_start_request`` → ``queue_rq``: the request holds the submitter's tag."""
        bio.issue_ns = self.engine.now_ns
        self.actor.log.info("block_rq_issue", **_bio_fields(self, bio))
        if self._in_service < self.parallelism:
            self._start_service(bio)
        else:
            self._hw_queue.append(bio)

    def _start_service(self, bio: Bio) -> None:
        self._in_service += 1
        self.engine.call_later(self._service_ns(bio), self._complete, bio)

    def _service_ns(self, bio: Bio) -> int:
        """The device timing model (see the module header); integer ns."""
        if self.service_time is not None:
            return max(0, self.service_time(bio))
        ns = self.base_latency_ns + bio.nr_bytes * NSEC_PER_SEC // self.bandwidth_bytes_per_s
        if self.jitter_permille:
            j = self.jitter_permille
            ns = ns * (1000 + self.actor.rng("timing").randint(-j, j)) // 1000
        return ns

    def _complete(self, bio: Bio) -> None:
        """Completion interrupt: ``blk_mq_end_request`` → ``bio_endio`` (must not block)."""
        self._in_service -= 1
        self._tags_used -= 1
        now = self.engine.now_ns
        if self.bio_error is not None and self.bio_error(bio):  # the injection point (module header)
            bio.status = BlkStatus.IOERR
            self._nr_errors += 1
        bio.complete_ns = now
        self._nr_completed += 1
        self.actor.log.info(
            "block_rq_complete", **_bio_fields(self, bio), error=int(bio.status), lat_ns=now - bio.queue_ns
        )
        # bio_endio(): rq_qos_done_bio() runs before ->bi_end_io.
        if bio.bio_id in self._tracked:
            del self._tracked[bio.bio_id]
            decisions = self.iolat.done_bio(
                bio.blkcg, now_ns=now, issue_ns=bio.queue_ns, issue_as_root=bio_issue_as_root_blkg(bio)
            )
            self._apply(decisions, self.actor.log)
        if bio.bi_end_io is not None:
            bio.bi_end_io(bio)
        if self._hw_queue and self._in_service < self.parallelism:
            self._start_service(self._hw_queue.popleft())
        for key in self._tag_wait:
            # blk_mq_put_tag() → sbitmap wake-up: hand the tag to the first sleeper.
            self._tags_used += 1
            self._tag_wait.wake(key)
            break

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
            nr_requests=self.nr_requests,
            rotational=self.rotational,
            in_flight=self._tags_used,
            queued=len(self._tag_wait),
            in_service=self._in_service,
            nr_submitted=self._nr_submitted,
            nr_completed=self._nr_completed,
            nr_errors=self._nr_errors,
            nr_throttled=self._nr_throttled,
            throttle_wait_ns=self._throttle_wait_ns,
            timer_pending=self._timer_pending,
        )


# -- task-context paths --------------------------------------------------------


async def submit_bio(current: Current, bio: Bio) -> None:
    """Mirror of ``submit_bio()`` → ``generic_make_request()`` → ``blk_mq_make_request()``.

    Runs in *current*'s context and may sleep in ``rq_qos_wait`` (io.latency).
    Returns once the bio is handed to the device, without waiting for it.

    Raises:
        KernelBug: the bio has no ``bi_disk``.
    """
    q = bio.bi_disk
    if not isinstance(q, BlockDevice):
        raise KernelBug(f"submit_bio: bio {bio.bio_id} has no bi_disk")
    actor = current.actor
    bio.queue_ns = actor.now_ns  # bio_issue_init(), in blkcg_bio_issue_check()
    if not bio.submitter:
        bio.submitter = current.comm
    actor.log.info("block_bio_queue", **_bio_fields(q, bio), comm=current.comm, pid=current.pid)
    await blkcg_iolatency_throttle(current, q, bio)
    await blk_mq_get_tag(current, q, bio)
    actor.send(q.actor, SubmitBio(bio=bio))


async def blk_mq_get_tag(current: Current, q: BlockDevice, bio: Bio) -> None:
    """Mirror of ``blk_mq_get_request()`` → ``blk_mq_get_tag()``: one of ``nr_requests`` tags.

    With every tag in flight the submitter sleeps (``io_schedule``) until a
    completion hands it one, FIFO; the legacy ``block_sleeprq`` tracepoint
    names this sleep.
    """
    if q._tags_used < q.nr_requests and not len(q._tag_wait):
        q._tags_used += 1
        return
    actor = current.actor
    start = actor.now_ns
    actor.log.info("block_sleeprq", dev=q.dev, bio=bio.bio_id, comm=current.comm, pid=current.pid)
    await q._tag_wait.wait(actor, bio.bio_id)
    current.account_sleep("io", actor.now_ns - start)


async def blkcg_iolatency_throttle(current: Current, q: BlockDevice, bio: Bio) -> None:
    """Mirror of ``rq_qos_throttle()`` → ``blkcg_iolatency_throttle()``.

    Walks the bio's cgroup and its ancestors (root excluded), leaf first. At
    each level: follow the parent's scale cookie (``check_scale_change``),
    mark the task for induced delay if the level has ``use_delay``, then take
    an inflight slot or sleep FIFO until a completion grants one. REQ_META /
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
            await q._rq_wait(path).wait(actor, bio.bio_id)
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
