"""Tests for ``actors.lab.config_types``: value types read from their TOML spellings, and ``read_toml``."""

from __future__ import annotations

import os
import pathlib

import pytest

from actors.block.blk_throttle import IoMax

from actors.lab.config_types import (
    MAX_DURATION,
    MAX_SIZE,
    VALUE_HOOKS,
    Bandwidth,
    ConfigError,
    Count,
    Duration,
    Factor,
    Fraction,
    IoLatency,
    MemoryLimit,
    Natural,
    PositiveDuration,
    PositiveSize,
    Size,
    read_toml,
)

HOOKS = dict(VALUE_HOOKS)


def test_every_value_type_has_a_hook() -> None:
    """Each NewType a schema field may use is read by its own hook."""
    assert set(HOOKS) == {Duration, PositiveDuration, Size, PositiveSize, Bandwidth, Count, Natural, Fraction, Factor, IoLatency, IoMax, MemoryLimit}


@pytest.mark.parametrize(
    ("type_", "value", "expected"),
    [
        (Duration, "10ms", 10_000_000),
        (Duration, 0, 0),
        (PositiveDuration, "1.5s", 1_500_000_000),
        (Size, "4KiB", 4096),
        (Size, 0, 0),
        (PositiveSize, 8192, 8192),
        (Size, "4k", 4096),
        (Size, "1TB", 1 << 40),
        (Size, MAX_SIZE, MAX_SIZE),
        (Bandwidth, "200MB/s", 200 << 20),
        (Bandwidth, "512MiB", 512 << 20),
        (Duration, "1h", MAX_DURATION),
        (Natural, 2**63 - 1, 2**63 - 1),
        (Count, 1, 1),
        (Natural, 0, 0),
        (Fraction, 1, 1.0),
        (Factor, 2, 2.0),
        (Factor, 0.5, 0.5),
        (IoLatency, "target=2000", 2_000_000),
        (IoLatency, "max", None),
    ],
)
def test_value_hook_reads_toml_spelling(type_: object, value: object, expected: object) -> None:
    """Durations become ns, sizes bytes, io.latency min_lat_nsec (``max`` is off)."""
    assert HOOKS[type_](value, type_) == expected


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        (Duration, 5, 'expected a duration like "10ms" (units: ns, us (or µs), ms, s, m (or min), h), got 5'),
        (Duration, True, 'expected a duration like "10ms" (units: ns, us (or µs), ms, s, m (or min), h), got True'),
        (PositiveDuration, 0, "expected a duration above zero, got 0"),
        (PositiveDuration, "100000min", "expected a duration of at most 1h (the bound on any duration, horizon included), got '100000min'"),
        (Size, -1, 'expected a size like "4KiB" (units: B, k/K, KB, KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (any case; all powers of 1024)), got -1'),
        (Size, "9999999999TiB", "expected at most 1PiB, got '9999999999TiB'"),
        (Size, 2**64, f"expected an integer that fits 64 bits (at most {2**63 - 1}), got {2**64}"),
        (Count, 2**64, f"expected an integer that fits 64 bits (at most {2**63 - 1}), got {2**64}"),
        (Bandwidth, "0MB/s", "expected a bandwidth above zero, got '0MB/s'"),
        (PositiveSize, 0, "expected a size above zero, got 0"),
        (Count, 0, "expected an integer >= 1, got 0"),
        (Natural, True, "expected an integer >= 0, got True"),
        (Fraction, 1.5, "expected a fraction between 0 and 1, got 1.5"),
        (Factor, -1, "expected a number >= 0 (a factor), got -1"),
        (Factor, "2x", "expected a number >= 0 (a factor), got '2x'"),
        (IoLatency, 3, """expected "target=<usec>" or "max", got 3"""),
    ],
)
def test_value_hook_rejects_with_config_words(type_: object, value: object, message: str) -> None:
    """A bad value is a ValueError whose text is the message the config line shows."""
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        HOOKS[type_](value, type_)


def test_read_toml_reads_a_table(tmp_path: pathlib.Path) -> None:
    """A TOML file comes back as its dict."""
    path = tmp_path / "a.toml"
    path.write_text('name = "a"\n[device]\nnr_requests = 4\n')
    assert read_toml(path) == {"name": "a", "device": {"nr_requests": 4}}


def test_read_toml_names_the_file_when_it_cannot_read(tmp_path: pathlib.Path) -> None:
    """A missing file, a directory and bad bytes are each one ConfigError line naming the file."""
    (tmp_path / "bad.toml").write_bytes(b'name = "\xff"\n')
    for name, message in (
        ("nope.toml", "no such file"),
        ("", "is a directory, expected a TOML file"),
        ("bad.toml", "not UTF-8 text (invalid start byte at byte 8)"),
    ):
        path = tmp_path / name
        with pytest.raises(ConfigError) as info:
            read_toml(path)
        assert info.value.problems == [f"{path}: {message}"]


def test_read_toml_names_the_file_it_cannot_read_at_all(tmp_path: pathlib.Path) -> None:
    """A symlink loop and a FIFO are one line each, without hanging on the FIFO."""
    (tmp_path / "loop.toml").symlink_to("loop.toml")
    os.mkfifo(tmp_path / "fifo.toml")
    for name, message in (
        ("loop.toml", "cannot read: Too many levels of symbolic links"),
        ("fifo.toml", "not a regular file, expected a TOML file"),
    ):
        path = tmp_path / name
        with pytest.raises(ConfigError) as info:
            read_toml(path)
        assert info.value.problems == [f"{path}: {message}"]


def test_read_toml_skips_a_utf8_byte_order_mark(tmp_path: pathlib.Path) -> None:
    """A file saved with a UTF-8 BOM (as Windows editors do) reads as without it."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbfname = "a"\n')
    assert read_toml(path) == {"name": "a"}
