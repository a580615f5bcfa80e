"""The scenario library under test: every ``configs/*.toml``, run once per session.

``scenarios`` is a session-scoped cache: the first test that needs a config
runs every policy it names (traces not kept, only their digests) and later
tests, the summary comparison, the determinism check and the qualitative
claims, reuse those runs. ``summarize`` reduces one run to the compact
summary that ``tests/scenarios/expected/<config>.json`` commits.

``--update-expected`` (declared in tests/conftest.py, see there why) rewrites
the expectation files instead of comparing with them.
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

import pytest

from actors.lab.config import ExperimentConfig, load_config
from actors.lab.experiment import BASE_COUNTERS, run_policy

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs"

#: Latency fields kept per ``<task>/<op>``.
LATENCY_FIELDS = ("count", "p50_ns", "p99_ns", "max_ns")
#: ``mmap_sem`` statistics kept per process (``perf lock contention`` terms).
MMAP_SEM_FIELDS = ("contended", "wait_total_ns", "wait_max_ns")
#: io.latency end state kept per group.
IOLATENCY_FIELDS = ("depth", "use_delay")


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The compact, committed summary of one run's ``results`` entry."""
    return {
        "trace_digest": results["trace_digest"],
        "events": results["events"],
        "virtual_ns": results["virtual_ns"],
        "end": results["end"],
        "latency": {key: {f: stats[f] for f in LATENCY_FIELDS} for key, stats in results["latency"].items()},
        "counters": {name: results["counters"].get(name, 0) for name in BASE_COUNTERS},
        "mmap_sem": {mm: {f: stats[f] for f in MMAP_SEM_FIELDS} for mm, stats in results["mmap_sem"].items()},
        "iolatency": {path: {f: stats[f] for f in IOLATENCY_FIELDS} for path, stats in results["iolatency"].items()},
        "invariant_violations": len(results["invariants"]["violations"]),
    }


class Scenarios:
    """Lazily run configs, each policy once per session."""

    def __init__(self) -> None:
        self._runs: dict[str, dict[str, dict[str, Any]]] = {}
        self._configs: dict[str, ExperimentConfig] = {}

    def path(self, name: str) -> pathlib.Path:
        return CONFIG_DIR / f"{name}.toml"

    def config(self, name: str) -> ExperimentConfig:
        if name not in self._configs:
            self._configs[name] = load_config(self.path(name))
        return self._configs[name]

    def config_sha256(self, name: str) -> str:
        return hashlib.sha256(self.path(name).read_bytes()).hexdigest()

    def runs(self, name: str) -> dict[str, dict[str, Any]]:
        """``{policy: results}`` for every policy of config *name* (run on first use)."""
        if name not in self._runs:
            config = self.config(name)
            self._runs[name] = {p: run_policy(config, p, keep_trace=False).results for p in config.policies}
        return self._runs[name]

    def summary(self, name: str) -> dict[str, Any]:
        """The document ``expected/<name>.json`` holds."""
        return {
            "config": f"configs/{name}.toml",
            "config_sha256": self.config_sha256(name),
            "policies": {policy: summarize(results) for policy, results in self.runs(name).items()},
        }


@pytest.fixture(scope="session")
def scenarios() -> Scenarios:
    """The session's scenario runs (see the module docstring)."""
    return Scenarios()


@pytest.fixture(scope="session")
def update_expected(request: pytest.FixtureRequest) -> bool:
    """Whether this session rewrites ``expected/*.json`` (``pytest --update-expected``)."""
    return bool(request.config.getoption("--update-expected", default=False))
