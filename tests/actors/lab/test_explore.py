"""``emu explore`` (actors/lab/explore.py): exploration, distinct failures, exact replay, the corpus.

What exploration must show: under v3 the exploration of configs/v3-races.toml
finds the leaked cached_page reference and IO under mmap_sem on the retry,
and btrfs_used_cached_fastpath stays 0; v5.1 finds nothing; every reported
failure replays exactly with its printed command (checked here through the
real ``emu run --strict``); the committed corpus still fails the same way.
"""

from __future__ import annotations

import os
import pathlib
import shlex

import orjson
import pytest
from click.testing import CliRunner

from actors.lab import explore as explore_mod
from actors.lab.cli import main
from actors.lab.config import load_config
from actors.lab.experiment import run_policy
from actors.lab.explore import (
    explore,
    explore_command,
    run_one,
    signature,
    swarm_switches,
    with_swarm,
    write_swarm_config,
)
from emu import HungTaskError

REPO = pathlib.Path(__file__).resolve().parents[3]
RACES = REPO / "configs" / "v3-races.toml"
CORPUS = pathlib.Path(__file__).with_name("explore_corpus.json")


@pytest.fixture(scope="module")
def exploration():
    return explore(load_config(RACES), "configs/v3-races.toml", runs=3)


def test_v3_races_finds_the_v3_defects_and_nothing_under_v51(exploration) -> None:
    v3 = {f.signature for f in exploration.distinct("v3")}
    assert any(sig.startswith("page_ref_leak") for sig in v3), v3
    assert "io_under_mmap_sem_on_retry:retry_before_uptodate" in v3
    assert exploration.failing_runs["v3"] == 3
    assert exploration.distinct("v5.1") == [] and exploration.violations["v5.1"] == 0
    assert exploration.counters["v3"]["btrfs_used_cached_fastpath"] == 0
    assert exploration.counters["v3"]["btrfs_mkwrite_dropped"] > 0  # the path that would use it ran


def test_each_distinct_failure_is_reported_once_with_its_first_run(exploration) -> None:
    keys = list(exploration.failures)
    assert len(keys) == len(set(keys))
    for failure in exploration.failures.values():
        assert failure.runs >= 1 and failure.violations >= failure.runs
        assert isinstance(failure.first["ts"], int) and isinstance(failure.first["event"], int)


