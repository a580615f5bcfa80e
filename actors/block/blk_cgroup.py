"""The cgroup v2 hierarchy as the block layer sees it, and induced-delay bookkeeping.

Mirrors ``block/blk-cgroup.c`` and ``include/linux/blk-cgroup.h`` between
v4.19 and v5.4 (the parts io.latency uses), plus the ``io.latency`` string
syntax of ``block/blk-iolatency.c:iolatency_set_limit()``.

Theory of operation
-------------------

A cgroup is named by its path below the cgroup v2 root: ``""`` is the root,
``"workload.slice"`` a child of it, ``"workload.slice/protected"`` a
grandchild. The parent is derived from the path, so a hierarchy never needs
to be declared beyond the leaves: ``BlkcgHierarchy.lookup_create`` makes every
missing ancestor first. Iteration is in creation order, which always puts a
parent before its children::

    ""                          (root: Blkcg, congestion_count)
     └── "workload.slice"
          ├── "workload.slice/protected"
          └── "workload.slice/noisy"

Two kinds of object, as in the kernel:

* ``Blkcg`` (``struct blkcg`` + its ``css.cgroup->congestion_count``): one per
  cgroup, shared by every device. ``blk_cgroup_congested()`` walks these.
* ``BlkcgGq`` (``struct blkcg_gq``): one per (cgroup, request queue); carries
  the induced-delay state ``use_delay``, ``delay_nsec``, ``delay_start``,
  ``last_delay``, ``last_use``. A policy (io.latency) owns the table of blkgs
  of its queue.

The delay functions (``blkcg_use_delay`` ... ``blkcg_throttle_delay_nsec``)
are sans-IO: they mutate a blkg and return numbers. Sleeping the delay is the
caller's business (``actors/block/blkdev.py:blkcg_maybe_throttle_current``).

Emulation notes:
    * ``use_delay`` is never negative: ``blkcg_set_delay()`` (iocost, v5.4)
      is not modelled, so ``blkcg_scale_delay`` always decays.
    * ``use_memdelay``/PSI memstall accounting is not modelled.
    * Paths are plain strings; no css refcounts, no offlining.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import attrs

from emu import NSEC_PER_MSEC, NSEC_PER_SEC, NSEC_PER_USEC

#: The cgroup v2 root's path.
ROOT = ""

#: ``blkcg_maybe_throttle_blkg()``: one return to user sleeps at most this.
BLKCG_MAX_DELAY_NSEC = 250 * NSEC_PER_MSEC

_U64_MAX = (1 << 64) - 1
_DEV = re.compile(r"^\d+:\d+$")
_DIGITS = re.compile(r"^\d+$")


def parent_path(path: str) -> str | None:
    """The parent cgroup's path; ``None`` for the root.

    Raises:
        ValueError: the path is not normalised (leading/trailing/double ``/``).
    """
    check_path(path)
    if path == ROOT:
        return None
    head, sep, _tail = path.rpartition("/")
    return head if sep else ROOT


def check_path(path: str) -> None:
    """Reject paths that would name the same cgroup two ways.

    Raises:
        ValueError: empty components, or a leading or trailing ``/``.
    """
    if not isinstance(path, str):
        raise ValueError(f"cgroup path must be a string, got {path!r}")
    if path and any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f'cgroup path must look like "a.slice/b" (root is ""), got {path!r}')


@functools.cache
def ancestors(path: str) -> tuple[str, ...]:
    """*path* and every ancestor, leaf first, ending with the root ``""``.

    A pure function of the path, worked out once per path: every bio walks its group's lineage several times.
    """
    out = [path]
    parent = parent_path(path)
    while parent is not None:
        out.append(parent)
        parent = parent_path(parent)
    return tuple(out)


# -- io.latency syntax ------------------------------------------------------


def is_dev(text: str) -> bool:
    """Is *text* a device number ``MAJ:MIN``, as ``blkg_conf_prep()`` reads it (``"%u:%u"``)?"""
    return _DEV.match(text) is not None


def split_io_latency(text: str) -> tuple[str | None, str]:
    """Split an ``io.latency`` write into its optional ``MAJ:MIN`` and its body.

    Mirror of the device part of ``blkg_conf_prep()`` (block/blk-cgroup.c):
    ``"8:0 target=75"`` → ``("8:0", "target=75")``; ``"target=75"`` →
    ``(None, "target=75")``.

    Emulation notes:
        The kernel requires the device; we allow leaving it out, meaning
        "the device this setting is given to".
    """
    if not isinstance(text, str):
        raise ValueError(f'expected "target=<usec>" or "max", got {text!r}')
    words = text.split()
    if words and is_dev(words[0]):
        return words[0], " ".join(words[1:])
    return None, " ".join(words)


def parse_io_latency(text: str) -> int | None:
    """Parse an ``io.latency`` value into ``min_lat_nsec``; ``None`` means off.

    Mirror of the token loop of ``iolatency_set_limit()`` (block/blk-iolatency.c,
    v4.19-v5.4): tokens ``key=val`` with key ``target`` and val ``max`` or a
    decimal number of microseconds; the last token wins; ``target=0`` and
    ``target=max`` switch io.latency off. An optional leading ``MAJ:MIN`` is
    accepted and ignored (see ``split_io_latency``).

    Args:
        text: e.g. ``"target=2000"``, ``"8:0 target=75"``, ``"max"``.

    Returns:
        The target in nanoseconds, or ``None`` for off.

    Raises:
        ValueError: anything else (the kernel returns -EINVAL).

    Emulation notes:
        A bare ``"max"`` (no ``target=``) is accepted as off, as the cgroup
        documentation spells it; the 4.19 parser rejects it.
    """
    _dev, body = split_io_latency(text)
    tokens = body.split()
    if tokens == ["max"]:
        return None
    if not tokens:
        raise ValueError(f'expected "target=<usec>" or "max", got {text!r}')
    lat_val = 0
    for tok in tokens:
        key, sep, val = tok.partition("=")
        if not sep or key != "target" or not val:
            raise ValueError(f'expected "target=<usec>" or "max", got {tok!r}')
        if val == "max":
            lat_val = 0
        elif _DIGITS.match(val) and int(val) * NSEC_PER_USEC <= _U64_MAX:
            lat_val = int(val) * NSEC_PER_USEC
        else:
            raise ValueError(f'expected "target=<usec>" or "max", got {tok!r}')
    return lat_val or None


def format_io_latency(dev: str, min_lat_nsec: int | None) -> str:
    """What reading ``io.latency`` prints (``iolatency_prfill_limit()``): ``"8:0 target=75"``.

    An unset target prints nothing (``""``), as in the kernel.
    """
    if not min_lat_nsec:
        return ""
    return f"{dev} target={min_lat_nsec // NSEC_PER_USEC}"


# -- the hierarchy -----------------------------------------------------------


@attrs.define(eq=False)
class Blkcg:
    """``struct blkcg`` together with its cgroup's ``congestion_count``.

    Attributes:
        path: the cgroup's path (``""`` for the root).
        parent: the parent's ``Blkcg``; ``None`` for the root.
        congestion_count: blkgs of this cgroup with ``use_delay > 0``
            (``cgroup->congestion_count``, include/linux/cgroup-defs.h).
    """

    path: str
    parent: Blkcg | None
    congestion_count: int = 0


class BlkcgHierarchy:
    """Every cgroup the block layer knows, keyed by path, in creation order.

    Args:
        paths: cgroups to create at once (ancestors are created too).
    """

    __slots__ = ("_blkcgs",)

    def __init__(self, paths: tuple[str, ...] | list[str] = ()) -> None:
        self._blkcgs: dict[str, Blkcg] = {ROOT: Blkcg(ROOT, None)}
        for path in paths:
            self.lookup_create(path)

    def __iter__(self) -> Iterator[Blkcg]:
        """Cgroups in creation order (a parent always before its children)."""
        return iter(list(self._blkcgs.values()))

    def __contains__(self, path: str) -> bool:
        return path in self._blkcgs

    def get(self, path: str) -> Blkcg | None:
        """The cgroup at *path*, or ``None``."""
        return self._blkcgs.get(path)

    def lookup_create(self, path: str) -> Blkcg:
        """The cgroup at *path*, creating it and its missing ancestors (``mkdir -p``)."""
        blkcg = self._blkcgs.get(path)
        if blkcg is not None:
            return blkcg
        parent = self.lookup_create(parent_path(path))  # type: ignore[arg-type]
        blkcg = Blkcg(path, parent)
        self._blkcgs[path] = blkcg
        return blkcg

    def blk_cgroup_congested(self, path: str) -> bool:
        """Mirror of ``blk_cgroup_congested()`` (block/blk-cgroup.c, v4.19).

        True when the cgroup at *path* or any ancestor has a non-zero
        ``congestion_count``, i.e. some blkg of it on some device has
        ``use_delay`` set. Readahead gives up when this is true.
        """
        blkcg = self._blkcgs.get(path)
        if blkcg is None:
            # Not created yet: only its existing ancestors can be congested.
            for anc in ancestors(path)[1:]:
                blkcg = self._blkcgs.get(anc)
                if blkcg is not None:
                    break
        while blkcg is not None:
            if blkcg.congestion_count:
                return True
            blkcg = blkcg.parent
        return False


# -- per-queue blkgs and induced delay --------------------------------------


@attrs.define(eq=False)
class BlkcgGq:
    """``struct blkcg_gq``: one cgroup on one request queue.

    Attributes:
        blkcg: the cgroup.
        parent: the parent cgroup's blkg on the same queue; ``None`` for root.
        use_delay: how many scale-down steps past depth 1 are in force.
        delay_nsec: accumulated induced delay.
        delay_start: start of the current 1 s decay window.
        last_delay: delay left to charge as of ``delay_start``.
        last_use: ``use_delay`` as of ``delay_start``.
    """

    blkcg: Blkcg
    parent: BlkcgGq | None
    use_delay: int = 0
    delay_nsec: int = 0
    delay_start: int = 0
    last_delay: int = 0
    last_use: int = 0

    @property
    def path(self) -> str:
        return self.blkcg.path


def blkg_lookup_create(hierarchy: BlkcgHierarchy, blkgs: dict[str, BlkcgGq], path: str) -> BlkcgGq:
    """Mirror of ``blkg_lookup_create()`` (block/blk-cgroup.c): find or make *path*'s blkg.

    Parents are created before children, so *blkgs* stays in topological order.
    """
    blkg = blkgs.get(path)
    if blkg is not None:
        return blkg
    blkcg = hierarchy.lookup_create(path)
    parent = None if blkcg.parent is None else blkg_lookup_create(hierarchy, blkgs, blkcg.parent.path)
    blkg = BlkcgGq(blkcg, parent)
    blkgs[path] = blkg
    return blkg


def blkcg_use_delay(blkg: BlkcgGq) -> None:
    """Mirror of ``blkcg_use_delay()`` (include/linux/blk-cgroup.h, v4.19).

    The first use marks the cgroup congested.
    """
    blkg.use_delay += 1
    if blkg.use_delay == 1:
        blkg.blkcg.congestion_count += 1


def blkcg_unuse_delay(blkg: BlkcgGq) -> bool:
    """Mirror of ``blkcg_unuse_delay()``: undo one use; ``False`` if there was none."""
    if blkg.use_delay == 0:
        return False
    blkg.use_delay -= 1
    if blkg.use_delay == 0:
        blkg.blkcg.congestion_count -= 1
    return True


def blkcg_clear_delay(blkg: BlkcgGq) -> None:
    """Mirror of ``blkcg_clear_delay()``: drop every use at once."""
    if blkg.use_delay:
        blkg.use_delay = 0
        blkg.blkcg.congestion_count -= 1


def blkcg_scale_delay(blkg: BlkcgGq, now: int) -> None:
    """Mirror of ``blkcg_scale_delay()`` (block/blk-cgroup.c, v4.19-v5.4).

    At most once per second (strictly more than 1 s after ``delay_start``)
    the accumulated delay is reduced by what was outstanding a window ago,
    at most by the time elapsed; if ``use_delay`` went down since (we are
    being unthrottled), by at least half of it.
    """
    old = blkg.delay_start
    if not old + NSEC_PER_SEC < now:
        return
    blkg.delay_start = now
    cur = blkg.delay_nsec
    sub = min(blkg.last_delay, now - old)
    cur_use = blkg.use_delay
    if cur_use < blkg.last_use:
        sub = max(sub, blkg.last_delay >> 1)
    if cur < sub:
        blkg.delay_nsec = 0
        blkg.last_delay = 0
    else:
        blkg.delay_nsec = cur - sub
        blkg.last_delay = cur - sub
    blkg.last_use = cur_use


def blkcg_add_delay(blkg: BlkcgGq, now: int, delta: int) -> None:
    """Mirror of ``blkcg_add_delay()``: decay first, then charge *delta* ns."""
    blkcg_scale_delay(blkg, now)
    blkg.delay_nsec += delta


def blkcg_throttle_delay_nsec(blkg: BlkcgGq, now: int) -> int:
    """How long a task returning to user space must sleep, in ns.

    The computing half of ``blkcg_maybe_throttle_blkg()`` (block/blk-cgroup.c,
    v4.19-v5.4): walk from *blkg* up to (not including) the root; at each
    level with ``use_delay`` decay the delay and take the maximum; cap the
    result at 250 ms. The sleep itself is the caller's.

    Emulation notes:
        The delay is not consumed by sleeping it (nor is it in the kernel):
        only ``blkcg_scale_delay`` lowers it, once per second.
    """
    delay_nsec = 0
    level: BlkcgGq | None = blkg
    while level is not None and level.parent is not None:
        if level.use_delay:
            blkcg_scale_delay(level, now)
            delay_nsec = max(delay_nsec, level.delay_nsec)
        level = level.parent
    return min(delay_nsec, BLKCG_MAX_DELAY_NSEC)
