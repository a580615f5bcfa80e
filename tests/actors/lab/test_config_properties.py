"""Property: a generated config either runs cleanly or is rejected with ``ConfigError``, never a traceback.

Hypothesis mutates a small valid config (including ``[inject]`` and the
racing ops): it replaces a value somewhere with a value of another type or
range, deletes a key, or adds an unknown one. ``from_dict`` must then raise
``ConfigError`` with one ``<config>: key.path: message`` line per problem,
or accept the config, which must then run (horizon cut to 30 ms) without
raising anything.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.lab.config import ConfigError, config_from_dict
from actors.lab.experiment import run_policy

BASE: dict[str, Any] = {
    "name": "prop",
    "seed": 3,
    "horizon": "30ms",
    "policies": ["v3"],
    "device": {"latency": "200us", "nr_requests": 8, "jitter_pct": 10},
    "btrfs": {"space": "8MiB", "flush_threshold": 0.5},
    "writeback": {"interval": "5ms", "dirty_limit_pages": 64},
    "cgroups": [{"path": "batch", "io.latency": "target=500"}],
    "files": [{"name": "f", "size": "2MiB", "cached": 0.5}, {"name": "g", "size": "1MiB", "fs": "btrfs", "cached": 1.0}],
    "inject": {"read_error": 0.1, "enospc": 0.1, "write_error": 0.1, "sigkill_every": "10ms", "tasks": "app.*"},
    "processes": [
        {
            "name": "app",
            "cgroup": "batch",
            "mappings": [{"name": "m", "file": "f"}, {"name": "w", "file": "g", "writable": True}],
            "threads": [
                {"name": "r", "handle_signals": True, "program": [{"op": "touch", "mapping": "m", "pages": 4, "pattern": "random"}]},
                {"name": "w", "program": [{"op": "touch", "mapping": "w", "write": True}, {"op": "think", "time": "1ms"}]},
                {"name": "x", "program": [
                    {"op": "munmap", "mapping": "m"}, {"op": "mmap", "mapping": "m"},
                    {"op": "mprotect", "mapping": "w", "prot": "r"}, {"op": "mprotect", "mapping": "w", "prot": "rw"},
                    {"op": "truncate", "file": "f", "size": "1MiB", "hold": "100us"}, {"op": "think", "time": "2ms"},
                ]},
            ],
        }
    ],
}  # fmt: skip

VALUES = st.one_of(
    st.integers(min_value=-3, max_value=5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "10ms", "-1ms", "4KiB", "ten", "target=100", "max", "r", "rw", "*", "app.*", "nofile", "m", "v5.1", "\x00"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "op", "time"]), st.integers(), max_size=2),
    st.none(),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


PATHS = _paths(BASE)


@st.composite
def mutated(draw) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            last = path[-1]
            action = draw(st.sampled_from(["replace", "delete", "unknown"]))
            if action == "replace":
                parent[last] = draw(VALUES)
            elif action == "delete":
                del parent[last]
            elif isinstance(parent, dict):
                parent["bogus_key"] = draw(VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or retyped this path
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_generated_config_runs_or_is_rejected_cleanly(data: dict[str, Any]) -> None:
    try:
        config = config_from_dict(data)
    except ConfigError as error:
        assert error.problems
        for line in error.problems:
            assert line.startswith("<config>: ") and "\n" not in line and "Traceback" not in line, line
        return
    config = attrs.evolve(config, horizon=min(config.horizon, 30_000_000))
    for policy in ("v3", "v5.1"):
        results = run_policy(config, policy, keep_trace=False).results
        assert results["end"] in ("finished", "horizon")


def test_the_base_config_is_valid_and_runs() -> None:
    config = config_from_dict(copy.deepcopy(BASE))
    results = run_policy(config, "v5.1", keep_trace=False).results
    assert results["end"] == "horizon" and results["counters"]["faults"] > 0
