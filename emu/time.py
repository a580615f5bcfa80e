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
    "min": 60 * NSEC_PER_SEC,
}
_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KiB": 1024,
    "M": 1024**2,
    "MiB": 1024**2,
    "G": 1024**3,
    "GiB": 1024**3,
    "T": 1024**4,
    "TiB": 1024**4,
}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-zµ]*)\s*$")


def parse_duration(text: str) -> int:
    """Parse ``"10ms"``, ``"1.5s"``, ``"250us"`` or ``"0"`` into nanoseconds.

    Raises:
        ValueError: the text is not a non-negative number with a time unit.
    """
    match = _NUMBER_UNIT.match(text) if isinstance(text, str) else None
    if match is None or (match.group(2) not in _DURATION_UNITS and text.strip() != "0"):
        raise ValueError(f'expected a duration like "10ms", got {text!r}')
    number, unit = match.groups()
    return _scale(number, _DURATION_UNITS.get(unit, 1), text)


def parse_size(text: str) -> int:
    """Parse ``"4KiB"``, ``"1GiB"``, ``"512"`` into bytes.

    Raises:
        ValueError: the text is not a non-negative number with a size unit.
    """
    match = _NUMBER_UNIT.match(text) if isinstance(text, str) else None
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f'expected a size like "4KiB", got {text!r}')
    number, unit = match.groups()
    return _scale(number, _SIZE_UNITS[unit], text)


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
