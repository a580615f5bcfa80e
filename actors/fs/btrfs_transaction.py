"""btrfs transactions: the one running transaction, joining it, and committing it.

Mirrors, at v4.19, what fs/btrfs/transaction.c does that the rest of the
model can feel: ``btrfs_join_transaction`` (``start_transaction(root, 0,
TRANS_JOIN, ...)``), whose ``join_transaction`` finds the running
transaction blocked for joiners while a commit is in its critical section
and then sleeps in ``wait_current_trans``; ``btrfs_transaction_in_commit``;
and ``btrfs_commit_transaction`` with its states and, for space, the unpin
of ``btrfs_finish_extent_commit``. ``BtrfsFs`` (actors/fs/btrfs.py) owns
one ``BtrfsTransaction`` (``fs.transaction``); the space it unpins is
``fs.space``'s (actors/fs/btrfs_space.py).

Theory of operation
-------------------

A commit walks the transaction through its states (``enum
btrfs_trans_state``)::

    TRANS_STATE_COMMIT_DOING   commit_cost of CPU work: run delayed refs, commit
                               the roots, switch the commit roots; TRANS_JOIN is
                               blocked (btrfs_blocked_trans_types)
    TRANS_STATE_UNBLOCKED      joiners wake and join the next transaction; the
                               commit writes COMMIT_META_BYTES (REQ_META|REQ_SYNC)
                               and waits for it
    (completed)                the pinned extents are unpinned and the next
                               transaction runs (TRANS_STATE_RUNNING)

``btrfs_transaction_in_commit`` is true from the start of the commit to its
end. A join (``file_update_time`` in ``btrfs_page_mkwrite``) that meets a
commit in ``COMMIT_DOING`` sleeps (``fs``) until ``UNBLOCKED``.

Emulation notes:
    * No periodic commit (``commit_interval``, the transaction kthread):
      commits come from space flushing only.
    * ``TRANS_STATE_COMMIT_START`` (waiting for writers to leave) is not
      modelled: joined handles here do no sleeping work before they end, so
      the commit never waits for one.
    * The only committer is the space-reclaim worker, so two commits never
      overlap.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, final

from actors.block.blkdev import submit_bio_wait
from actors.fs.generic import fs_bio
from actors.kernel_types import ReqFlag, ReqOp
from actors.sched.core import cpu_work, wakeup
from emu import WaitQueue

if TYPE_CHECKING:
    from actors.fs.btrfs import BtrfsFs
    from actors.sched.task import TaskStruct

#: ``nodesize``: bytes of one tree block read or written (mkfs.btrfs default, 16 KiB).
NODESIZE = 16 * 1024
#: Metadata a transaction commit writes (a few tree blocks and the super block; estimate).
COMMIT_META_BYTES = 4 * NODESIZE


class TransState(enum.IntEnum):
    """``enum btrfs_trans_state`` (fs/btrfs/transaction.h, v4.19), the states modelled."""

    TRANS_STATE_RUNNING = 0
    TRANS_STATE_COMMIT_DOING = 3
    TRANS_STATE_UNBLOCKED = 4


@final
class BtrfsTransaction:
    """``fs_info->running_transaction``: its state, its joiners' wait and its commits.

    Args:
        fs: the filesystem: supplies the kernel, the engine, ``config.commit_cost``
            and the ``space`` whose pinned bytes a commit frees.

    Attributes:
        state: the running transaction's ``TransState``.
        transid: commits completed so far (``fs_info->generation``).
    """

    def __init__(self, fs: BtrfsFs) -> None:
        self.fs = fs
        self.kernel = fs.kernel
        self.state = TransState.TRANS_STATE_RUNNING
        self.transid = 0
        self._committer: str | None = None
        self._commit_wait = WaitQueue(fs.engine, "btrfs transaction commit_wait", lambda: [self._committer or ""])

    def __repr__(self) -> str:
        return f"<BtrfsTransaction {self.state.name}>"

    def btrfs_transaction_in_commit(self) -> bool:
        """``btrfs_transaction_in_commit()``: a commit of the running transaction has started and not completed."""
        return self.state != TransState.TRANS_STATE_RUNNING

    async def btrfs_join_transaction(self, current: TaskStruct) -> None:
        """``btrfs_join_transaction()``: while a commit blocks TRANS_JOIN, ``wait_current_trans`` (``fs``).

        Traces ``btrfs_join_wait`` when it slept.
        """
        if self.state != TransState.TRANS_STATE_COMMIT_DOING:
            return
        actor = current.actor
        start = actor.now_ns
        while self.state == TransState.TRANS_STATE_COMMIT_DOING:
            await self._commit_wait.wait(actor, current.comm)
        await wakeup(current)
        waited = actor.now_ns - start
        current.account_sleep("fs", waited)
        self.kernel.count("btrfs_join_transaction_wait")
        actor.log.info("btrfs_join_wait", comm=current.comm, wait_ns=waited, transid=self.transid)

    def _set_state(self, state: TransState) -> None:
        self.state = state
        self._commit_wait.wake_all()

    async def btrfs_commit_transaction(self, current: TaskStruct) -> int:
        """``btrfs_commit_transaction()``: the states of the module header, then unpin.

        ``commit_cost`` is CPU work; the metadata write is waited for
        (``submit_bio_wait``, ``io``).

        Returns:
            The bytes unpinned.
        """
        actor = current.actor
        kernel = self.kernel
        space = self.fs.space
        kernel.count("btrfs_commit_transaction")
        self._committer = current.comm
        pinned = space.bytes_pinned
        self._set_state(TransState.TRANS_STATE_COMMIT_DOING)
        await cpu_work(current, extra_ns=self.fs.config.commit_cost)
        self._set_state(TransState.TRANS_STATE_UNBLOCKED)
        bio = fs_bio(kernel, current, [], ReqOp.WRITE, ReqFlag.META | ReqFlag.SYNC, None, nr_bytes=COMMIT_META_BYTES)
        await submit_bio_wait(current, bio, "btrfs transaction commit")
        self.transid += 1
        space.unpin(pinned)  # btrfs_finish_extent_commit
        self._committer = None
        self._set_state(TransState.TRANS_STATE_RUNNING)  # completed: the next transaction runs
        actor.log.info("btrfs_transaction_commit", unpinned=pinned, error=int(bio.status), transid=self.transid)
        return pinned
