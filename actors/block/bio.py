"""``struct bio``: one IO travelling from a submitter to the device and back.

Mirrors include/linux/blk_types.h at v4.19, reduced to what the fault path
needs: the operation and flags, the pages it covers, the blkcg it is charged
to, and the completion callback ``bi_end_io`` that runs in completion
(softirq) context, so it must not block.

Emulation notes:
    A bio covers whole pages of one file (``pages``); its ``sector`` comes
    from the file's place on the device (``Inode.start_sector``), laid out
    contiguously, files one after another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from actors.kernel_types import PAGE_SIZE, BlkStatus, ReqOp


@attrs.define(eq=False, kw_only=True)
class Bio:
    """``struct bio``.

    Attributes:
        bio_id: a run-unique number (the trace's name for this bio).
        op: read or write.
        flags: ``REQ_META``, ``REQ_SWAP``, ``REQ_RAHEAD``...
        pages: the page-cache pages it reads or writes, in index order.
        blkcg: path of the cgroup it is charged to (``bio_blkcg``).
        submitter: name of the task that called ``submit_bio``.
        bi_end_io: completion callback; runs at completion, must not block.
        status: set on completion.
        nr_bytes: size of the IO.
        queue_ns: when ``submit_bio`` received it (``bi_issue``: io.latency
            times a bio from here, throttle wait included).
        issue_ns: when the device started it (set by the device).
        complete_ns: when it completed (set by the device).
        bi_disk: the ``BlockDevice`` (request queue) it goes to; set by the
            submitter before ``submit_bio`` (``bio_set_dev``).
        sector: its first 512-byte sector on the device (``bi_iter.bi_sector``);
            ``None`` when the submitter does not place it (then it never
            merges, and a disk seeks to a drawn position).
        throttled: ``BIO_THROTTLED``: io.max has charged it; it passes
            ``blk_throtl_bio`` from now on.
    """

    bio_id: int
    op: ReqOp
    flags: int = 0
    pages: list[Any] = attrs.field(factory=list)
    blkcg: str = ""
    submitter: str = ""
    bi_end_io: Callable[[Bio], None] | None = None
    status: BlkStatus = BlkStatus.OK
    nr_bytes: int = 0
    queue_ns: int = 0
    issue_ns: int = 0
    complete_ns: int = 0
    bi_disk: Any = None
    sector: int | None = None
    throttled: bool = False

    #: Its name as the holder of the page locks it was handed (``page_lock_handoff``).
    lock_name: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not self.nr_bytes:
            self.nr_bytes = len(self.pages) * PAGE_SIZE
        self.lock_name = f"bio:{self.bio_id}"

    @property
    def nr_sectors(self) -> int:
        return self.nr_bytes // 512
