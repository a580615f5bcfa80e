"""The TOML spellings of the config value types, and reading a TOML file.

The leaves of the config tree. Each value type (``actors.schema``:
``Duration``, ``Size``, ``Count``, ``IoLatency``...) is a ``NewType`` over
``int``/``float``: code building configs directly passes plain numbers,
while a TOML file spells them as people write them (``"10ms"``, ``"4KiB"``, ``"target=2000"``).
``VALUE_HOOKS`` pairs each type with the function that parses and checks its
TOML spelling; ``actors.lab.config_convert`` registers them with cattrs, so a bad
value is reported at its own key path. ``read_toml`` turns a file into a
dict, or into one ``ConfigError`` line naming the file and where it is broken.

Not here: the value types and the schema classes (``actors.schema``), the
converter and its error formatting (``actors.lab.config_convert``), cross-reference checks
(``actors.lab.config_check``); ``actors.lab.config`` re-exports what callers use.
"""

from __future__ import annotations

import pathlib
import tomllib
from collections.abc import Callable

from actors.block.blk_cgroup import parse_io_latency
from actors.schema import (
    Count,
    Duration,
    Factor,
    Fraction,
    IoLatency,
    Natural,
    PositiveDuration,
    PositiveSize,
    Size,
)
from emu.time import parse_duration, parse_size


class ConfigError(Exception):
    """A config could not be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _duration(value: object, _type: object = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    if not isinstance(value, str):
        raise ValueError(f'expected a duration like "10ms", got {value!r}')
    return parse_duration(value)


def _positive_duration(value: object, _type: object = None) -> int:
    ns = _duration(value)
    if ns <= 0:
        raise ValueError(f"expected a duration above zero, got {value!r}")
    return ns


def _size(value: object, _type: object = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str):
        raise ValueError(f'expected a size like "4KiB", got {value!r}')
    return parse_size(value)


def _positive_size(value: object, _type: object = None) -> int:
    size = _size(value)
    if size <= 0:
        raise ValueError(f"expected a size above zero, got {value!r}")
    return size


def _integer(low: int):
    def structure(value: object, _type: object = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"expected an integer >= {low}, got {value!r}")
        return value

    return structure


def _fraction(value: object, _type: object = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"expected a fraction between 0 and 1, got {value!r}")
    return float(value)


def _factor(value: object, _type: object = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ValueError(f"expected a number >= 0 (a factor), got {value!r}")
    return float(value)


def _io_latency(value: object, _type: object = None) -> int | None:
    if not isinstance(value, str):
        raise ValueError(f'expected "target=<usec>" or "max", got {value!r}')
    return parse_io_latency(value)


#: Each value type and the cattrs structure hook that reads its TOML spelling.
VALUE_HOOKS: tuple[tuple[object, Callable[[object, object], object]], ...] = (
    (Duration, _duration),
    (PositiveDuration, _positive_duration),
    (Size, _size),
    (PositiveSize, _positive_size),
    (Count, _integer(1)),
    (Natural, _integer(0)),
    (Fraction, _fraction),
    (Factor, _factor),
    (IoLatency, _io_latency),
)


def read_toml(path: pathlib.Path) -> dict:
    """Parse a TOML file.

    Raises:
        ConfigError: one line naming the file: missing, a directory, not
            UTF-8 (with the byte offset) or not TOML (with line and column).
    """
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, expected a TOML file"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
