"""Seeded random streams, one per (owner, purpose).

All randomness of a run comes from its seed. ``Streams(seed).get("blkdev",
"timing")`` returns a ``random.Random`` whose seed is derived from the run's
seed and the stream's name with BLAKE2b, never from ``hash()`` (salted per
process) or from creation order. Adding a stream, or drawing once more from
one stream, therefore leaves every other stream's draws unchanged.

The same derivation seeds the tie stream that perturbs the order of
same-instant events under ``--tie-seed``.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, *names: str) -> int:
    """A 64-bit seed derived from *seed* and a stream name, stable everywhere."""
    text = ":".join([str(seed), *names]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


class Streams:
    """Named random streams derived from one run seed.

    Each ``get(owner, purpose)`` creates the stream once and returns the same
    object afterwards, so an owner's draws form one sequence.
    """

    __slots__ = ("seed", "_streams")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def get(self, owner: str, purpose: str) -> random.Random:
        key = f"{owner}/{purpose}"
        stream = self._streams.get(key)
        if stream is None:
            stream = random.Random(derive_seed(self.seed, owner, purpose))
            self._streams[key] = stream
        return stream


def randbelow_many(stream: random.Random, n: int, count: int) -> list[int]:
    """*count* draws of ``stream.randrange(n)``, the same numbers at about half the cost.

    CPython's ``randrange(n)`` (3.11 to 3.13, ``_randbelow_with_getrandbits``)
    draws ``getrandbits(n.bit_length())`` until the value is below *n*; this
    does the same without the per-call argument checks. A test holds it to
    ``randrange`` so a Python that draws differently is caught.
    """
    getrandbits = stream.getrandbits
    k = n.bit_length()
    out = []
    append = out.append
    for _ in range(count):
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        append(r)
    return out
