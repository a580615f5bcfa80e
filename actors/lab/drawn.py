"""One decoding pass over a run's trace for the outputs that draw it.

A policy's timeline (``actors.lab.timeline_intervals``) and its
Perfetto file (``actors.lab.perfetto_export.to_perfetto``) both read the
trace's records in order, and most records are neither's business: 64 % of
seed-inversion's are ``mm_filemap_add_to_page_cache``. ``drawn_records``
decodes the trace once for both and keeps the records of the events they
draw; of the others it keeps only what they still tell: the last record's
time (where slices still open at the end are closed) and who logged them
(every task that logged anything gets a timeline row). Given the result,
each output draws exactly what it draws from every record.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class DrawnRecords:
    """The records of the drawn events, and what the others tell.

    Attributes:
        records: the records whose event is drawn, in trace order.
        end_ns: the largest ``ts`` of any record (0 for an empty trace).
        actors: every actor that logged a record, in order of first
            appearance (``""`` for records without one).
    """

    records: list[dict[str, Any]]
    end_ns: int
    actors: tuple[str, ...]


def drawn_records(records: Iterable[dict[str, Any]], events: Collection[str]) -> DrawnRecords:
    """Decode *records* once, keeping those whose event is one of *events* (see the module docstring)."""
    kept: list[dict[str, Any]] = []
    actors: dict[str, None] = {}
    end_ns = 0
    for record in records:
        ts = record["ts"]
        if ts > end_ns:
            end_ns = ts
        actors[record.get("actor") or ""] = None
        if record["event"] in events:
            kept.append(record)
    return DrawnRecords(records=kept, end_ns=end_ns, actors=tuple(actors))
