"""Tests for actors/mm/memcontrol.py: the page counter, try_charge's reclaim and OOM, memory.high and its penalty.

The page counter and ``calculate_high_delay`` on their own (Hypothesis for
the penalty's bounds); the charge paths through the full model with
``run_policy`` on a small machine.
"""

from __future__ import annotations

import functools

from hypothesis import given
from hypothesis import strategies as st

from actors.kernel_types import PageFlag
from actors.lab.config import config_from_dict
from actors.lab.experiment import run_policy
from actors.mm.memcontrol import HZ, MEMCG_MAX_HIGH_DELAY_JIFFIES, MemCgroup, MemControl, calculate_high_delay
from actors.mm.page import Page, put_page
from actors.schema import CgroupConfig

MIB = 1024**2


def test_page_counter_charges_every_ancestor_and_fails_at_the_tightest_limit() -> None:
    """``page_counter_try_charge``: all or nothing up the hierarchy; the group at its limit is returned."""
    control = MemControl([CgroupConfig(path="a", memory_max=8 * 4096), CgroupConfig(path="a/b", memory_max=100 * 4096)])
    a, b = control.groups["a"], control.groups["a/b"]
    assert b.page_counter_try_charge(8) is None
    assert (control.root.usage, a.usage, b.usage) == (8, 8, 8)
    assert b.page_counter_try_charge(1) is a  # a's 8 pages bind before b's 100
    assert (a.usage, b.usage) == (8, 8)
    assert a.margin() == 0 and b.margin() == 92


def test_freeing_a_charged_page_uncharges_it_and_takes_it_off_the_lru() -> None:
    """The last ``put_page`` of a charged page is ``mem_cgroup_uncharge``."""
    control = MemControl([CgroupConfig(path="a", memory_max=4096 * 4)])
    memcg = control.groups["a"]
    page = Page(None, 0)
    page.flags = PageFlag.SWAPBACKED
    assert memcg.page_counter_try_charge(1) is None
    control.lru_add(memcg, page)
    assert list(memcg.lru_anon.values()) == [page]
    put_page(page)
    assert memcg.usage == 0 and not memcg.lru_anon and page.mem_cgroup is None


def test_calculate_high_delay_follows_the_kernel_formula() -> None:
    """Twice memory.high is an overage of 1.0: 250 jiffies per 1/64 of a batch... capped at 2 s; none at or below high."""
    memcg = MemCgroup("a", None, high=1000, usage=1000)
    assert calculate_high_delay(memcg, 32) == 0
    memcg.usage = 2000  # overage 1 << 20: (2**40 * HZ) >> 34 = 64 * HZ jiffies, times 32/32, capped
    assert calculate_high_delay(memcg, 32) == MEMCG_MAX_HIGH_DELAY_JIFFIES
    memcg.usage = 1100  # overage ~0.1: ~0.01 * 64 * HZ = 160 jiffies for a whole batch
    assert calculate_high_delay(memcg, 32) == ((((100 << 20) // 1000) ** 2 * HZ) >> 34)
    assert calculate_high_delay(memcg, 1) == calculate_high_delay(memcg, 32) // 32


@given(high=st.integers(1, 1 << 20), over=st.integers(0, 1 << 20), more=st.integers(0, 1 << 10), nr=st.integers(1, 512))
def test_high_delay_is_bounded_and_grows_with_the_overage(high: int, over: int, more: int, nr: int) -> None:
    """0 <= delay <= 2 s, and more usage never means a shorter delay (the penalty is monotone)."""
    memcg = MemCgroup("a", None, high=high, usage=high + over)
    delay = calculate_high_delay(memcg, nr)
    assert 0 <= delay <= MEMCG_MAX_HIGH_DELAY_JIFFIES
    memcg.usage += more
    assert calculate_high_delay(memcg, nr) >= delay


def _machine(*, memory: dict, swap: str = "64MiB", heap: str = "4MiB", horizon: str = "300ms", think: str = "0", policies=("v4.19",)) -> dict:
    return {
        "name": "memcg-test",
        "horizon": horizon,
        "policies": list(policies),
        "swap": {"size": swap},
        "cgroups": [{"path": "batch", **memory}],
        "processes": [
            {
                "name": "batch",
                "cgroup": "batch",
                "mappings": [{"name": "heap", "size": heap}],
                "threads": [
                    {
                        "name": "faulter",
                        "program": [{"op": "touch", "mapping": "heap", "pattern": "random", "write": True}, {"op": "think", "time": think}],
                    }
                ],
            }
        ],
    }


@functools.cache
def _run(policy: str, **kw):
    frozen = {k: dict(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    return run_policy(config_from_dict(_machine(**frozen)), policy).results


def test_over_memory_max_the_faulter_reclaims_by_swapping_and_stays_within_the_limit() -> None:
    """A 4 MiB working set in a 1 MiB group: direct reclaim swaps out, usage never passes max, slots balance."""
    results = _run("v4.19", memory=(("memory.max", "1MiB"),))
    counters = results["counters"]
    batch = results["memcg"]["batch"]
    assert counters["pswpout"] > 0 and counters["pswpin"] > 0
    assert counters["memcg_direct_reclaim"] > 0 and counters["memcg_reclaim_under_mmap_sem"] == counters["memcg_direct_reclaim"]
    assert batch["watermark_pages"] <= batch["max_pages"] == 256
    assert batch["oom_kill"] == 0 and batch["psi_some_ns"] > 0
    assert results["invariants"]["violations"] == []


def test_without_swap_nothing_can_be_reclaimed_and_the_memcg_oom_kills_the_faulter() -> None:
    """Anonymous memory with no swap is unreclaimable: five retries, then the OOM kill."""
    results = _run("v4.19", memory=(("memory.max", "1MiB"),), swap=0)
    assert results["counters"]["memcg_oom"] == 1 and results["counters"]["memcg_oom_kill"] == 1
    assert results["memcg"]["batch"]["oom_kill"] == 1
    assert results["latency"]["faulter/touch"]["count"] >= 256  # it got to the limit first
    assert results["invariants"]["violations"] == []


def test_memory_high_reclaims_at_return_to_user_and_keeps_the_group_near_high() -> None:
    """Over memory.high with swap, the return to user reclaims; the group ends near high, no charge ever fails."""
    for policy in ("v4.19", "v5.7"):
        results = _run(policy, memory=(("memory.high", "1MiB"),))
        batch = results["memcg"]["batch"]
        assert batch["high"] > 0 and batch["max"] == 0 and results["counters"]["pswpout"] > 0
        assert batch["watermark_pages"] <= 256 + 1  # one page over, then reclaimed back under
        assert results["counters"].get("memcg_high_delay_ns", 0) == 0  # reclaim kept up: no penalty
        assert results["invariants"]["violations"] == []


def test_when_reclaim_cannot_keep_up_5_4_throttles_and_4_19_does_not() -> None:
    """Unreclaimable growth over memory.high (anonymous memory, no swap): only the penalty (5.4+) slows the task."""
    old = _run("v4.19", memory=(("memory.high", "1MiB"),), swap=0, heap="64MiB", think="20us")
    new = _run("v5.7", memory=(("memory.high", "1MiB"),), swap=0, heap="64MiB", think="20us")
    assert old["counters"].get("memcg_high_delay_ns", 0) == 0
    assert new["counters"]["memcg_high_delay_ns"] >= 10_000_000  # each sleep is over HZ/100
    assert new["memcg"]["batch"]["psi_some_ns"] >= new["counters"]["memcg_high_delay_ns"]
    assert new["memcg"]["batch"]["watermark_pages"] < old["memcg"]["batch"]["watermark_pages"]
