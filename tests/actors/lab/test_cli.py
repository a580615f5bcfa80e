"""The ``emu`` command line (actors.lab.cli), driven through click's CliRunner and a subprocess."""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import time

import orjson
import pytest
from click.testing import CliRunner

from actors.lab.cli import main, replay_command
from actors.lab.config import load_config
from actors.lab.experiment import run_policy

ROOT = pathlib.Path(__file__).resolve().parents[3]

TINY = """\
name = "tiny"
seed = 3
horizon = "1s"
policies = ["v4.19", "v5.1"]

[[files]]
name = "data"
size = "1MiB"

[[processes]]
name = "app"
mappings = [ { name = "data", file = "data" } ]

  [[processes.threads]]
  name = "toucher"
  iterations = 4
  program = [
    { op = "touch", mapping = "data", pattern = "sequential", pages = 4 },
    { op = "think", time = "1ms" },
  ]
"""


@pytest.fixture
def tiny(tmp_path: pathlib.Path) -> pathlib.Path:
    """A tiny config: one file, one process, a toucher thread, four iterations, a 1 s horizon."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_validate_good_config_exits_0(tiny: pathlib.Path) -> None:
    """``emu validate --format json`` prints the effective config, defaults filled in, and the resolved policies."""
    result = _run("validate", str(tiny), "--format", "json")
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.stdout)
    config = document["config"]
    assert config["name"] == "tiny" and config["horizon"] == 1_000_000_000
    assert config["device"]["nr_requests"] == 64  # a default
    assert config["processes"][0]["threads"][0]["program"][0]["op"] == "touch"
    assert list(document["policies"]) == ["v4.19", "v5.1"]
    assert document["policies"]["v5.1"]["filemap_fault"] == "v5.1"


def test_run_writes_results_and_both_traces(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``emu run`` writes results.json (schema 1, one run per policy) and both traces per policy."""
    out = tmp_path / "out"
    result = _run("run", str(tiny), "--out", str(out), "--no-plots")
    assert result.exit_code == 0, result.output
    results = orjson.loads((out / "results.json").read_bytes())
    assert results["schema"] == 1 and results["experiment"] == "tiny"
    assert [r["policy"] for r in results["runs"]] == ["v4.19", "v5.1"]
    for run in results["runs"]:
        assert run["seed"] == 3 and run["tie_seed"] is None
        assert "toucher/touch" in run["latency"]
        jsonl = out / run["policy"] / "trace.jsonl"
        assert hashlib.blake2b(jsonl.read_bytes(), digest_size=16).hexdigest() == run["trace_digest"]
        perfetto = orjson.loads(gzip.decompress((out / run["policy"] / "trace.perfetto.json.gz").read_bytes()))
        assert perfetto["traceEvents"] and perfetto["otherData"]["policy"] == run["policy"]
    assert (out / "config.toml").read_text() == TINY
    # The table: a row per policy, the latency columns, the mmap_sem columns.
    assert "v4.19" in result.stdout and "v5.1" in result.stdout
    assert "toucher/touch" in result.stdout and "contended" in result.stdout
    assert "toucher/think" not in result.stdout


