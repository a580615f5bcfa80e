"""Shared fixtures: a fresh seeded engine and a checked runner."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from emu import Engine
from emu.testing import records, run_strict


@pytest.fixture
def engine() -> Engine:
    """A fresh engine (Trio driver) with seed 0."""
    return Engine(seed=0)


@pytest.fixture
def run() -> Callable[[Engine], Any]:
    """Run an engine with the one-runnable instrument attached, asserting it found nothing."""
    return run_strict


@pytest.fixture
def trace() -> Callable[[Engine], list[dict[str, Any]]]:
    """Decode an engine's trace records (call it after the run)."""
    return records


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--update-expected``: rewrite tests/scenarios/expected/*.json from fresh runs.

    Declared here, not in tests/scenarios/conftest.py: pytest only honours
    ``pytest_addoption`` in initial conftests, and a plain ``pytest`` run
    (testpaths = tests) does not load tests/scenarios/conftest.py early enough.
    """
    parser.addoption(
        "--update-expected",
        action="store_true",
        default=False,
        help="regenerate the committed scenario summaries in tests/scenarios/expected/",
    )
