"""Tests for actors/block/blk_cgroup.py: paths, io.latency syntax, induced-delay bookkeeping."""

from __future__ import annotations

import pytest

from actors.block.blk_cgroup import (
    BLKCG_MAX_DELAY_NSEC,
    ROOT,
    BlkcgHierarchy,
    ancestors,
    blkcg_add_delay,
    blkcg_clear_delay,
    blkcg_scale_delay,
    blkcg_throttle_delay_nsec,
    blkcg_unuse_delay,
    blkcg_use_delay,
    blkg_lookup_create,
    format_io_latency,
    parent_path,
    parse_io_latency,
    split_io_latency,
)
from emu import NSEC_PER_MSEC, NSEC_PER_SEC


def test_parent_path_derived_from_path() -> None:
    """The parent of a cgroup is its path minus the last component; the root has none."""
    assert parent_path("workload.slice/protected") == "workload.slice"
    assert parent_path("workload.slice") == ROOT
    assert parent_path(ROOT) is None
    assert ancestors("a/b/c") == ("a/b/c", "a/b", "a", "")


@pytest.mark.parametrize("bad", ["/a", "a/", "a//b", "a/../b"])
def test_parent_path_rejects_unnormalised_paths(bad: str) -> None:
    """Paths that could name one cgroup two ways are rejected."""
    with pytest.raises(ValueError, match="cgroup path"):
        parent_path(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("target=2000", 2_000_000),
        ("8:0 target=75", 75_000),
        ("  8:16   target=1  ", 1_000),
        ("target=10 target=20", 20_000),
        ("max", None),
        ("target=max", None),
        ("8:0 target=max", None),
        ("target=0", None),
    ],
)
def test_parse_io_latency_accepts_kernel_syntax(text: str, expected: int | None) -> None:
    """iolatency_set_limit() syntax: target in usec, last token wins, max/0 = off."""
    assert parse_io_latency(text) == expected


@pytest.mark.parametrize("text", ["x", "", "8:0", "target=", "target=-1", "target=1.5", "latency=5", "target=5us", "0"])
def test_parse_io_latency_rejects_other_text(text: str) -> None:
    """Anything else is -EINVAL, reported with what was expected."""
    with pytest.raises(ValueError, match='expected "target=<usec>" or "max", got'):
        parse_io_latency(text)


def test_parse_io_latency_error_names_the_bad_token() -> None:
    """The error message quotes the offending token."""
    with pytest.raises(ValueError, match=r"got 'x'"):
        parse_io_latency("x")


def test_split_and_format_io_latency_round_trip() -> None:
    """The device prefix is split off, and reading prints "MAJ:MIN target=<usec>"."""
    assert split_io_latency("8:0 target=75") == ("8:0", "target=75")
    assert split_io_latency("target=75") == (None, "target=75")
    assert format_io_latency("8:0", 75_000) == "8:0 target=75"
    assert format_io_latency("8:0", None) == ""


def test_hierarchy_creates_ancestors_in_order() -> None:
    """lookup_create makes missing ancestors first, so iteration is parent-first."""
    tree = BlkcgHierarchy(["w.slice/b", "w.slice/a", "x"])
    assert [cg.path for cg in tree] == ["", "w.slice", "w.slice/b", "w.slice/a", "x"]
    assert tree.get("w.slice/a").parent is tree.get("w.slice")


def test_blk_cgroup_congested_walks_ancestors() -> None:
    """A cgroup is congested when it or any ancestor has a blkg with use_delay."""
    tree = BlkcgHierarchy(["w/noisy/sub", "w/prot"])
    blkgs: dict = {}
    blkg = blkg_lookup_create(tree, blkgs, "w/noisy")
    blkcg_use_delay(blkg)
    blkcg_use_delay(blkg)
    assert tree.blk_cgroup_congested("w/noisy")
    assert tree.blk_cgroup_congested("w/noisy/sub")
    assert tree.blk_cgroup_congested("w/noisy/not-created-yet")
    assert not tree.blk_cgroup_congested("w/prot")
    assert not tree.blk_cgroup_congested("w")
    assert blkcg_unuse_delay(blkg)
    assert tree.blk_cgroup_congested("w/noisy")
    blkcg_clear_delay(blkg)
    assert not tree.blk_cgroup_congested("w/noisy")
    assert not blkcg_unuse_delay(blkg)


def test_blkcg_scale_delay_decays_once_per_second() -> None:
    """Accumulated delay decays at most once per 1 s window, by what was outstanding a window ago."""
    tree = BlkcgHierarchy()
    blkg = blkg_lookup_create(tree, {}, "w/noisy")
    blkcg_use_delay(blkg)
    blkcg_add_delay(blkg, 10, 3 * NSEC_PER_SEC)
    assert blkg.delay_nsec == 3 * NSEC_PER_SEC
    # The first window only records what is outstanding (last_delay was 0).
    blkcg_scale_delay(blkg, NSEC_PER_SEC + 1)
    assert (blkg.delay_nsec, blkg.last_delay) == (3 * NSEC_PER_SEC, 3 * NSEC_PER_SEC)
    # Within the same second: nothing.
    blkcg_scale_delay(blkg, NSEC_PER_SEC + 500 * NSEC_PER_MSEC)
    assert blkg.delay_nsec == 3 * NSEC_PER_SEC
    # Next window: subtract min(last_delay, elapsed) = 1.5 s.
    blkcg_scale_delay(blkg, 2 * NSEC_PER_SEC + 500 * NSEC_PER_MSEC + 1)
    assert blkg.delay_nsec == 3 * NSEC_PER_SEC - (NSEC_PER_SEC + 500 * NSEC_PER_MSEC)


def test_blkcg_throttle_delay_is_capped_at_250ms_and_needs_use_delay() -> None:
    """The per-return sleep is the largest delay of levels with use_delay, at most 250 ms."""
    tree = BlkcgHierarchy()
    blkgs: dict = {}
    leaf = blkg_lookup_create(tree, blkgs, "w/noisy")
    blkcg_add_delay(leaf, 0, 90 * NSEC_PER_MSEC)
    assert blkcg_throttle_delay_nsec(leaf, 1) == 0  # no use_delay: no sleep
    blkcg_use_delay(leaf)
    assert blkcg_throttle_delay_nsec(leaf, 1) == 90 * NSEC_PER_MSEC
    parent = blkgs["w"]
    blkcg_use_delay(parent)
    blkcg_add_delay(parent, 0, 10 * NSEC_PER_SEC)
    assert blkcg_throttle_delay_nsec(leaf, 2) == BLKCG_MAX_DELAY_NSEC
