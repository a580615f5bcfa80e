"""Tests for emu/time.py: integer nanoseconds and the config spellings."""

from __future__ import annotations

import pytest

from emu import (
    NSEC_PER_MSEC,
    NSEC_PER_SEC,
    NSEC_PER_USEC,
    format_ns,
    parse_bandwidth,
    parse_duration,
    parse_size,
)


def test_units_are_the_kernels() -> None:
    """``NSEC_PER_*`` match include/linux/time64.h."""
    assert (NSEC_PER_USEC, NSEC_PER_MSEC, NSEC_PER_SEC) == (1_000, 1_000_000, 1_000_000_000)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("10ms", 10 * NSEC_PER_MSEC),
        ("1.5s", 1_500_000_000),
        ("250us", 250_000),
        ("7ns", 7),
        (" 2 min ", 120 * NSEC_PER_SEC),
        ("2m", 120 * NSEC_PER_SEC),
        ("1h", 3600 * NSEC_PER_SEC),
        ("3µs", 3_000),
    ],
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


def test_parse_duration_message_lists_the_units() -> None:
    """A bad duration's message names every accepted unit."""
    with pytest.raises(ValueError, match=r"ns, us \(or µs\), ms, s, m \(or min\), h"):
        parse_duration("10 parsecs")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        ("512B", 512),
        ("4KiB", 4096),
        ("4K", 4096),
        ("4k", 4096),
        ("4KB", 4096),
        ("4kb", 4096),
        ("1g", 1 << 30),
        ("1GB", 1 << 30),
        ("1GiB", 1 << 30),
        ("1m", 1 << 20),
        ("2T", 2 << 40),
        ("1.5MiB", 3 << 19),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    """Sizes parse to exact bytes; every prefix, in any case and with B or iB, is a power of 1024 (fio's default)."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["x", "4iB", "4ki", "4kbit", "4bb", "4 parsecs", "-4k"])
def test_parse_size_rejects(text: str) -> None:
    """Bad sizes raise ``ValueError`` listing the accepted units."""
    with pytest.raises(ValueError, match="KiB.*GiB"):
        parse_size(text)


def test_parse_size_rejects_fractional_bytes() -> None:
    """A size that is not a whole number of bytes is refused."""
    with pytest.raises(ValueError, match="whole number"):
        parse_size("1.3B")


@pytest.mark.parametrize(("text", "rate"), [("200MB/s", 200 << 20), ("512MiB/s", 512 << 20), ("1g/s", 1 << 30), ("4096", 4096), ("1GiB", 1 << 30)])
def test_parse_bandwidth(text: str, rate: int) -> None:
    """Bandwidths are a size per second (``/s`` optional), in bytes per second."""
    assert parse_bandwidth(text) == rate


@pytest.mark.parametrize("text", ["200MB/h", "fast", "/s", 5])
def test_parse_bandwidth_rejects(text: object) -> None:
    """Bad bandwidths raise ``ValueError`` naming the spelling."""
    with pytest.raises(ValueError, match="/s"):
        parse_bandwidth(text)  # type: ignore[arg-type]


def test_format_ns() -> None:
    """Human rendering picks a unit."""
    assert format_ns(830) == "830 ns"
    assert format_ns(1_500_000) == "1.5 ms"
    assert format_ns(12 * NSEC_PER_SEC) == "12 s"
    assert format_ns(2_000) == "2 us"
