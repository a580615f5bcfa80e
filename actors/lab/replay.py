"""Replaying a run directory: run again what it records, compare the trace event by event.

A run is a pure function of (config, policy, seed, tie seed). A run
directory records all four: ``config.toml`` (a byte copy of the config),
``results.json`` (each run's policy, seed and tie seed) and ``replay.json``.
``replay_run(run_dir, policy)`` runs the policy again on the copied config
and walks the new trace beside ``<policy>/trace.jsonl``, line by line, as
bytes (the digest is over those bytes). The first line that differs, or the
end of one trace before the other, is the divergence; its index, virtual
time and both versions are what ``emu replay`` prints.

A divergence means the emulator is not deterministic on this input (a bug:
a set iterated, an ``id()`` logged, a wall clock read), or the code changed
since the directory was written, or the directory was edited.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import orjson

from actors.lab.rundir import CONFIG_COPY, RunDirectory


@attrs.frozen(kw_only=True)
class Divergence:
    """The first event on which the recorded and the replayed traces differ.

    ``recorded``/``replayed`` are the decoded records (``None``: that trace
    had already ended; a string: the recorded line is not JSON).
    """

    index: int
    recorded: dict[str, Any] | str | None
    replayed: dict[str, Any] | str | None

    @property
    def ts(self) -> int | None:
        """Virtual time of the divergence: the earlier of the two records' times."""
        times = [r["ts"] for r in (self.recorded, self.replayed) if isinstance(r, dict) and isinstance(r.get("ts"), int)]
        return min(times, default=None)

    def fields(self) -> list[str]:
        """Keys whose values differ between the two records (both must be records)."""
        a, b = self.recorded, self.replayed
        if not isinstance(a, dict) or not isinstance(b, dict):
            return []
        return [k for k in dict.fromkeys([*a, *b]) if a.get(k, _MISSING) != b.get(k, _MISSING)]


_MISSING = object()


@attrs.frozen(kw_only=True)
class ReplayOutcome:
    """One policy replayed: events compared, the replay's digest, the first divergence if any."""

    policy: str
    seed: int
    tie_seed: int | None
    events: int
    digest: str
    recorded_digest: str | None
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        return self.divergence is None and (self.recorded_digest is None or self.recorded_digest == self.digest)


def _decode(line: bytes | None) -> dict[str, Any] | str | None:
    if line is None:
        return None
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line.decode(errors="replace")
    return record if isinstance(record, dict) else line.decode(errors="replace")


def compare_lines(recorded: Iterable[bytes], replayed: Iterable[bytes]) -> tuple[int, Divergence | None]:
    """Walk two traces' lines together (no newlines); return (events compared, first divergence).

    Events compared counts the lines that matched before the divergence (all
    of them when there is none).
    """
    a, b = iter(recorded), iter(replayed)
    index = 0
    while True:
        left, right = next(a, None), next(b, None)
        if left is None and right is None:
            return index, None
        if left != right:
            return index, Divergence(index=index, recorded=_decode(left), replayed=_decode(right))
        index += 1


def _trace_lines(path: pathlib.Path) -> Iterator[bytes]:
    with open(path, "rb") as src:
        for line in src:
            line = line.rstrip(b"\n")
            if line:
                yield line


def config_path(run_dir: RunDirectory) -> pathlib.Path:
    """The config to replay: the directory's copy, else the original ``replay.json`` names."""
    copy = run_dir.path / run_dir.replay.get("config_copy", CONFIG_COPY)
    if copy.is_file():
        return copy
    original = run_dir.replay.get("config")
    if original and pathlib.Path(original).is_file():
        return pathlib.Path(original)
    return copy


def config_matches(run_dir: RunDirectory, path: pathlib.Path) -> bool:
    """Whether *path*'s bytes hash to the ``config_sha256`` results.json recorded."""
    recorded = run_dir.document.get("config_sha256")
    return recorded is None or hashlib.sha256(path.read_bytes()).hexdigest() == recorded


def replay_run(run_dir: RunDirectory, policy: str, config: Any) -> ReplayOutcome:
    """Run *policy* again on *config* with the recorded seeds; compare with its ``trace.jsonl``.

    Raises:
        EmulatorError: the replayed run failed (not a divergence: the run ends in error).
        OSError: the recorded trace cannot be read.
    """
    from actors.lab.experiment import run_policy

    loaded = run_dir.run(policy)
    seed, tie_seed = loaded.results["seed"], loaded.results.get("tie_seed")
    run = run_policy(config, policy, seed=seed, tie_seed=tie_seed, keep_trace=True)
    events, divergence = compare_lines(_trace_lines(loaded.trace_path), run.trace.iter_lines())
    return ReplayOutcome(
        policy=policy,
        seed=seed,
        tie_seed=tie_seed,
        events=events,
        digest=run.trace.digest(),
        recorded_digest=loaded.results.get("trace_digest"),
        divergence=divergence,
    )


__all__ = ["Divergence", "ReplayOutcome", "compare_lines", "config_matches", "config_path", "replay_run"]
