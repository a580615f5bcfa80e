"""Tests for cgroup writeback in actors/mm/page_writeback.py: per-cgroup wbs, charging, dirty domains.

A fake kernel whose device (4 tags, 4 units, 20 ms per bio) has io.latency:
the protected group's reads always miss their 100 us target, and a reader
of group ``X`` follows the cookie down, so by 1.5 s io.latency allows ``X``
one bio in flight.
"""

from __future__ import annotations

from typing import Any

from actors.block.blkdev import submit_bio_wait
from actors.fs.generic import GenericFs, fs_bio
from actors.kernel_types import ReqOp
from actors.lab.config import WritebackConfig
from actors.mm.filemap import Inode, cached_fraction_fill
from actors.mm.page_writeback import MAX_PAUSE_NS
from emu import NSEC_PER_MSEC
from emu.testing import run_strict
from tests.actors.fakes import FakeKernel, FakeTask

MS = NSEC_PER_MSEC
PROT, X = "w/prot", "w/x"
DIRTY_AT = 1500 * MS


def _kernel(*, throttled: bool = True, interval: int = 10_000 * MS, **writeback: Any) -> FakeKernel:
    kernel = FakeKernel(
        writeback=WritebackConfig(interval=interval, dirty_limit_pages=4096, batch_pages=1),
        service_ns=20 * MS,
        nr_requests=4,
        parallelism=4,
        io_latency={PROT: "target=100"} if throttled else {},
        **{"cgroup_writeback": True, **writeback},
    )
    kernel.spawn("prot", _reader(kernel, 4000 * MS), blkcg=PROT)
    kernel.spawn("xread", _reader(kernel, DIRTY_AT - 100 * MS), blkcg=X)
    return kernel


def _file(kernel: FakeKernel, ino: int, nr_pages: int) -> Inode:
    inode = Inode(ino, f"f{ino}", nr_pages * 4096, GenericFs(kernel))
    cached_fraction_fill(inode, list(range(nr_pages)))
    return inode


def _reader(kernel: FakeKernel, until_ns: int):
    """Back-to-back reads of the task's group until *until_ns*."""

    async def program(current: FakeTask) -> None:
        while current.actor.now_ns < until_ns:
            bio = fs_bio(kernel, current, [], ReqOp.READ, 0, None, 4096)
            await submit_bio_wait(current, bio, "read")

    return program


def _dirtier(kernel: FakeKernel, inode: Inode, seen: dict[str, Any], *, balance: bool):
    """At DIRTY_AT dirty every page of *inode*; then ``balance_dirty_pages`` or wait for the flusher."""

    async def program(current: FakeTask) -> None:
        await current.actor.sleep(DIRTY_AT)
        for page in inode.i_mapping.pages.values():
            kernel.writeback.set_page_dirty(page)
        seen["wb"] = kernel.writeback.wb_stats(current.blkcg)
        if balance:
            seen["paused"] = await kernel.writeback.balance_dirty_pages(current, inode.i_mapping)
        else:
            await current.actor.sleep(2000 * MS)

    return program


def _flusher_writes(kernel: FakeKernel) -> set[tuple[str, str]]:
    return {(r["blkcg"], r["comm"]) for r in kernel.events("block_bio_queue") if r["op"] == "WRITE"}


def test_writeback_bio_is_charged_to_the_dirtying_cgroup_and_throttled_by_its_io_latency() -> None:
    kernel = _kernel(interval=50 * MS)
    seen: dict[str, Any] = {}
    kernel.spawn("x", _dirtier(kernel, _file(kernel, 1, 16), seen, balance=False), blkcg=X)
    run_strict(kernel.engine)
    assert seen["wb"] == (16, 0)  # counted in X's wb
    assert kernel.writeback.wb_stats("") == (0, 0)
    assert _flusher_writes(kernel) == {(X, "flush-8:0:w/x")}
    throttled = [r for r in kernel.events("rq_qos_throttle") if r["comm"] == "flush-8:0:w/x"]
    assert throttled and {(r["blkcg"], r["max_depth"]) for r in throttled} == {(X, 1)}  # X's flusher sleeps at X's level
    assert kernel.writeback.statistics().nr_written == 16


def test_without_cgroup_writeback_the_root_flusher_writes_unthrottled() -> None:
    kernel = _kernel(interval=50 * MS, cgroup_writeback=False)
    seen: dict[str, Any] = {}
    kernel.spawn("x", _dirtier(kernel, _file(kernel, 1, 16), seen, balance=False), blkcg=X)
    run_strict(kernel.engine)
    assert seen["wb"] == (0, 0) and kernel.writeback.wb_stats("") == (0, 0)  # everything was the root's
    assert _flusher_writes(kernel) == {("", "flush-8:0")}
    assert not [r for r in kernel.events("rq_qos_throttle") if r["comm"].startswith("flush")]


def test_balance_dirty_pages_pauses_because_its_own_groups_writeback_is_throttled() -> None:
    """X's own domain (limit 2) stays over while its flusher is held to one bio; unthrottled it drains in one pause."""
    paused = {}
    for throttled in (True, False):
        kernel = _kernel(throttled=throttled, memcg_dirty_limits={X: 2})
        seen: dict[str, Any] = {}
        kernel.spawn("x", _dirtier(kernel, _file(kernel, 1, 16), seen, balance=True), blkcg=X)
        run_strict(kernel.engine)
        events = [r for r in kernel.events("balance_dirty_pages") if r["comm"] == "x"]
        assert events and {r["limit"] for r in events} == {2}  # X's memcg domain, not the global 4096
        paused[throttled] = seen["paused"]
    assert paused == {True: 2 * MAX_PAUSE_NS, False: MAX_PAUSE_NS}


def test_a_root_dirtier_does_not_pause_for_another_groups_domain() -> None:
    kernel = _kernel(memcg_dirty_limits={X: 2})
    seen_x: dict[str, Any] = {}
    seen_root: dict[str, Any] = {}
    kernel.spawn("x", _dirtier(kernel, _file(kernel, 1, 16), seen_x, balance=True), blkcg=X)
    kernel.spawn("r", _dirtier(kernel, _file(kernel, 2, 16), seen_root, balance=True))
    run_strict(kernel.engine)
    assert seen_x["paused"] > 0 and seen_root["paused"] == 0
    assert seen_root["wb"] == (16, 0)
