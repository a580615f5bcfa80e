"""Shared fixtures: a fresh seeded engine and a checked runner (STYLE.md 5.22, 5.24)."""

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