def test_run_twice_gives_identical_digests(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Two runs of the same config have the same trace digests (and the same results)."""
    docs = []
    for name in ("a", "b"):
        result = _run("run", str(tiny), "--out", str(tmp_path / name), "--no-plots")
        assert result.exit_code == 0, result.output
        docs.append(orjson.loads((tmp_path / name / "results.json").read_bytes()))
    assert [r["trace_digest"] for r in docs[0]["runs"]] == [r["trace_digest"] for r in docs[1]["runs"]]
    assert docs[0] == docs[1]


def test_run_policy_seed_and_tie_seed_options(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``--policy`` picks the runs and ``--seed``/``--tie-seed`` reach results and replay.json."""
    out = tmp_path / "out"
    result = _run("run", str(tiny), "--out", str(out), "--policy", "v5.7", "--seed", "11", "--tie-seed", "5", "--no-plots")
    assert result.exit_code == 0, result.output
    (run,) = orjson.loads((out / "results.json").read_bytes())["runs"]
    assert (run["policy"], run["seed"], run["tie_seed"]) == ("v5.7", 11, 5)
    replay = orjson.loads((out / "replay.json").read_bytes())
    assert replay == {"config": str(tiny.resolve()), "config_copy": "config.toml", "policies": ["v5.7"], "seed": 11, "tie_seed": 5}


def test_unknown_policy_exits_2_listing_valid_names(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """An unknown ``--policy`` exits 2 naming it and the valid policies, and writes nothing."""
    result = _run("run", str(tiny), "--out", str(tmp_path / "out"), "--policy", "v9.99")
    assert result.exit_code == 2
    assert "v9.99" in result.stderr and "v4.19" in result.stderr and "v5.1" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_run_never_replaces_a_directory_that_is_not_a_run(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A non-empty DIR that ``emu run`` did not write is refused with exit 2 and one line, even with ``--force``."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("real work")
    for extra in ([], ["--force"]):
        result = _run("run", str(tiny), "--out", str(out), "--no-plots", *extra)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1 and "not a run directory" in result.stderr and "Traceback" not in result.output
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.toml"]


def test_run_again_replaces_its_previous_run(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Re-running a command replaces the previous run of the same experiment; another experiment's needs ``--force``."""
    out = tmp_path / "out"
    assert _run("run", str(tiny), "--out", str(out), "--no-plots").exit_code == 0
    again = _run("run", str(tiny), "--out", str(out), "--no-plots")
    assert again.exit_code == 0, again.output
    assert "replacing the previous tiny run" in again.stderr
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace('name = "tiny"', 'name = "other"'))
    refused = _run("run", str(other), "--out", str(out), "--no-plots")
    assert refused.exit_code == 2 and "holds a run of 'tiny'" in refused.stderr and "--force" in refused.stderr
    assert orjson.loads((out / "results.json").read_bytes())["experiment"] == "tiny"
    forced = _run("run", str(other), "--out", str(out), "--no-plots", "--force")
    assert forced.exit_code == 0, forced.output
    assert orjson.loads((out / "results.json").read_bytes())["experiment"] == "other"
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "replay.json", "results.json", "v4.19", "v5.1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.toml", "out", "tiny.toml"]  # no lock, no temporary


def test_run_out_defaults_to_runs_and_the_experiment_name(tiny: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``--out`` the run goes to ``runs/<experiment name>``."""
    monkeypatch.chdir(tmp_path)
    result = _run("run", str(tiny), "--no-plots", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "tiny" / "results.json").is_file()
    assert result.stderr == ""  # -q: the report only


def test_run_into_a_locked_out_dir_fails_at_once(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """While another ``emu run`` holds DIR (its lock), a second one exits 2 before running and writes nothing."""
    import fcntl

    out = tmp_path / "out"
    with open(tmp_path / ".out.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = _run("run", str(tiny), "--out", str(out), "--no-plots")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "another emu run is writing it" in result.stderr
    assert not out.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_unwritable_out_is_refused_before_running(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """An --out whose parent cannot be written exits 2 with one line before the simulation."""
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        result = _run("run", str(tiny), "--out", str(parent / "out"), "--no-plots")
    finally:
        parent.chmod(0o755)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "cannot write there" in result.stderr


def test_out_under_a_file_is_refused_before_running(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """An --out below a regular file (or /proc, /sys) cannot be created: exit 2, one line, no report, nothing left."""
    (tmp_path / "plain").write_text("x")
    for out in (tmp_path / "plain" / "out", pathlib.Path("/proc/emu-out")):
        result = _run("run", str(tiny), "--out", str(out), "--no-plots")
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and result.stderr.count("\n") == 1 and "cannot write there" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "tiny.toml"]


def test_late_write_failure_still_prints_the_table(tiny: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails after the simulation (disk full) prints the report, then one error line; exit 1, no traceback."""
    import errno

    import actors.lab.output

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(actors.lab.output, "_write_contents", full)
    out = tmp_path / "out"
    result = _run("run", str(tiny), "--out", str(out), "--no-plots")
    assert result.exit_code == 1
    assert "toucher/touch" in result.stdout
    assert result.stderr.splitlines()[-1] == f"error: {out}: writing failed: No space left on device; nothing was written"
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_policys_files_failing_to_write_still_prints_the_table(tiny: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, jobs: str) -> None:
    """A policy's own files fail to write where its run ended (disk full): the other runs finish, the report is printed, then one error line; exit 1, nothing left."""
    import errno

    from actors.lab.policy_files import PolicyFiles

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(PolicyFiles, "_write", full)
    out = tmp_path / "out"
    result = _run("run", str(tiny), "--out", str(out), "--no-plots", "-j", jobs)
    assert result.exit_code == 1
    assert "toucher/touch" in result.stdout and "v5.1" in result.stdout
    assert result.stderr.splitlines()[-1] == f"error: {out}: writing failed: No space left on device; nothing was written"
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


@pytest.mark.parametrize("seed", ["-1", str(2**64), "x"])
def test_bad_seed_exits_2_before_running(tiny: pathlib.Path, tmp_path: pathlib.Path, seed: str) -> None:
    """``--seed`` takes 0 … 2^64-1; anything else is a usage error (exit 2), nothing created."""
    for option in ("--seed", "--tie-seed"):
        result = _run("run", str(tiny), "--out", str(tmp_path / "out"), option, seed)
        assert result.exit_code == 2
        assert "Traceback" not in result.output and option in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_trace_options(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``--perfetto json`` writes it plain, ``--no-trace`` writes no trace file, ``--trace-window`` trims the Perfetto file."""
    plain = _run("run", str(tiny), "--out", str(tmp_path / "plain"), "--no-plots", "--perfetto", "json", "--policy", "v4.19")
    assert plain.exit_code == 0 and sorted(p.name for p in (tmp_path / "plain" / "v4.19").iterdir()) == ["trace.jsonl", "trace.perfetto.json"]
    bare = _run("run", str(tiny), "--out", str(tmp_path / "bare"), "--no-plots", "--no-trace", "--policy", "v4.19")
    assert bare.exit_code == 0 and list((tmp_path / "bare" / "v4.19").iterdir()) == []
    window = _run("run", str(tiny), "--out", str(tmp_path / "win"), "--no-plots", "--trace-window", "0:1ms", "--policy", "v4.19")
    assert window.exit_code == 0, window.output
    doc = orjson.loads(gzip.decompress((tmp_path / "win" / "v4.19" / "trace.perfetto.json.gz").read_bytes()))
    assert doc["otherData"]["window_ns"] == [0, 1_000_000]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--trace-window", "2s:3s"], "after the horizon"), (["--trace-window", "0:1ms", "--no-trace"], "writes none"), (["--perfetto", "zip"], "zip")],
)
def test_bad_trace_options_exit_2_before_running(tiny: pathlib.Path, tmp_path: pathlib.Path, args: list[str], message: str) -> None:
    """A window past the horizon, a window with no Perfetto file, an unknown format: exit 2, nothing created."""
    result = _run("run", str(tiny), "--out", str(tmp_path / "out"), *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_largest_seed_runs(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """The largest seed the option takes reaches results.json intact."""
    result = _run("run", str(tiny), "--out", str(tmp_path / "out"), "--seed", str(2**64 - 1), "--policy", "v4.19", "--no-plots")
    assert result.exit_code == 0, result.output
    assert orjson.loads((tmp_path / "out" / "results.json").read_bytes())["runs"][0]["seed"] == 2**64 - 1


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_run_failure_prints_error_and_replay_command(tiny: pathlib.Path, tmp_path: pathlib.Path, monkeypatch, jobs: str) -> None:
    """An EmulatorError in a run exits 1 with the error and one command that replays it; nothing is written (not even
    the files of the policy that ran first, written as it ended), in this process or on forked workers."""
    import actors.lab.experiment
    from emu import HungTaskError

    real = actors.lab.experiment.run_policy

    def hangs_on_v51(config, policy, **kwargs):
        if policy == "v5.1":
            raise HungTaskError(123, ["app.toucher: waits on app.mmap_sem, held by nobody"])
        return real(config, policy, **kwargs)

    monkeypatch.setattr(actors.lab.experiment, "run_policy", hangs_on_v51)
    out = tmp_path / "out"
    result = _run("run", str(tiny), "--out", str(out), "--tie-seed", "9", "-j", jobs)  # forked workers inherit the patch
    assert result.exit_code == 1
    assert "HungTaskError" in result.stderr and "app.mmap_sem" in result.stderr
    replay = [line for line in result.stderr.splitlines() if line.startswith("replay: ")]
    assert replay == [f"replay: emu run {tiny} --policy v5.1 --seed 3 --tie-seed 9 --out {out}-replay"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]


def test_strict_fails_on_invariant_violations(tiny: pathlib.Path, tmp_path: pathlib.Path, monkeypatch) -> None:
    """``--strict`` exits 1 printing each violation and a replay command; without it the run succeeds."""
    import actors.lab.experiment

    real = actors.lab.experiment.run_policy

    def leaky(config, policy, **kwargs):
        run = real(config, policy, **kwargs)
        if policy == "v4.19":
            run.results["invariants"]["violations"].append({"invariant": "page_ref_leak", "ts": 5000, "page": "ino1:7"})
        return run

    monkeypatch.setattr(actors.lab.experiment, "run_policy", leaky)
    result = _run("run", str(tiny), "--out", str(tmp_path / "lax"), "--no-plots", "-j", "1")
    assert result.exit_code == 0, result.output
    out = tmp_path / "strict"
    result = _run("run", str(tiny), "--out", str(out), "--no-plots", "--strict", "-j", "1")
    assert result.exit_code == 1
    assert "page_ref_leak" in result.stderr and "ino1:7" in result.stderr
    assert f"replay: emu run {tiny} --policy v4.19 --seed 3 --out {out}-replay" in result.stderr
    assert (out / "results.json").exists()  # the evidence is kept


def test_strict_summarises_many_violations(tiny: pathlib.Path, tmp_path: pathlib.Path, monkeypatch) -> None:
    """Thousands of violations print as the first ten, a count of the rest and one tally line; ``-v`` lists them all."""
    import actors.lab.experiment

    real = actors.lab.experiment.run_policy

    def leaky(config, policy, **kwargs):
        run = real(config, policy, **kwargs)
        run.results["invariants"]["violations"].extend({"invariant": "page_ref_leak", "ts": i, "page": f"ino1:{i}"} for i in range(5000))
        return run

    monkeypatch.setattr(actors.lab.experiment, "run_policy", leaky)
    result = _run("run", str(tiny), "--out", str(tmp_path / "a"), "--no-plots", "--strict", "-j", "1")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("invariant violated")]
    assert len(lines) == 10
    assert "... 9990 more (-v lists them all" in result.stderr
    assert "strict: 10000 invariant violation(s): v4.19 page_ref_leak x5000, v5.1 page_ref_leak x5000" in result.stderr
    result = _run("run", str(tiny), "--out", str(tmp_path / "b"), "--no-plots", "--strict", "-v", "-j", "1")
    assert sum(line.startswith("invariant violated") for line in result.stderr.splitlines()) == 10000


def test_replay_command_quotes_paths() -> None:
    """The replay command is one shell-safe line."""
    assert replay_command("my configs/a.toml", "v3", 1, None, "out dir") == "emu run 'my configs/a.toml' --policy v3 --seed 1 --out 'out dir'"


def test_version_names_the_distribution() -> None:
    result = _run("--version")
    assert result.exit_code == 0 and result.stdout.startswith("emu, version ")


def test_bench_pingpong_json_prints_one_line() -> None:
    """``emu bench pingpong --json`` prints one JSON line with name, ops, wall_s and ops_per_s, then the repeats."""
    result = _run("bench", "pingpong", "--json", "--messages", "2000")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    record = orjson.loads(line)
    assert list(record) == ["name", "ops", "wall_s", "ops_per_s", "repeats", "wall_s_all"]
    assert record["repeats"] == 1 and record["wall_s_all"] == [record["wall_s"]]
    assert record["name"] == "pingpong" and record["ops"] == 2000 and record["wall_s"] > 0


def test_bench_rwsem_json_counts_acquisitions() -> None:
    """``emu bench rwsem`` runs the peer's workload through the mmap_sem path and counts acquisitions."""
    result = _run("bench", "rwsem", "--json", "--t-end", "20")
    assert result.exit_code == 0, result.output
    record = orjson.loads(result.stdout)
    # 100 tasks thinking ~1 s each for 20 s: about 2000 acquisitions.
    assert record["name"] == "rwsem" and 1500 < record["ops"] < 2500


def test_bench_repeats_reports_median_and_spread() -> None:
    """``--repeats N`` times the workload N times: JSON has every wall time and the median; text says the spread."""
    result = _run("bench", "pingpong", "--messages", "200", "--repeats", "3", "--json")
    assert result.exit_code == 0, result.output
    record = orjson.loads(result.stdout)
    assert record["repeats"] == 3 and len(record["wall_s_all"]) == 3
    assert sorted(record["wall_s_all"])[1] == record["wall_s"]
    text = _run("bench", "pingpong", "--messages", "200", "--repeats", "3")
    assert "median of 3" in text.stdout and "min" in text.stdout
    assert _run("bench", "pingpong", "--repeats", "0").exit_code == 2


def test_bench_saturated_times_both_sides_alternately() -> None:
    """``emu bench saturated`` counts every task's acquisitions and gives one ratio per repeat against SimPy."""
    result = _run("bench", "saturated", "--waiters", "50", "--rounds", "3", "--repeats", "2", "--driver", "direct", "--json")
    assert result.exit_code == 0, result.output
    record = orjson.loads(result.stdout)
    assert record["ops"] == 150 and record["waiters"] == 50 and len(record["ratio_all"]) == 2
    assert record["us_per_op"] > 0 and record["simpy_us_per_op"] > 0
    assert _run("bench", "saturated", "--waiters", "0").exit_code == 2


def test_bench_munmap_times_one_vma_and_checks_mapped() -> None:
    """``emu bench munmap`` reports the VMA and its mapped pages; more mapped than pages is a usage error."""
    record = orjson.loads(_run("bench", "munmap", "--pages", "64", "--mapped", "8", "--json").stdout)
    assert record["name"] == "munmap" and record["pages"] == 64 and record["mapped"] == 8 and record["wall_s"] >= 0
    result = _run("bench", "munmap", "--pages", "4", "--mapped", "8")
    assert result.exit_code == 2 and "--mapped" in result.stderr


def test_bench_scale_runs_each_point_and_reports_the_spread() -> None:
    """``emu bench scale`` runs the task series at the first horizon, then the horizon series; bad lists exit 2."""
    result = _run("bench", "scale", "--tasks", "2,4", "--horizons", "0.01,0.02", "--base-tasks", "3", "--json")
    assert result.exit_code == 0, result.output
    record = orjson.loads(result.stdout)
    assert [(p["tasks"], p["horizon_s"]) for p in record["points"]] == [(2, 0.01), (4, 0.01), (3, 0.02)]
    assert all(p["records"] > 0 for p in record["points"]) and record["max_over_min"] >= 1
    assert _run("bench", "scale", "--tasks", "ten").exit_code == 2


def test_bench_scenario_times_every_phase_and_prints_the_digests(tiny: pathlib.Path) -> None:
    """``emu bench scenario CONFIG`` times set-up, simulation, results, plots and perfetto; the digest is the run's own."""
    result = _run("bench", "scenario", str(tiny), "--policy", "v4.19", "--repeats", "2", "--json")
    assert result.exit_code == 0, result.output
    record = orjson.loads(result.stdout)
    assert list(record["phases"]) == ["setup", "simulation", "results", "plots", "perfetto", "total"]
    assert all(row["min"] <= row["median"] <= row["max"] for row in record["phases"].values())
    config = load_config(tiny)
    assert record["digests"] == {"v4.19": run_policy(config, "v4.19").results["trace_digest"]}
    direct = orjson.loads(_run("bench", "scenario", str(tiny), "--policy", "v4.19", "--driver", "direct", "--json").stdout)
    assert direct["driver"] == "direct" and direct["digests"] == record["digests"]
    assert _run("bench", "scenario", str(tiny), "--policy", "nope").exit_code == 2


def test_main_runs_in_a_subprocess(tiny: pathlib.Path) -> None:
    """``main()`` works as a program: validate exits 0, a bad config exits 2 without a traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "from actors.lab.cli import main; main()"]
    ok = subprocess.run([*cmd, "validate", str(tiny)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [*cmd, "validate", str(ROOT / "tests/actors/lab/bad_configs/duration_ten.toml")], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "ten" in bad.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_exits_130_with_one_line_and_writes_nothing(tmp_path: pathlib.Path, jobs: str) -> None:
    """SIGINT during the simulation: exit 130, one line (no actor crash, no Trio error), no directory, no lock; with
    worker processes too (a terminal sends SIGINT to the whole process group)."""
    config = tmp_path / "long.toml"
    config.write_text(TINY.replace('horizon = "1s"', 'horizon = "1h"').replace("iterations = 4", "iterations = 0"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    words = [sys.executable, "-c", "from actors.lab.cli import main; main()", "run", str(config), "--out", str(tmp_path / "runs" / "out"), "-v", "-j", jobs]
    process = subprocess.Popen(words, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path, start_new_session=True)
    line = process.stderr.readline()  # -v says when the first policy starts
    assert line.startswith("running tiny under v4.19"), line
    if jobs != "1":
        time.sleep(3)  # let the workers start their runs
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: nothing written"]
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.toml"]  # not even runs/, which the run had created


def test_run_on_two_jobs_writes_the_serial_run_byte_for_byte(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``-j 2`` runs the policies in worker processes: same stdout, same files, same bytes as ``-j 1``."""
    serial = _run("run", str(tiny), "--out", str(tmp_path / "serial"), "-j", "1", "-q")
    parallel = _run("run", str(tiny), "--out", str(tmp_path / "parallel"), "-j", "2", "-q")
    assert serial.exit_code == parallel.exit_code == 0, parallel.output
    assert serial.stdout == parallel.stdout
    files = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "parallel") for p in (tmp_path / "parallel").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes(), name
    assert _run("run", str(tiny), "--out", str(tmp_path / "x"), "-j", "0").exit_code == 2


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_run_on_the_direct_driver_writes_the_trio_run_byte_for_byte(tiny: pathlib.Path, tmp_path: pathlib.Path, jobs: str) -> None:
    """``--driver direct`` steps the same actors without Trio: same stdout, same files, same bytes."""
    runs = {driver: _run("run", str(tiny), "--out", str(tmp_path / driver), "--driver", driver, "-j", jobs, "-q") for driver in ("trio", "direct")}
    assert runs["trio"].exit_code == runs["direct"].exit_code == 0, runs["direct"].output
    assert runs["trio"].stdout == runs["direct"].stdout
    files = sorted(p.relative_to(tmp_path / "trio") for p in (tmp_path / "trio").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "direct") for p in (tmp_path / "direct").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "trio" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name


def test_a_worker_reports_a_failed_run_with_its_policy_and_error(tiny: pathlib.Path, monkeypatch) -> None:
    """``run_policy_job`` (what a worker runs) returns the failure, so the parent names the policy and prints the replay line."""
    import actors.lab.experiment
    from actors.lab.experiment import PolicyFailure, run_policy_job
    from emu import HungTaskError

    def hangs(config, policy, **kwargs):
        raise HungTaskError(5, ["app.toucher: waits on app.mmap_sem"])

    monkeypatch.setattr(actors.lab.experiment, "run_policy", hangs)
    previous = signal.getsignal(signal.SIGINT)
    try:
        failure = run_policy_job(load_config(tiny), "v5.1", 3, None)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert isinstance(failure, PolicyFailure) and failure.policy == "v5.1" and failure.emulator_error
    assert failure.error.startswith("HungTaskError: ") and "app.mmap_sem" in failure.error and "Traceback" in failure.traceback


# -- emu run --format, emu report, emu replay ---------------------------------------


@pytest.fixture
def run_dir(tiny: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """A fresh run directory of the tiny config, written by ``emu run`` with plots on."""
    out = tmp_path / "out"
    result = _run("run", str(tiny), "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_run_draws_plots_by_default(run_dir: pathlib.Path) -> None:
    """``emu run`` without ``--no-plots`` leaves a CDF per op, a timeline per policy and the samples behind them."""
    assert sorted(p.name for p in run_dir.glob("*.png")) == ["latency-cdf-toucher-touch.png", "timeline-v4.19.png", "timeline-v5.1.png"]
    assert (run_dir / "v4.19" / "latency-samples.json").is_file()


def test_run_format_json_prints_the_report_as_data(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``emu run --format json`` prints the report rows (ns) on stdout and nothing else."""
    result = _run("run", str(tiny), "--out", str(tmp_path / "out"), "--no-plots", "--format", "json")
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert [row["policy"] for row in report["rows"]] == ["v4.19", "v5.1"] and report["ops"] == ["toucher/touch"]
    assert set(report["rows"][0]["mmap_sem"]) == {"contended", "wait_total_ns", "wait_max_ns", "wait_avg_ns"}


def test_report_rerenders_the_run_from_disk(run_dir: pathlib.Path) -> None:
    """``emu report DIR`` prints the same report ``emu run`` printed, in every format, without running."""
    from actors.lab.report import build_report, render_markdown, report_json

    document = orjson.loads((run_dir / "results.json").read_bytes())
    as_json = _run("report", str(run_dir), "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert orjson.loads(as_json.stdout) == report_json(build_report(document))
    as_md = _run("report", str(run_dir), "--format", "markdown")
    assert as_md.stdout == render_markdown(build_report(document))
    table = _run("report", str(run_dir))
    assert "toucher/touch" in table.stdout and "wait avg" in table.stdout and "v5.1" in table.stdout


def test_report_redraws_the_plots_identically_elsewhere(run_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``emu report DIR --plots-out P`` redraws every PNG byte for byte into P; ``--window`` changes only the timelines; DIR is untouched."""
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.png")}
    plots = tmp_path / "plots"
    result = _run("report", str(run_dir), "--format", "markdown", "--plots-out", str(plots))
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in plots.glob("*.png")} == before
    assert "wrote 3 plots" in result.stderr
    result = _run("report", str(run_dir), "--window", "1ms:3ms", "--plots-out", str(plots))
    assert result.exit_code == 0, result.output
    after = {p.name: p.read_bytes() for p in plots.glob("*.png")}
    assert after["timeline-v4.19.png"] != before["timeline-v4.19.png"]
    assert after["latency-cdf-toucher-touch.png"] == before["latency-cdf-toucher-touch.png"]
    assert {p.name: p.read_bytes() for p in run_dir.glob("*.png")} == before


def test_report_never_writes_into_the_run_directory(run_dir: pathlib.Path) -> None:
    """Without --plots-out nothing is drawn; --plots-out DIR itself is refused (exit 2, one line)."""
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert _run("report", str(run_dir)).exit_code == 0
    refused = _run("report", str(run_dir), "--plots-out", str(run_dir))
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1 and "never overwrites" in refused.stderr
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_report_without_samples_falls_back_to_percentiles(tiny: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A run written with ``--no-plots`` still gets plots from ``emu report``, with a warning that the CDFs are coarse."""
    out = tmp_path / "out"
    assert _run("run", str(tiny), "--out", str(out), "--no-plots").exit_code == 0
    result = _run("report", str(out), "--format", "markdown", "--plots-out", str(tmp_path / "plots"))
    assert result.exit_code == 0, result.output
    assert "percentiles" in result.stderr and (tmp_path / "plots" / "latency-cdf-toucher-touch.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "later"], "START:END"),
        (["--window", "3ms:1ms"], "end after it starts"),
        (["--window", "5s:6s"], "starts after the run ends"),
    ],
)
def test_report_rejects_a_bad_window(run_dir: pathlib.Path, tmp_path: pathlib.Path, args: list[str], message: str) -> None:
    """A malformed, empty or out-of-run ``--window`` exits 2 naming what was expected, and draws nothing."""
    result = _run("report", str(run_dir), *args, "--plots-out", str(tmp_path / "plots"))
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "plots").exists()


def test_report_window_needs_plots_out(run_dir: pathlib.Path) -> None:
    """``--window`` alone is a usage error: it only shapes plots."""
    result = _run("report", str(run_dir), "--window", "1ms:3ms")
    assert result.exit_code == 2 and "--plots-out" in result.stderr and result.stdout == ""


def test_report_and_replay_refuse_a_directory_without_results(tmp_path: pathlib.Path) -> None:
    """``emu report`` and ``emu replay`` on a directory that is not a run directory exit 2 in one line."""
    for command in ("report", "replay"):
        result = _run(command, str(tmp_path))
        assert result.exit_code == 2 and "not a run directory" in result.stderr and "Traceback" not in result.output


def test_report_refuses_an_incomplete_directory(run_dir: pathlib.Path) -> None:
    """A directory still marked INCOMPLETE is refused by ``emu report`` and ``emu replay`` in one line."""
    (run_dir / "INCOMPLETE").write_text("")
    for command in ("report", "replay"):
        result = _run(command, str(run_dir))
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "incomplete run directory" in result.stderr


def test_replay_succeeds_on_a_fresh_directory(run_dir: pathlib.Path) -> None:
    """``emu replay DIR`` reruns every policy and prints the events compared and the digest, exit 0."""
    results = orjson.loads((run_dir / "results.json").read_bytes())
    result = _run("replay", str(run_dir))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{r['policy']}: {r['events']} events match, digest {r['trace_digest']}" for r in results["runs"]]
    one = _run("replay", str(run_dir), "--policy", "v5.1")
    assert one.exit_code == 0 and one.stdout.startswith("v5.1: ") and len(one.stdout.splitlines()) == 1


def test_replay_fails_on_a_trace_edited_by_hand(run_dir: pathlib.Path) -> None:
    """A trace.jsonl with one field of one line changed: exit 1, index, virtual time, both versions and a replay command."""
    trace = run_dir / "v4.19" / "trace.jsonl"
    lines = trace.read_bytes().splitlines()
    index = len(lines) // 2
    record = orjson.loads(lines[index])
    original = dict(record)
    record["actor"] = "someone.else"
    lines[index] = orjson.dumps(record)
    trace.write_bytes(b"\n".join(lines) + b"\n")
    result = _run("replay", str(run_dir))
    assert result.exit_code == 1
    err = result.stderr
    assert f"v4.19: traces diverge at event {index}, virtual time" in err and f"({original['ts']} ns)" in err
    assert f"  recorded: {orjson.dumps(record).decode()}" in err
    assert f"  replayed: {orjson.dumps(original).decode()}" in err
    assert "differing fields: actor" in err
    replay = [line for line in err.splitlines() if line.startswith("replay: ")]
    assert replay == [f"replay: emu run {run_dir / 'config.toml'} --policy v4.19 --seed 3 --out {run_dir}-replay"]
    assert result.stdout.startswith("v5.1: ")  # the other policy still replays and matches


def test_replay_unknown_policy_exits_2(run_dir: pathlib.Path) -> None:
    """``emu replay --policy`` of a policy the directory did not run exits 2 naming the ones it did."""
    result = _run("replay", str(run_dir), "--policy", "v3")
    assert result.exit_code == 2 and "'v3'" in result.stderr and "v4.19, v5.1" in result.stderr


def test_replay_of_a_failing_run_prints_the_replay_command(run_dir: pathlib.Path, monkeypatch) -> None:
    """A replay that ends in an EmulatorError exits 1 with the error and the command that reruns it."""
    import actors.lab.experiment
    from emu import HungTaskError

    def hangs(config, policy, **kwargs):
        raise HungTaskError(5, ["app.toucher: waits on app.mmap_sem"])

    monkeypatch.setattr(actors.lab.experiment, "run_policy", hangs)
    result = _run("replay", str(run_dir), "--policy", "v5.1")
    assert result.exit_code == 1 and "HungTaskError" in result.stderr
    assert f"replay: emu run {run_dir / 'config.toml'} --policy v5.1 --seed 3 --out {run_dir}-replay" in result.stderr


def test_bench_warm_runs_a_cached_file_without_a_step_per_access() -> None:
    """Four processes' warm touches for 10 ms on two CPUs: far fewer steps than the accesses they make."""
    record = orjson.loads(_run("bench", "warm", "--processes", "4", "--file-mib", "16", "--hot-pages", "1024", "--horizon", "0.01", "--cpus", "2", "--json").stdout)
    assert record["end"] == "horizon" and record["faults"] == 4 * 1024 // 16  # fault-around maps 16 PTEs a fault
    accesses = record["cpu_s"] * 1e9 / 50  # at most: the CPU time at 50 ns an access
    assert accesses > 300_000 and record["steps"] < accesses / 100
    assert _run("bench", "warm", "--horizon", "0").exit_code == 2
