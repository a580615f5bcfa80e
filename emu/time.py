"""Virtual time: integer nanoseconds, with the kernel's unit constants.

Virtual time is always an ``int`` of nanoseconds. Nothing in the engine or in
emulated code reads a wall clock; the only clock is ``Engine.now_ns``.

This module also parses the human spellings used in configs ("10ms", "4KiB")
into integers. Parsers raise ``ValueError`` with a message that says what was
expected; the config layer turns that into a located error.
"""

from __future__ import annotations

import re

NSEC_PER_USEC = 1_000
NSEC_PER_MSEC = 1_000_000
NSEC_PER_SEC = 1_000_000_000

_DURATION_UNITS = {
    "ns": 1,
    "us": NSEC_PER_USEC,
    "µs": NSEC_PER_USEC,
    "ms": NSEC_PER_MSEC,
    "s": NSEC_PER_SEC,
    "m": 60 * NSEC_PER_SEC,
    "min": 60 * NSEC_PER_SEC,
    "h": 3600 * NSEC_PER_SEC,
}
#: Size prefixes, matched case-insensitively. Every prefix is binary, as in
#: fio's default (``kb_base=1024``): ``4k``, ``4K``, ``4KB`` and ``4KiB`` are all 4096 bytes.
_SIZE_PREFIXES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_UNIT = re.compile(r"^(?:b?|([kmgt])(?:b|ib)?)$", re.IGNORECASE)
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-zµ]*)\s*$")

#: The spellings error messages list.
DURATION_SPELLINGS = "ns, us (or µs), ms, s, m (or min), h"
SIZE_SPELLINGS = "B, k/K, KB, KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (any case; all powers of 1024)"


def parse_duration(text: str) -> int:
    """Parse ``"10ms"``, ``"1.5s"``, ``"250us"``, ``"2h"`` or ``"0"`` into nanoseconds.

    Raises:
        ValueError: the text is not a non-negative number with a time unit
            (the message lists the accepted units).
    """
    match = _NUMBER_UNIT.match(text) if isinstance(text, str) else None
    if match is None or (match.group(2) not in _DURATION_UNITS and text.strip() != "0"):
        raise ValueError(f'expected a duration like "10ms" (units: {DURATION_SPELLINGS}), got {text!r}')
    number, unit = match.groups()
    return _scale(number, _DURATION_UNITS.get(unit, 1), text)


def parse_size(text: str) -> int:
    """Parse ``"4KiB"``, ``"4k"``, ``"1GB"``, ``"512"`` into bytes (every prefix is a power of 1024).

    Raises:
        ValueError: the text is not a non-negative number with a size unit
            (the message lists the accepted units).
    """
    match = _NUMBER_UNIT.match(text) if isinstance(text, str) else None
    unit = _SIZE_UNIT.match(match.group(2)) if match else None
    if match is None or unit is None:
        raise ValueError(f'expected a size like "4KiB" (units: {SIZE_SPELLINGS}), got {text!r}')
    return _scale(match.group(1), _SIZE_PREFIXES[(unit.group(1) or "").lower()], text)


def parse_bandwidth(text: str) -> int:
    """Parse ``"200MB/s"``, ``"512MiB/s"``, ``"1g/s"`` (or a bare size) into bytes per second.

    Raises:
        ValueError: not a size per second (the message lists the accepted units).
    """
    if not isinstance(text, str):
        raise ValueError(f'expected a bandwidth like "512MiB/s", got {text!r}')
    size = text.strip().removesuffix("/s")
    try:
        return parse_size(size)
    except ValueError:
        raise ValueError(f'expected a bandwidth like "512MiB/s" (units: {SIZE_SPELLINGS}, then /s), got {text!r}') from None


def _scale(number: str, unit: int, text: str) -> int:
    whole, _, frac = number.partition(".")
    value = int(whole) * unit
    if frac:
        num = int(frac) * unit
        den = 10 ** len(frac)
        if num % den:
            raise ValueError(f"{text!r} is not a whole number of the base unit")
        value += num // den
    return value


def format_ns(ns: int) -> str:
    """Render nanoseconds for humans: ``1.50 ms``, ``12.0 s``, ``830 ns``."""
    if ns >= NSEC_PER_SEC:
        return f"{ns / NSEC_PER_SEC:.3g} s"
    if ns >= NSEC_PER_MSEC:
        return f"{ns / NSEC_PER_MSEC:.3g} ms"
    if ns >= NSEC_PER_USEC:
        return f"{ns / NSEC_PER_USEC:.3g} us"
    return f"{ns} ns"
