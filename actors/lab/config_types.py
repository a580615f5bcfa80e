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
from actors.block.blk_throttle import IoMax, parse_io_max
from actors.schema import (
    Bandwidth,
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
)
from emu import time as vtime
from emu.time import parse_bandwidth, parse_duration, parse_size

#: TOML 1.0 integers are signed 64-bit; Python's parser takes wider ones, the config does not.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The longest duration a config may spell (horizon included): one virtual hour.
MAX_DURATION = 3600 * 1_000_000_000
#: The largest size a config may spell (files, lengths, btrfs space): 1 PiB.
MAX_SIZE = 2**50
#: The largest bandwidth: 1 TiB/s.
MAX_BANDWIDTH = 2**40


class ConfigError(Exception):
    """A config could not be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def check_int64(value: int) -> int:
    """*value* if it fits a signed 64-bit integer (as TOML 1.0 requires), else ``ValueError``."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"expected an integer that fits 64 bits (at most {INT64_MAX}), got {value}")
    return value


def _duration(value: object, _type: object = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    if not isinstance(value, str):
        raise ValueError(f'expected a duration like "10ms" (units: {vtime.DURATION_SPELLINGS}), got {value!r}')
    ns = parse_duration(value)
    if ns > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 1h (the bound on any duration, horizon included), got {value!r}")
    return ns


def _positive_duration(value: object, _type: object = None) -> int:
    ns = _duration(value)
    if ns <= 0:
        raise ValueError(f"expected a duration above zero, got {value!r}")
    return ns


def _bounded(value: object, parse: Callable[[str], int], limit: tuple[int, str], what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        number = check_int64(value)
    elif isinstance(value, str):
        number = parse(value)
    else:
        raise ValueError(f'expected {what}, got {value!r}')
    if number > limit[0]:
        raise ValueError(f"expected at most {limit[1]}, got {value!r}")
    return number


def _size(value: object, _type: object = None) -> int:
    return _bounded(value, parse_size, (MAX_SIZE, "1PiB"), f'a size like "4KiB" (units: {vtime.SIZE_SPELLINGS})')


def _positive_size(value: object, _type: object = None) -> int:
    size = _size(value)
    if size <= 0:
        raise ValueError(f"expected a size above zero, got {value!r}")
    return size


def _bandwidth(value: object, _type: object = None) -> int:
    rate = _bounded(value, parse_bandwidth, (MAX_BANDWIDTH, "1TiB/s"), f'a bandwidth like "512MiB/s" (units: {vtime.SIZE_SPELLINGS}, then /s)')
    if rate <= 0:
        raise ValueError(f"expected a bandwidth above zero, got {value!r}")
    return rate


def _integer(low: int):
    def structure(value: object, _type: object = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"expected an integer >= {low}, got {value!r}")
        return check_int64(value)

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


def _io_max(value: object, _type: object = None) -> IoMax:
    if not isinstance(value, str):
        raise ValueError(f'expected "MAJ:MIN rbps=<bytes/s> wbps=... riops=<IOs/s> wiops=...", got {value!r}')
    return parse_io_max(value)


def _memory_limit(value: object, _type: object = None) -> int | None:
    """``memory.max``/``memory.high``: ``"max"`` (no limit) or a size."""
    if value == "max":
        return None
    return _bounded(value, parse_size, (MAX_SIZE, "1PiB"), f'a size like "64MiB" or "max" (units: {vtime.SIZE_SPELLINGS})')


#: Each value type and the cattrs structure hook that reads its TOML spelling.
VALUE_HOOKS: tuple[tuple[object, Callable[[object, object], object]], ...] = (
    (Duration, _duration),
    (PositiveDuration, _positive_duration),
    (Size, _size),
    (PositiveSize, _positive_size),
    (Bandwidth, _bandwidth),
    (Count, _integer(1)),
    (Natural, _integer(0)),
    (Fraction, _fraction),
    (Factor, _factor),
    (IoLatency, _io_latency),
    (IoMax, _io_max),
    (MemoryLimit, _memory_limit),
)


def read_toml(path: pathlib.Path) -> dict:
    """Parse a TOML file (a leading UTF-8 byte-order mark is skipped).

    Raises:
        ConfigError: one line naming the file: missing, a directory, not a
            regular file, unreadable (a symlink loop, no permission), not
            UTF-8 (with the byte offset) or not TOML (with line and column).
    """
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ConfigError([f"{path}: not a regular file, expected a TOML file"])
        return tomllib.loads(path.read_bytes().decode("utf-8").removeprefix("\ufeff"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, expected a TOML file"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
