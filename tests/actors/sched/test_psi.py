"""Tests for actors/sched/psi.py: some and full memory stall totals, up the cgroup tree."""

from __future__ import annotations

from types import SimpleNamespace

from actors.sched.psi import Psi


def _task(cgroup: str):
    return SimpleNamespace(blkcg=cgroup, memstall=False, actor=SimpleNamespace(now_ns=0))


def test_some_counts_any_stalled_task_and_full_all_of_them() -> None:
    psi = Psi(["a", "a/b"], ["a/b", "a/b"])
    t1, t2 = _task("a/b"), _task("a/b")
    e1 = psi.memstall_enter(t1)
    t1.actor.now_ns = t2.actor.now_ns = 100
    e2 = psi.memstall_enter(t2)
    t1.actor.now_ns = t2.actor.now_ns = 250
    psi.memstall_leave(t1, e1)
    t2.actor.now_ns = 400
    psi.memstall_leave(t2, e2)
    totals = psi.totals(1000)
    assert totals["a/b"] == (400, 150)  # some: 0..400; full: both stalled 100..250
    assert totals["a"] == (400, 150) and totals[""] == (400, 150)  # the parents see the same tasks


def test_nested_sections_count_once_and_open_stalls_count_to_now() -> None:
    psi = Psi(["a"], ["a", "a"])
    task = _task("a")
    outer = psi.memstall_enter(task)
    assert psi.memstall_enter(task) is False  # PF_MEMSTALL already set
    psi.memstall_leave(task, False)
    assert task.memstall
    task.actor.now_ns = 70
    assert psi.totals(90)["a"] == (90, 0)  # one of two tasks: some only
    psi.memstall_leave(task, outer)
    assert psi.totals(90)["a"] == (70, 0)
