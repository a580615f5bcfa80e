"""Requests, bio merging and the per-task plug.

Mirrors, at v4.19: ``struct request`` (include/linux/blkdev.h) reduced to
its bios, position and size; ``blk_rq_merge_ok``/``blk_try_merge`` and
``bio_attempt_back_merge``/``bio_attempt_front_merge`` (block/blk-merge.c,
block/blk-core.c); ``blk_attempt_plug_merge``, ``blk_start_plug``,
``blk_finish_plug`` and ``blk_flush_plug_list`` (block/blk-core.c); the
plug-list limits ``BLK_MAX_REQUEST_COUNT`` and ``BLK_PLUG_FLUSH_SIZE``
(include/linux/blkdev.h) that ``blk_mq_make_request`` (block/blk-mq.c)
applies on a single-hardware-queue device.

The order is ``blk_mq_make_request``'s: a bio first tries to merge into a
request on the submitter's plug list, then into a request still waiting
for dispatch (``blk_mq_sched_bio_merge``; with no elevator that is the
software queue's ``rq_list``); only a bio that merged nowhere goes on to
``rq_qos_throttle`` (io.latency) and takes a tag. A merged bio is
therefore never throttled and never timed by io.latency: it rides on the
request it joined (``actors.block.blkdev``).

Emulation notes:
    The only limit on a merge is ``max_sectors`` (``BLK_DEF_MAX_SECTORS``,
    2560 sectors = 1.25 MiB); segment counts, gaps and integrity are not
    modelled, and there are no REQ_NOMERGE flags. ``blk_rq_merge_ok`` in
    4.19 does not compare cgroups, so bios of different cgroups merge.
    After a merge, requests are not merged with each other
    (``attempt_back_merge``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.kernel_types import ReqOp

if TYPE_CHECKING:
    from actors.block.bio import Bio

#: ``BLK_DEF_MAX_SECTORS``: ``max_sectors_kb`` 1280 (include/linux/blkdev.h, 4.19).
BLK_DEF_MAX_SECTORS = 2560
#: ``BLK_MAX_REQUEST_COUNT``: plugged requests before the plug is flushed.
BLK_MAX_REQUEST_COUNT = 16
#: ``BLK_PLUG_FLUSH_SIZE``: a plugged request this large flushes the plug (128 KiB).
BLK_PLUG_FLUSH_SIZE = 128 * 1024


class Request:
    """``struct request``: one or more bios the device serves as one IO.

    The first bio's op, flags and cgroup are the request's; ``sector`` is
    ``None`` when the position is unknown (then nothing merges with it).
    """

    __slots__ = ("bios", "op", "sector", "nr_bytes", "blkcg", "queue_ns", "issue_ns")

    def __init__(self, bio: Bio) -> None:
        self.bios = [bio]
        self.op = bio.op
        self.sector = bio.sector
        self.nr_bytes = bio.nr_bytes
        self.blkcg = bio.blkcg
        self.queue_ns = bio.queue_ns
        self.issue_ns = 0

    def __repr__(self) -> str:
        return f"<request bio:{self.bios[0].bio_id} +{len(self.bios) - 1} {self.op.name} {self.sector} {self.nr_bytes}B>"

    @property
    def nr_sectors(self) -> int:
        return self.nr_bytes // 512

    @property
    def end_sector(self) -> int | None:
        return None if self.sector is None else self.sector + self.nr_sectors


def blk_try_merge(rq: Request, bio: Bio) -> str | None:
    """``blk_rq_merge_ok`` + ``blk_try_merge``: ``"back"``, ``"front"`` or ``None``."""
    if rq.op != bio.op or rq.sector is None or bio.sector is None:
        return None
    if rq.nr_sectors + bio.nr_sectors > BLK_DEF_MAX_SECTORS:
        return None
    if rq.end_sector == bio.sector:
        return "back"
    if bio.sector + bio.nr_sectors == rq.sector:
        return "front"
    return None


def bio_attempt_merge(rq: Request, bio: Bio, where: str) -> None:
    """``bio_attempt_back_merge``/``bio_attempt_front_merge``: *bio* joins *rq*."""
    if where == "back":
        rq.bios.append(bio)
    else:
        rq.bios.insert(0, bio)
        rq.sector = bio.sector
    rq.nr_bytes += bio.nr_bytes


def attempt_merge(requests: Any, bio: Bio, log: Any, dev: str) -> Request | None:
    """Try *bio* against *requests* (newest first, as ``blk_attempt_plug_merge`` walks the plug);
    trace ``block_bio_backmerge``/``block_bio_frontmerge`` and return the request it joined."""
    for rq in reversed(requests):
        where = blk_try_merge(rq, bio)
        if where is not None:
            bio_attempt_merge(rq, bio, where)
            log.info(f"block_bio_{where}merge", dev=dev, bio=bio.bio_id, into=rq.bios[0].bio_id, nr_sector=bio.nr_sectors,
                     sector=bio.sector, op=ReqOp(bio.op).name)  # fmt: skip
            return rq
    return None


class BlkPlug:
    """``struct blk_plug``: requests a task holds back until it unplugs (or sleeps)."""

    __slots__ = ("mq_list",)

    def __init__(self) -> None:
        self.mq_list: list[Request] = []
