"""Tests for ``actors.lab.config_convert``: the strict converter and its one-line messages."""

from __future__ import annotations

import cattrs
import pytest

from actors.lab.config_convert import converter, describe
from actors.schema import CgroupConfig, Mmap, ProcessConfig, Think, Touch


def _problems(data: object, cls: type) -> list[str]:
    with pytest.raises((cattrs.BaseValidationError, ValueError)) as info:
        converter.structure(data, cls)
    return describe(info.value, "c.toml")


def test_op_tables_dispatch_on_op_key() -> None:
    """``op = "..."`` picks the op class; the other keys are its fields, value types parsed."""
    process = converter.structure(
        {"name": "p", "threads": [{"name": "t", "program": [{"op": "touch", "mapping": "m"}, {"op": "mmap", "length": "8KiB"}, {"op": "think", "time": "1ms"}]}]},
        ProcessConfig,
    )
    assert process.threads[0].program == [Touch(mapping="m"), Mmap(length=8192), Think(time=1_000_000)]


def test_io_latency_key_is_renamed_both_ways() -> None:
    """``"io.latency"`` in the file is ``io_latency`` in Python, and messages spell it as the file does."""
    assert converter.structure({"path": "a", "io.latency": "target=75"}, CgroupConfig).io_latency == 75_000
    assert _problems([{"path": "a", "io.latency": 3}], list[CgroupConfig]) == [
        """c.toml: [0].io.latency: expected "target=<usec>" or "max", got 3"""
    ]
    assert _problems({"path": "a", "io_latency": "max"}, CgroupConfig) == [
        "c.toml: (top level): unknown key(s): io_latency, expected one of path, io.latency, io.max, memory.max, memory.high, dirty_limit_pages"
    ]


def test_memory_keys_are_renamed_and_read_as_sizes_or_max() -> None:
    """``"memory.max"``/``"memory.high"`` take a size or ``"max"``; a bad one is reported at the file's spelling."""
    cgroup = converter.structure({"path": "a", "memory.max": "16MiB", "memory.high": "max"}, CgroupConfig)
    assert (cgroup.memory_max, cgroup.memory_high) == (16 * 1024**2, None)
    problems = _problems({"path": "a", "memory.high": True}, CgroupConfig)
    assert len(problems) == 1 and problems[0].startswith("c.toml: memory.high: expected a size like")


def test_io_max_key_is_read_as_blk_throttle_limits() -> None:
    """``"io.max"`` takes the kernel's ``MAJ:MIN key=value ...`` line; a bad one is located."""
    limits = converter.structure({"path": "a", "io.max": "8:0 riops=100 wbps=max"}, CgroupConfig).io_max
    assert (limits.dev, limits.riops, limits.wbps) == ("8:0", 100, None)
    problems = _problems({"path": "a", "io.max": "8:0 riops=0"}, CgroupConfig)
    assert len(problems) == 1 and problems[0].startswith("c.toml: io.max: ")


def test_scalars_are_never_coerced() -> None:
    """A bool is not an int, a number is not a string, and every bad key is reported."""
    assert _problems({"name": 1, "count": True}, ProcessConfig) == [
        "c.toml: name: expected a string, got 1",
        "c.toml: count: expected an integer >= 1, got True",
    ]


def test_bad_ops_and_lists_say_what_was_expected() -> None:
    """Non-list programs, non-table ops, missing or unknown ``op`` keys each get a message at their index."""
    thread = {"name": "t", "program": [3, {"mapping": "m"}, {"op": "jump"}, {"op": "touch", "mapping": "m", "pattern": "zigzag"}]}
    assert _problems({"name": "p", "threads": [thread]}, ProcessConfig) == [
        'c.toml: threads[0].program[0]: expected an op table like { op = "touch", ... }, got 3',
        'c.toml: threads[0].program[1]: missing key "op", expected one of touch, mmap, munmap, mprotect, truncate, populate, proc_read, io, think',
        "c.toml: threads[0].program[2]: unknown op 'jump', expected one of touch, mmap, munmap, mprotect, truncate, populate, proc_read, io, think",
        "c.toml: threads[0].program[3].pattern: expected one of 'sequential', 'random', 'hotset', got 'zigzag'",
    ]
    assert _problems({"name": "p", "threads": "t"}, ProcessConfig) == ["c.toml: threads: expected a list (an array), got 't'"]
