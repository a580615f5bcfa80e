"""Tests for actors/fs/generic.py: block placement and ext2-style indirect-block reads."""

from __future__ import annotations

from typing import Any

import pytest

from actors.fs.generic import ADDR_PER_BLOCK, NDIR_BLOCKS, block_sector, indirect_block_sector, indirect_group, layout_bytes
from actors.lab.config import config_from_dict
from actors.lab.experiment import run_policy
from actors.mm.filemap import Inode
from actors.schema import FileConfig


def test_indirect_layout_puts_each_indirect_block_before_the_data_it_maps() -> None:
    inode = Inode(1, "f", 64 * 1024**2, None)
    inode.start_sector, inode.block_map = 2048, "indirect"
    assert [indirect_group(i) for i in (0, 11, 12, 12 + ADDR_PER_BLOCK - 1, 12 + ADDR_PER_BLOCK)] == [None, None, 0, 0, 1]
    assert block_sector(inode, 11) == 2048 + 11 * 8
    assert indirect_block_sector(inode, 0) == 2048 + 12 * 8
    assert block_sector(inode, 12) == 2048 + 13 * 8  # right after its indirect block
    assert indirect_block_sector(inode, 1) == block_sector(inode, 12 + ADDR_PER_BLOCK - 1) + 8
    extents = Inode(2, "g", 64 * 1024**2, None)
    extents.start_sector = 0
    assert block_sector(extents, 12 + ADDR_PER_BLOCK) == (12 + ADDR_PER_BLOCK) * 8
    assert layout_bytes(FileConfig(name="f", size=64 * 1024**2, block_map="indirect")) == (16384 + 16) * 4096
    assert layout_bytes(FileConfig(name="f", size=64 * 1024**2)) == 16384 * 4096


def _run(policy: str, block_map: str) -> Any:
    touches = [{"op": "touch", "mapping": "m", "pattern": "sequential", "pages": 1}]
    config = config_from_dict(
        {
            "name": "indirect",
            "horizon": "1s",
            "device": {"latency": "1ms", "jitter_pct": 0},
            "files": [{"name": "f", "size": "64MiB", "block_map": block_map}],
            "processes": [
                {
                    "name": "p",
                    "mappings": [{"name": "m", "file": "f", "madvise": "random"}],
                    "threads": [{"name": "t", "iterations": NDIR_BLOCKS + 2, "program": touches}],
                }
            ],
        }
    )
    return run_policy(config, policy, keep_trace=True)


@pytest.mark.parametrize("policy", ["v4.19", "v5.1"])
def test_first_read_through_an_indirect_block_reads_it_first(policy: str) -> None:
    """Pages 0-11 are direct; page 12 needs indirect block 0, read once, synchronously, before its
    data; page 13 finds it cached. Under 4.19 that read happens inside page_cache_read with the
    sem held; v5.1 has dropped the sem before ->readpage."""
    run = _run(policy, "indirect")
    records = list(run.trace.records())
    branches = [r for r in records if r["event"] == "ext2_get_branch"]
    assert [(r["index"], r["indirect"]) for r in branches] == [(12, 0)]
    assert run.results["counters"]["indirect_block_reads"] == 1
    queued = [r for r in records if r["event"] == "block_rq_issue"]
    assert len(queued) == NDIR_BLOCKS + 2 + 1
    meta = next(r for r in queued if r["bio"] == branches[0]["bio"])
    data12 = queued[queued.index(meta) + 1]
    assert meta["sector"] + 8 == data12["sector"]  # the data block sits right after it
    held = run.results["counters"]["mmap_sem_held_across_io"]
    assert held == (1 if policy == "v4.19" else 0)
    plain = _run(policy, "extents")
    assert plain.results["counters"].get("indirect_block_reads", 0) == 0
    slower = run.results["latency"]["t/touch"]["max_ns"] - plain.results["latency"]["t/touch"]["max_ns"]
    assert slower >= 1_000_000  # page 12 waited for one more 1 ms read
