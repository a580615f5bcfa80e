"""cgroup v2 ``io.max`` settings: the limits ``block/blk-throttle.c`` enforces.

Mirrors the ``io.max`` write path of ``block/blk-throttle.c`` (v5.10-v6.12,
``tg_set_limit()``): a ``MAJ:MIN`` device, then ``key=value`` tokens with keys
``rbps``, ``wbps`` (bytes per second), ``riops``, ``wiops`` (IOs per second);
a value is a decimal integer or ``max`` (no limit). Unknown keys and values
of zero are rejected, as the kernel rejects them (``-EINVAL``, ``-ERANGE``).

This module holds the setting only; the throttle itself (bios queued per
group and dispatched by a timer) is ``BlkThrottle`` where it is modelled.

Emulation notes:
    * Only the cgroup v2 ``io.max`` file; no ``io.low`` and no v1
      ``blkio.throttle.*`` files.
    * The kernel accepts ``0x``/octal spellings through ``kstrtoull(..., 0)``;
      only decimal is accepted here.
"""

from __future__ import annotations

import re

import attrs

_DEV = re.compile(r"^\d+:\d+$")
_DIGITS = re.compile(r"^\d+$")
_U64_MAX = (1 << 64) - 1
#: The keys of ``io.max``, in the order the kernel prints them.
IO_MAX_KEYS = ("rbps", "wbps", "riops", "wiops")


@attrs.frozen(kw_only=True)
class IoMax:
    """One group's ``io.max`` limits on one device; ``None`` = ``max`` (no limit)."""

    dev: str
    rbps: int | None = None
    wbps: int | None = None
    riops: int | None = None
    wiops: int | None = None

    def __str__(self) -> str:
        """The line ``cat io.max`` prints (``tg_prfill_limit``): every key, ``max`` where unlimited."""
        values = " ".join(f"{key}={'max' if getattr(self, key) is None else getattr(self, key)}" for key in IO_MAX_KEYS)
        return f"{self.dev} {values}"

    @property
    def limited(self) -> bool:
        """Whether any limit is set (a group all ``max`` is not throttled)."""
        return any(getattr(self, key) is not None for key in IO_MAX_KEYS)


def parse_io_max(text: str) -> IoMax:
    """Parse what one writes to ``io.max``: ``"8:0 rbps=1048576 riops=max"``.

    Mirror of ``tg_set_limit()`` (block/blk-throttle.c, v5.10): the device
    first (``blkg_conf_prep``), then each space-separated ``key=value``; a
    key not given keeps its default, ``max``.

    Raises:
        ValueError: no ``MAJ:MIN``, an unknown key, a value that is not a
            positive decimal integer or ``max``, or one above 2^64-1.
    """
    dev, _, body = text.strip().partition(" ")
    if not _DEV.match(dev):
        raise ValueError(f'expected "MAJ:MIN key=value ...", e.g. "8:0 rbps=1048576 riops=100", got {text!r}')
    limits: dict[str, int | None] = {}
    for tok in body.split():
        key, sep, val = tok.partition("=")
        if not sep or key not in IO_MAX_KEYS:
            raise ValueError(f"unknown io.max token {tok!r}; expected key=value with key one of {', '.join(IO_MAX_KEYS)}")
        if val == "max":
            limits[key] = None
        elif _DIGITS.match(val) and 0 < int(val) <= _U64_MAX:
            limits[key] = int(val)
        else:
            raise ValueError(f"io.max {key}: expected a positive integer or max, got {val!r}")
    return IoMax(dev=dev, **limits)
