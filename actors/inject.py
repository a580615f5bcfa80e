"""Fault injection: IO errors, ENOSPC and fatal signals, from the config's ``[inject]`` table.

Every draw comes from the run's own streams ``engine.streams.get("inject",
<family>)``, one per family, so switching a family on or off (``emu explore
--swarm``) leaves the other families' draws, and every other stream of the
run, unchanged. A config without ``[inject]`` builds no injector hooks at
all: its runs are the same as before injection existed.

Families (``InjectConfig``):

* ``read_error``: a data READ bio (not REQ_META) of a file matching
  ``files``, submitted by a task matching ``tasks``, completes with
  ``BLK_STS_IOERR`` with this probability (``BlockDevice(read_error=...)``).
  The page stays !uptodate with PG_error; ``filemap_fault`` takes the
  ``page_not_uptodate`` re-read path and, if that fails too, SIGBUS.
* ``write_error``: a writeback WRITE bio of a matching file fails. The
  flusher re-dirties the pages (nothing is lost; they are written again later).
  Writes are submitted by the flusher, so ``tasks`` does not apply.
* ``enospc``: ``btrfs_delalloc_reserve_space`` of a matching task fails with
  ``-ENOSPC`` after its normal cost (the reservation it made is given back):
  ``btrfs_page_mkwrite`` returns ``VM_FAULT_SIGBUS``.
* ``sigkill_every``/``sigkill_max``: a kernel thread sends SIGKILL to a random
  live matching task after exponential gaps; a killable wait (page lock,
  ``down_write_killable``) ends at once, any other the task finishes first.

Emulation notes:
    Write errors are applied by ``InjectingBlockDevice``, a ``BlockDevice``
    whose completion marks a WRITE bio failed before the normal completion
    runs (``BlockDevice`` only has a read hook). ENOSPC is applied by
    wrapping the btrfs instance's ``btrfs_delalloc_reserve_space``.
"""

from __future__ import annotations

import fnmatch
import math
from typing import TYPE_CHECKING, Any

from actors.block.blkdev import BlockDevice
from actors.kernel_types import BlkStatus, Errno, ReqFlag, ReqOp

if TYPE_CHECKING:
    from actors.block.bio import Bio
    from actors.config import InjectConfig
    from actors.kernel import Kernel
    from actors.sched.task import TaskStruct


class InjectingBlockDevice(BlockDevice):
    """A ``BlockDevice`` that can also fail WRITE bios (``write_error(bio) -> bool``)."""

    def __init__(self, *args: Any, write_error: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_error = write_error

    def _complete(self, bio: Bio) -> None:
        if bio.op == ReqOp.WRITE and self.write_error is not None and self.write_error(bio):
            bio.status = BlkStatus.IOERR
            self._nr_errors += 1
        super()._complete(bio)


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

    def read_error(self, bio: Bio) -> bool:
        """``BlockDevice.read_error`` hook: fail this READ bio?"""
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
        """``InjectingBlockDevice.write_error`` hook: fail this writeback bio?"""
        if not self._file_matches(bio):
            return False
        if self._rng("write_error").random() >= self.config.write_error:
            return False
        self.kernel.count("inject_write_errors")
        return True

    def wrap_btrfs_reserve(self, fs: Any) -> None:
        """Make *fs*'s ``btrfs_delalloc_reserve_space`` fail with ENOSPC with the configured probability."""
        reserve = fs.btrfs_delalloc_reserve_space

        async def btrfs_delalloc_reserve_space(current: TaskStruct, nbytes: int) -> int:
            error = await reserve(current, nbytes)
            if error or not fnmatch.fnmatchcase(current.comm, self.config.tasks):
                return error
            if self._rng("enospc").random() >= self.config.enospc:
                return 0
            fs.btrfs_delalloc_release_space(nbytes)
            self.kernel.count("inject_enospc")
            current.actor.log.info("inject_enospc", comm=current.comm, bytes=nbytes)
            return -Errno.ENOSPC

        fs.btrfs_delalloc_reserve_space = btrfs_delalloc_reserve_space

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
