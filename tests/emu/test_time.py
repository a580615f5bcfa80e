"""Tests for emu/time.py: integer nanoseconds and the config spellings."""

from __future__ import annotations

import pytest

from emu import (
    NSEC_PER_MSEC,
    NSEC_PER_SEC,
    NSEC_PER_USEC,
    format_ns,
    parse_duration,
    parse_size,
)


def test_units_are_the_kernels() -> None:
    """``NSEC_PER_*`` match include/linux/time64.h."""
    assert (NSEC_PER_USEC, NSEC_PER_MSEC, NSEC_PER_SEC) == (1_000, 1_000_000, 1_000_000_000)


@pytest.mark.parametrize(
    ("text", "ns"),
    [("0", 0), ("10ms", 10 * NSEC_PER_MSEC), ("1.5s", 1_500_000_000), ("250us", 250_000), ("7ns", 7), (" 2 min ", 120 * NSEC_PER_SEC), ("3µs", 3_000)],
)
def test_parse_duration(text: str, ns: int) -> None:
    """Durations parse to exact integer nanoseconds."""
    assert parse_duration(text) == ns
    assert isinstance(parse_duration(text), int)


@pytest.mark.parametrize("text", ["", "10", "ms", "-1ms", "1.5ns", "10 parsecs", 10])
def test_parse_duration_rejects(text: object) -> None:
    """Bad durations raise ``ValueError`` saying what was expected."""
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "size"), [("512", 512), ("4KiB", 4096), ("4K", 4096), ("1GiB", 1 << 30), ("1.5MiB", 3 << 19)])
def test_parse_size(text: str, size: int) -> None:
    """Sizes parse to exact bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["4kb", "1.3B", "x"])
def test_parse_size_rejects(text: str) -> None:
    """Bad sizes raise ``ValueError``."""
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_ns() -> None:
    """Human rendering picks a unit."""
    assert format_ns(830) == "830 ns"
    assert format_ns(1_500_000) == "1.5 ms"
    assert format_ns(12 * NSEC_PER_SEC) == "12 s"
    assert format_ns(2_000) == "2 us"
