"""Engine tests run under both drivers: the Trio one and the direct one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from emu import Engine


@pytest.fixture(params=["trio", "direct"])
def driver(request: pytest.FixtureRequest) -> str:
    """The engine driver under test."""
    return request.param


@pytest.fixture
def make_engine(driver: str) -> Callable[..., Engine]:
    """Build a fresh engine for the current driver (keyword arguments as ``Engine``)."""

    def make(**kwargs: object) -> Engine:
        kwargs.setdefault("seed", 0)
        return Engine(driver=driver, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    """A fresh engine with seed 0 for the current driver."""
    return make_engine()
