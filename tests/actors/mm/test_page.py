"""Tests for actors/mm/page.py: who ``unlock_page`` and ``end_page_writeback`` wake, and what a woken waiter does.

Run on ``FakeKernel`` (no CPU costs, so a wake-up takes no time) with pages of no mapping.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.kernel_types import PageFlag
from actors.mm.page import (
    PAGE_LOCK_UNFAIRNESS,
    Page,
    end_page_writeback,
    lock_page,
    trylock_page,
    unlock_page,
    wait_on_page_locked,
)
from emu.testing import run_strict
from tests.actors.fakes import MS, FakeKernel, FakeTask


def _spawn_at(kernel: FakeKernel, comm: str, at: int, body: Any, done: dict[str, int]) -> None:
    async def main(current: FakeTask) -> None:
        await current.actor.sleep_until(at)
        await body(current)
        done[comm] = current.actor.now_ns

    kernel.spawn(comm, main)


async def _hold(current: FakeTask, page: Page, until: int) -> None:
    await lock_page(current, page)
    await current.actor.sleep_until(until)
    unlock_page(current, page)


@pytest.mark.parametrize("policy", ["v4.19", "v6.1"])
def test_unlock_wakes_waiters_up_to_the_first_locker_only(policy: str) -> None:
    """Queue: a (lock_page), b (wait_on_page_locked), c (lock_page). The first unlock wakes a alone;
    b, still queued ahead of c, is woken by a's unlock and returns then, before c takes the lock."""
    kernel = FakeKernel(policy=policy)
    page = Page(None, 0)
    done: dict[str, int] = {}
    _spawn_at(kernel, "holder", 0, lambda cur: _hold(cur, page, 10 * MS), done)
    _spawn_at(kernel, "a", 1 * MS, lambda cur: _hold(cur, page, 20 * MS), done)
    _spawn_at(kernel, "b", 2 * MS, lambda cur: wait_on_page_locked(cur, page), done)
    _spawn_at(kernel, "c", 5 * MS, lambda cur: _hold(cur, page, 30 * MS), done)
    run_strict(kernel.engine)
    assert done == {"holder": 10 * MS, "a": 20 * MS, "b": 20 * MS, "c": 30 * MS}


def test_end_page_writeback_leaves_page_lock_waiters_queued() -> None:
    """Waiters wait for one bit: the end of writeback wakes none of the PG_locked waiters,
    which keep their places (a woken one would have queued again behind c)."""
    kernel = FakeKernel()
    page = Page(None, 0)
    page.flags |= PageFlag.WRITEBACK
    done: dict[str, int] = {}
    seen: dict[str, Any] = {}
    _spawn_at(kernel, "holder", 0, lambda cur: _hold(cur, page, 10 * MS), done)
    _spawn_at(kernel, "b", 1 * MS, lambda cur: wait_on_page_locked(cur, page), done)
    _spawn_at(kernel, "c", 2 * MS, lambda cur: _hold(cur, page, 20 * MS), done)

    async def writeback_ends(current: FakeTask) -> None:
        end_page_writeback(page)
        await current.actor.sleep(1 * MS)
        seen["queue"] = [key[0] for key in page.wq]

    _spawn_at(kernel, "endio", 5 * MS, writeback_ends, done)
    run_strict(kernel.engine)
    assert seen["queue"] == ["b", "c"]
    assert done["b"] == 10 * MS and done["c"] == 20 * MS


@pytest.mark.parametrize(("policy", "b_done"), [("v4.19", 30 * MS), ("v6.1", 10 * MS)])
def test_a_woken_wait_on_page_locked_rechecks_only_under_4_19(policy: str, b_done: int) -> None:
    """b waits for the page to unlock; c takes it the instant it is woken with b. Under 4.19 b sees it
    locked again and waits for c's unlock; under 5.9 rules a woken non-exclusive waiter is done."""
    kernel = FakeKernel(policy=policy)
    page = Page(None, 0)
    done: dict[str, int] = {}
    _spawn_at(kernel, "holder", 0, lambda cur: _hold(cur, page, 10 * MS), done)
    _spawn_at(kernel, "b", 1 * MS, lambda cur: wait_on_page_locked(cur, page), done)

    async def thief(current: FakeTask) -> None:
        await current.actor.sleep_until(10 * MS)
        assert trylock_page(page, current.comm)  # runs at the unlock, before b resumes
        await current.actor.sleep_until(30 * MS)
        unlock_page(current, page)

    _spawn_at(kernel, "holder2", 5 * MS, thief, done)
    run_strict(kernel.engine)
    assert done["b"] == b_done


@pytest.mark.parametrize(("policy", "stolen", "locked_at"), [("v4.19", 10, 10 * MS), ("v6.1", PAGE_LOCK_UNFAIRNESS, 6 * MS)])
def test_a_locker_that_keeps_losing_is_handed_the_lock_under_5_9(policy: str, stolen: int, locked_at: int) -> None:
    """The holder unlocks and re-locks every millisecond, so the woken waiter always loses the race.
    4.19: it loses all ten. 5.9: after queueing PAGE_LOCK_UNFAIRNESS times unfairly, its sixth wait
    is a hand-off: the next unlock gives it the lock and the holder's trylock fails (4.19: it gets the
    lock only when the holder stops, at 10 ms)."""
    kernel = FakeKernel(policy=policy)
    page = Page(None, 0)
    done: dict[str, int] = {}
    seen = {"relocked": 0}

    async def holder(current: FakeTask) -> None:
        await lock_page(current, page)
        for _ in range(10):
            await current.actor.sleep(1 * MS)
            unlock_page(current, page)
            if not trylock_page(page, current.comm):
                return
            seen["relocked"] += 1
        unlock_page(current, page)

    _spawn_at(kernel, "holder", 0, holder, done)
    _spawn_at(kernel, "waiter", 1, lambda cur: _hold(cur, page, 0), done)
    run_strict(kernel.engine)
    assert seen["relocked"] == stolen
    assert done["waiter"] == locked_at
