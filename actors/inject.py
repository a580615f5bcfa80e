"""Fault injection: IO errors, ENOSPC and fatal signals, from the config's ``[inject]`` table.

The injector changes no kernel code. The modules have their own documented
error-injection points, and it supplies the callables behind them, the way
the kernel's fault-injection framework (Documentation/fault-injection/)
keeps the ``should_fail()`` sites in the code and the ``struct fault_attr``
settings (``probability``, ``task-filter``) outside it:

* ``BlockDevice(bio_error=...)`` (actors/block/blkdev.py): a bio completes
  with ``BLK_STS_IOERR``; decided at completion, READ and WRITE alike.
* ``BtrfsFs(reserve_fail=...)`` (actors/fs/btrfs.py): a successful
  ``btrfs_delalloc_reserve_space`` is given back and returns ``-ENOSPC``.

``Kernel`` wires them (``bio_error_hook()``, ``reserve_fail_hook()``) and
starts the SIGKILL kthread.

Every draw comes from the run's own streams ``engine.streams.get("inject",
<family>)``, one per family, so switching a family on or off (``emu explore
--swarm``) leaves the other families' draws, and every other stream of the
run, unchanged. A family whose probability is 0 draws nothing, and a config
without ``[inject]`` gets no hooks at all: its runs are the same as before
injection existed.

Families (``InjectConfig``):

* ``read_error``: a data READ bio (not REQ_META) of a file matching
  ``files``, submitted by a task matching ``tasks``, completes with
  ``BLK_STS_IOERR`` with this probability. The page stays !uptodate with
  PG_error; ``filemap_fault`` takes the ``page_not_uptodate`` re-read path
  and, if that fails too, SIGBUS.
* ``write_error``: a writeback WRITE bio of a matching file fails. The
  flusher re-dirties the pages (nothing is lost; they are written again later).
  Writes are submitted by the flusher, so ``tasks`` does not apply.
* ``enospc``: ``btrfs_delalloc_reserve_space`` of a matching task fails with
  ``-ENOSPC`` after its normal cost (the reservation it made is given back):
  ``btrfs_page_mkwrite`` returns ``VM_FAULT_SIGBUS``.
* ``sigkill_every``/``sigkill_max``: a kernel thread sends SIGKILL to a random
  live matching task after exponential gaps; a killable wait (page lock,
  ``down_write_killable``) ends at once, any other the task finishes first.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from actors.kernel_types import ReqFlag, ReqOp

if TYPE_CHECKING:
    from actors.block.bio import Bio
    from actors.kernel import Kernel
    from actors.sched.task import TaskStruct
    from actors.schema import InjectConfig


class Injector:
    """The injection hooks of one run (see the module docstring)."""

    def __init__(self, kernel: Kernel, config: InjectConfig) -> None:
        self.kernel = kernel
        self.config = config
        self.killed = 0

    @property
    def active(self) -> bool:
        c = self.config
        return bool(c.read_error or c.write_error or c.enospc or c.sigkill_every)

    def _rng(self, family: str):
        return self.kernel.engine.streams.get("inject", family)

    def _file_matches(self, bio: Bio) -> bool:
        if not bio.pages or bio.flags & ReqFlag.META:
            return False
        mapping = bio.pages[0].mapping
        return mapping is not None and fnmatch.fnmatchcase(mapping.host.name, self.config.files)

    # -- the hooks ---------------------------------------------------------------------

    def bio_error_hook(self) -> Callable[[Bio], bool] | None:
        """What ``BlockDevice(bio_error=...)`` gets: ``bio_error``, or ``None`` if no IO-error family is on."""
        return self.bio_error if self.config.read_error or self.config.write_error else None

    def reserve_fail_hook(self) -> Callable[[TaskStruct, int], bool] | None:
        """What ``BtrfsFs(reserve_fail=...)`` gets: ``reserve_fail``, or ``None`` if ``enospc`` is off."""
        return self.reserve_fail if self.config.enospc else None

    def bio_error(self, bio: Bio) -> bool:
        """``BlockDevice.bio_error``: fail this bio at completion?

        READ bios are decided by the ``read_error`` family, WRITE bios by
        ``write_error``; a family that is off draws nothing.
        """
        if bio.op == ReqOp.READ:
            return bool(self.config.read_error) and self.read_error(bio)
        if bio.op == ReqOp.WRITE:
            return bool(self.config.write_error) and self.write_error(bio)
        return False

    def read_error(self, bio: Bio) -> bool:
        """The ``read_error`` family: fail this READ bio?"""
        if not self._file_matches(bio) or not fnmatch.fnmatchcase(bio.submitter, self.config.tasks):
            return False
        if self._rng("read_error").random() >= self.config.read_error:
            return False
        for page in bio.pages:
            if page.mapping is not None:
                page.mapping.host.error_seq += 1
        self.kernel.count("inject_read_errors")
        return True

    def write_error(self, bio: Bio) -> bool:
        """The ``write_error`` family: fail this writeback bio?"""
        if not self._file_matches(bio):
            return False
        if self._rng("write_error").random() >= self.config.write_error:
            return False
        self.kernel.count("inject_write_errors")
        return True

    def reserve_fail(self, current: TaskStruct, nbytes: int) -> bool:
        """``BtrfsFs(reserve_fail=...)``, the ``enospc`` family: fail this (successful) reservation?"""
        if not fnmatch.fnmatchcase(current.comm, self.config.tasks):
            return False
        if self._rng("enospc").random() >= self.config.enospc:
            return False
        self.kernel.count("inject_enospc")
        current.actor.log.info("inject_enospc", comm=current.comm, bytes=nbytes)
        return True

    # -- SIGKILL -------------------------------------------------------------------------

    def start_sigkill(self) -> None:
        """Spawn the kernel thread that sends the SIGKILLs."""
        self.kernel.spawn_kthread("inject.sigkill", self._sigkill_loop)

    async def _sigkill_loop(self, current: TaskStruct) -> None:
        rng = self._rng("sigkill")
        mean = self.config.sigkill_every
        while self.killed < self.config.sigkill_max:
            u = (rng.getrandbits(53) + 1) / (1 << 53)
            await current.actor.sleep(max(1, int(-math.log(u) * mean)))
            victims = sorted(
                (t for t in self.kernel.tasks
                 if t.mm is not None and not t.actor.finished and not t.pending_sigkill
                 and fnmatch.fnmatchcase(t.comm, self.config.tasks)),
                key=lambda t: t.comm,
            )  # fmt: skip
            if not victims:
                continue
            victim = rng.choice(victims)
            self.killed += 1
            self.kernel.count("inject_sigkill")
            current.actor.log.info("inject_sigkill", victim=victim.comm, in_killable_wait=victim.killable_queue is not None)
            victim.send_sigkill()
