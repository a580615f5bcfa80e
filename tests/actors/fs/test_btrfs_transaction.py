"""Tests for actors/fs/btrfs_transaction.py: commit states, joining during a commit, and who feels them.

Run on the ``FakeBtrfsKernel`` of test_btrfs.py.
"""

from __future__ import annotations

from actors.block.blk_throttle import JIFFY_NS
from actors.fs.btrfs import UPDATE_INODE_NS
from actors.fs.btrfs_transaction import COMMIT_META_BYTES, TransState
from actors.kernel_types import PAGE_SIZE, VmFaultResult
from actors.lab.config import BtrfsConfig
from actors.mm.page import unlock_page
from emu.testing import run_strict
from tests.actors.fakes import FakeTask
from tests.actors.fs.test_btrfs import MS, US, FakeBtrfsKernel


def test_commit_transaction_unpins_and_writes_metadata():
    """``btrfs_commit_transaction``: ``commit_cost`` of work (blocking joins), then a waited REQ_META write, then unpin."""
    kernel = FakeBtrfsKernel(btrfs=BtrfsConfig(commit_cost=2 * MS), service_ns=MS)
    transaction = kernel.btrfs.transaction
    space = kernel.btrfs.space
    space.bytes_pinned = 3 * PAGE_SIZE
    seen = {}

    async def committer(current: FakeTask) -> None:
        seen["unpinned"] = await transaction.btrfs_commit_transaction(current)
        seen["now"] = current.actor.now_ns

    async def watcher(current: FakeTask) -> None:
        await current.actor.sleep(MS)
        seen["doing"] = (transaction.state, transaction.btrfs_transaction_in_commit())
        await current.actor.sleep(3 * MS // 2)
        seen["unblocked"] = (transaction.state, transaction.btrfs_transaction_in_commit())

    task = kernel.spawn("committer", committer)
    kernel.spawn("watcher", watcher)
    run_strict(kernel.engine)
    assert seen["unpinned"] == 3 * PAGE_SIZE and seen["now"] == 3 * MS
    assert seen["doing"] == (TransState.TRANS_STATE_COMMIT_DOING, True)
    assert seen["unblocked"] == (TransState.TRANS_STATE_UNBLOCKED, True)
    assert transaction.state == TransState.TRANS_STATE_RUNNING and transaction.transid == 1
    assert space.bytes_pinned == 0 and task.sleep_ns["io"] == MS
    (bio,) = kernel.events("block_bio_queue")
    assert bio["op"] == "WRITE" and bio["nr_sector"] == COMMIT_META_BYTES // 512


def test_mkwrite_during_a_commit_sleeps_a_jiffy_and_waits_to_join():
    """A write fault that meets a commit's critical section: ``btrfs_delalloc_reserve_metadata``
    sleeps one jiffy (``schedule_timeout(1)``), then ``file_update_time``'s join waits for UNBLOCKED."""
    kernel = FakeBtrfsKernel(btrfs=BtrfsConfig(commit_cost=10 * MS, reserve_cost=30 * US), service_ns=MS)
    seen = {}

    async def committer(current: FakeTask) -> None:
        await kernel.btrfs.transaction.btrfs_commit_transaction(current)

    async def writer(current: FakeTask) -> None:
        await current.actor.sleep(MS)
        vmf = kernel.vmf(3)
        seen["ret"] = await kernel.btrfs.btrfs_page_mkwrite(current, vmf)
        unlock_page(current, vmf.page)
        seen["now"] = current.actor.now_ns

    kernel.spawn("committer", committer)
    task = kernel.spawn("writer", writer)
    run_strict(kernel.engine)
    assert seen["ret"] == VmFaultResult.LOCKED
    # 1 ms + 30 us reserve + 4 ms jiffy; the join waits until 10 ms, then the inode update.
    (join,) = kernel.events("btrfs_join_wait")
    assert join["wait_ns"] == 10 * MS - (MS + 30 * US + JIFFY_NS)
    assert seen["now"] == 10 * MS + UPDATE_INODE_NS
    assert task.sleep_ns["fs"] == JIFFY_NS + join["wait_ns"]
    assert kernel.counters["btrfs_reserve_commit_sleep"] == 1 and kernel.counters["btrfs_join_transaction_wait"] == 1


def test_file_update_time_updates_once_per_jiffy():
    """``current_time()`` moves once a jiffy: a second write fault in the same jiffy skips the update."""
    kernel = FakeBtrfsKernel()

    async def writer(current: FakeTask) -> None:
        for index, delay in ((1, 0), (2, 0), (3, JIFFY_NS)):
            await current.actor.sleep(delay)
            vmf = kernel.vmf(index)
            await kernel.btrfs.btrfs_page_mkwrite(current, vmf)
            unlock_page(current, vmf.page)

    kernel.spawn("writer", writer)
    run_strict(kernel.engine)
    assert kernel.counters["btrfs_mkwrite"] == 3 and kernel.counters["btrfs_update_time"] == 2
    assert not kernel.events("btrfs_join_wait")