def test_printed_replay_command_reproduces_the_failure_exactly(exploration, tmp_path: pathlib.Path) -> None:
    """Run the printed command (with --out moved into tmp) through the real CLI: exit 1, and the
    same violation at the same virtual time and event index."""
    failure = next(f for f in exploration.failures.values() if f.signature.startswith("page_ref_leak"))
    words = shlex.split(failure.replay_command())
    assert words[:2] == ["emu", "run"] and "--strict" in words
    words[words.index("--out") + 1] = str(tmp_path / "replay")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        result = CliRunner().invoke(main, [*words[1:], "--no-plots"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 1, result.output
    first = failure.first
    assert f"invariant violated: {failure.policy}: {first['invariant']}" in result.stderr
    assert f"event={first['event']} " in result.stderr and f"page={first['page']}" in result.stderr
    results = orjson.loads((tmp_path / "replay" / "results.json").read_bytes())
    violations = results["runs"][0]["invariants"]["violations"]
    same = [v for v in violations if signature(v) == failure.signature]
    assert (same[0]["ts"], same[0]["event"]) == (first["ts"], first["event"])


def test_swarm_switches_come_from_the_seed_alone_and_replay_from_a_derived_file(tmp_path: pathlib.Path) -> None:
    config = load_config(RACES)
    switches = [swarm_switches(config, seed) for seed in range(20)]
    assert switches == [swarm_switches(config, seed) for seed in range(20)]
    assert len(set(switches)) > 5 and all(set(s) <= {"munmap", "mmap", "mprotect", "truncate", "proc_read", "io"} for s in switches)
    off = next(s for s in switches if s)
    path = write_swarm_config(RACES, off, 7, tmp_path)
    derived = load_config(path)
    assert tuple(derived.swarm.off) == off
    a = run_policy(derived, "v3", seed=7, tie_seed=3, keep_trace=False).results
    b = run_policy(with_swarm(config, off), "v3", seed=7, tie_seed=3, keep_trace=False).results
    assert a["trace_digest"] == b["trace_digest"]


def test_emulator_errors_are_failures_named_after_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def hung(*_args, **_kwargs):
        raise HungTaskError(123, ["a: waiting on b"])

    import actors.lab.experiment

    monkeypatch.setattr(actors.lab.experiment, "run_policy", hung)
    outcome = run_one(load_config(RACES), "v5.1", 1, 0, ())
    assert [(f["invariant"], f["ts"]) for f in outcome.failures] == [("HungTaskError", 123)]


@pytest.mark.parametrize(("policy", "status"), [("v5.1", 0), ("v3", 1)])
def test_explore_command_exit_status_and_summary(policy: str, status: int, tmp_path: pathlib.Path) -> None:
    corpus = tmp_path / "corpus.json"
    result = CliRunner().invoke(explore_command, [str(RACES), "--runs", "2", "--policy", policy, "--corpus", str(corpus)])
    assert result.exit_code == status, result.output
    assert "btrfs_used_cached_fastpath:" in result.stdout
    cases = orjson.loads(corpus.read_bytes())["cases"]
    assert (len(cases) > 0) is (status == 1)
    if status:
        assert "replay: emu run" in result.stdout and "distinct failures:" in result.stdout
    else:
        assert "no failures" in result.stdout


def test_summary_shows_what_was_injected_only_when_something_was() -> None:
    injecting = RACES.with_name("fault-injection.toml")
    result = CliRunner().invoke(explore_command, [str(injecting), "--runs", "1", "--policy", "v5.1"])
    assert result.exit_code == 0, result.output
    counts = {line.split(":")[0].strip(): int(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("  inject_")}
    assert set(counts) == {"inject_read_errors", "inject_write_errors", "inject_enospc", "inject_sigkill"} and counts["inject_sigkill"] == 2
    assert "sigbus_delivered: v5.1" in result.stdout
    quiet = CliRunner().invoke(explore_command, [str(RACES), "--runs", "1", "--policy", "v5.1"])
    assert "inject_" not in quiet.stdout and "btrfs_used_cached_fastpath:" in quiet.stdout


def test_explore_rejects_a_bad_config_with_exit_2(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n')
    result = CliRunner().invoke(explore_command, [str(bad), "--runs", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def _corpus_cases() -> list[dict]:
    return orjson.loads(CORPUS.read_bytes())["cases"]


@pytest.mark.parametrize("case", _corpus_cases(), ids=lambda c: f"{c['policy']}-{c['signature']}-s{c['seed']}")
def test_corpus_case_still_fails_the_same_way(case: dict) -> None:
    """Each saved failure reproduces: same signature, first seen at the same time and event."""
    config = load_config(REPO / case["config"])
    assert list(config.swarm.off) == case["swarm_off"]
    results = run_policy(config, case["policy"], seed=case["seed"], tie_seed=case["tie_seed"], keep_trace=False).results
    same = [v for v in results["invariants"]["violations"] if signature(v) == case["signature"]]
    assert same, f"{case['replay']} no longer fails with {case['signature']}"
    assert (same[0]["ts"], same[0]["event"]) == (case["ts"], case["event"])


def test_corpus_covers_both_v3_findings() -> None:
    signatures = {c["signature"] for c in _corpus_cases()}
    assert any(s.startswith("page_ref_leak") for s in signatures)
    assert "io_under_mmap_sem_on_retry:retry_before_uptodate" in signatures
    assert explore_mod.CORPUS_SCHEMA == orjson.loads(CORPUS.read_bytes())["schema"]
