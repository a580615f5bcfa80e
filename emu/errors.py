"""Errors the engine raises.

``EmulatorError`` is the root. A hung run (``HungTaskError``) or a livelock
(``LivelockError``) carries a report naming every blocked actor, what it waits
on and who holds it; ``ActorCrashed`` wraps an exception raised by actor code,
which is always an emulator bug (kernel results are values, not exceptions).
"""

from __future__ import annotations


class EmulatorError(Exception):
    """Base of every error the engine raises on purpose."""


class HungTaskError(EmulatorError):
    """Nothing is runnable, no timer is pending, and actors are still blocked.

    Named after the kernel's hung-task detector (``kernel/hung_task.c``).
    """

    def __init__(self, now_ns: int, report: list[str]) -> None:
        self.now_ns = now_ns
        self.report = report
        lines = "\n  ".join(report)
        super().__init__(f"hung at t={now_ns} ns, nothing runnable:\n  {lines}")


class LivelockError(EmulatorError):
    """The step budget ran out: time or events moved, the run did not end."""

    def __init__(self, now_ns: int, steps: int, report: list[str]) -> None:
        self.now_ns = now_ns
        self.steps = steps
        self.report = report
        lines = "\n  ".join(report)
        super().__init__(f"step budget of {steps} exhausted at t={now_ns} ns:\n  {lines}")


class ActorCrashed(EmulatorError):
    """Actor code raised: an emulator bug, reported with where it happened."""

    def __init__(self, actor: str, now_ns: int, error: BaseException) -> None:
        self.actor = actor
        self.now_ns = now_ns
        self.error = error
        super().__init__(f"actor {actor!r} raised {type(error).__name__} at t={now_ns} ns: {error}")


class KernelBug(EmulatorError):
    """``BUG_ON()`` in emulated kernel code: a broken kernel invariant."""
