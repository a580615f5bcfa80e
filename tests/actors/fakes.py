"""Test fakes for the filesystem and writeback paths: a small ``Kernel`` and ``TaskStruct``.

The fs (actors/fs/) and writeback (actors/mm/page_writeback.py) paths need a
machine around them: an engine, a block device, the ``Writeback`` flusher,
counters, bio and pid numbers, and tasks that run in actors. The real
``Kernel`` builds all of that from a whole ``ExperimentConfig`` (processes,
workloads, invariant checks), which is more than a unit test wants to
write or control. These fakes are the parts of ``Kernel`` and ``TaskStruct``
that those paths use, and nothing else, so a test can build exactly the
pages, mappings and tasks it needs and call the path under test directly.

Everything else is real: the engine, ``BlockDevice`` (with an optional
``bio_error`` injection hook), ``Writeback`` and whatever filesystem a test
puts on top. A fake that lacks an attribute a path starts to use fails
loudly (``AttributeError``), which is the point: add it here, once.

Used by tests/actors/fs/test_btrfs.py and tests/actors/mm/test_page_writeback.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

from actors.block.bio import Bio
from actors.block.blkdev import BlockDevice
from actors.lab.config import BtrfsConfig, WritebackConfig
from actors.mm.memcontrol import MemControl
from actors.mm.mmap import MmStruct
from actors.mm.page_writeback import Writeback
from actors.policy import PRESETS
from actors.sched.psi import Psi
from emu import NSEC_PER_MSEC, Engine
from emu.testing import records

MS = NSEC_PER_MSEC


class FakeTask:
    """The parts of ``TaskStruct`` (actors/sched/task.py) the fault, fs and writeback paths use.

    ``actor`` is set by ``FakeKernel.spawn``/``spawn_kthread`` once the
    engine actor exists; ``sleep_ns`` collects ``account_sleep`` by kind
    (``fs``, ``io``, ``throttle``...).
    """

    def __init__(self, kernel: FakeKernel, comm: str, mm: MmStruct | None = None, blkcg: str = "") -> None:
        self.kernel = kernel
        self.comm = comm
        self.thread = comm
        self.pid = kernel.next_pid()
        self.blkcg = blkcg
        self.mm = mm
        self.actor: Any = None
        self.mmap_sem_held: list = []
        self.killable_queue = None
        self.dropped_vma = None
        self.throttle_queue = None
        self.pending_sigkill = False
        self.sleep_ns: dict[str, int] = defaultdict(int)
        self.memcg_nr_pages_over_high = 0
        self.memstall = False

    def fatal_signal_pending(self) -> bool:
        return self.pending_sigkill

    def account_sleep(self, kind: str, ns: int) -> None:
        self.sleep_ns[kind] += ns


class FakeKernel:
    """Engine, block device, flusher, counters and task spawning: what the paths need of ``Kernel``.

    Args:
        policy: a preset name (``actors.policy.PRESETS``).
        btrfs: ``config.btrfs`` for a ``BtrfsFs`` a test builds (default config if ``None``).
        writeback: ``config.writeback`` for the flusher (``WritebackConfig()`` if ``None``).
        service_ns: every bio's service time on the device.
        bio_error: the device's error-injection hook (``BlockDevice(bio_error=...)``).
        nr_requests, parallelism, io_latency: the device's tags, units and io.latency settings.
        cgroup_writeback, memcg_dirty_limits: as ``Writeback`` takes them.

    Attributes:
        mm: the mm that tasks from ``spawn`` run in (``None``: kernel-thread-like);
            a test or a subclass sets it.
        counters, violations, invariant_checks: as ``Kernel`` keeps them.
    """

    def __init__(
        self,
        *,
        policy: str = "v4.19",
        btrfs: BtrfsConfig | None = None,
        writeback: WritebackConfig | None = None,
        service_ns: int = MS,
        bio_error: Callable[[Bio], bool] | None = None,
        nr_requests: int = 64,
        parallelism: int = 1,
        io_latency: dict[str, str] | None = None,
        cgroup_writeback: bool = False,
        memcg_dirty_limits: dict[str, int] | None = None,
    ) -> None:
        self.engine = Engine(seed=0, horizon_ns=60_000 * MS)
        self.policy = PRESETS[policy]
        self.config = SimpleNamespace(btrfs=btrfs or BtrfsConfig(), writeback=writeback or WritebackConfig())
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.violations: list[dict[str, Any]] = []
        self.invariant_checks = 0
        self.mm: MmStruct | None = None
        self.bdev = BlockDevice(
            self.engine, service_time=lambda bio: service_ns, bio_error=bio_error, nr_requests=nr_requests,
            parallelism=parallelism, io_latency=io_latency,
        )  # fmt: skip
        self._pid = 100
        self._bio_id = 0
        self.tasks: list[FakeTask] = []
        self.writeback = Writeback(
            self, self.config.writeback, cgroup_writeback=cgroup_writeback, memcg_dirty_limits=memcg_dirty_limits
        )
        self.memcg = MemControl([])
        self.psi = Psi([], [])
        self.swap = None
        self.mm_cgroup: dict[str, str] = {}

    def next_pid(self) -> int:
        self._pid += 1
        return self._pid

    def next_bio_id(self) -> int:
        self._bio_id += 1
        return self._bio_id

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def violation(self, invariant: str, **seen: Any) -> None:
        """Record a broken invariant, as ``Kernel.violation`` does."""
        self.violations.append({"invariant": invariant, "ts": self.engine.now_ns, **seen})

    def spawn_kthread(self, name: str, fn: Callable[[Any], Coroutine[Any, Any, None]]) -> FakeTask:
        """A daemon actor running ``fn(task)`` with no mm (the flusher, workers)."""
        task = FakeTask(self, name)

        async def main(actor: Any) -> None:
            await fn(task)

        task.actor = self.engine.spawn(name, main, daemon=True)
        self.tasks.append(task)
        return task

    def spawn(self, comm: str, fn: Callable[[FakeTask], Coroutine[Any, Any, None]], blkcg: str = "") -> FakeTask:
        """A task in ``self.mm`` and cgroup *blkcg* running ``fn(task)``; the run ends when every such task has."""
        task = FakeTask(self, comm, self.mm, blkcg)

        async def main(actor: Any) -> None:
            await fn(task)

        task.actor = self.engine.spawn(comm, main)
        self.tasks.append(task)
        return task

    def events(self, name: str) -> list[dict[str, Any]]:
        """The trace records named *name*, in order (call after the run)."""
        return [r for r in records(self.engine) if r["event"] == name]
