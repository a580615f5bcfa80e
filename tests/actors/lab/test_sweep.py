"""``emu sweep`` (actors.lab.sweep): the sweep file, the executors (serial, joblib, Dask), resume, the merged table."""

from __future__ import annotations

import csv
import pathlib

import click
import orjson
import pytest
from click.testing import CliRunner

from actors.lab import sweep as sweep_module
from actors.lab.config import config_from_dict
from actors.lab.sweep import plot_name, sweep_command
from actors.lab.sweep_spec import SweepError, derive_seeds, load_sweep, resolve_key

ROOT = pathlib.Path(__file__).resolve().parents[3]

#: A small seed-inversion: a protected reader and monitor, two batch processes faulting and mapping.
BASE = """\
name = "mini-inversion"
seed = 5
horizon = "60ms"
policies = ["v4.19", "v5.1"]

[device]
latency = "200us"
bandwidth = "400MiB"
nr_requests = 16

[[cgroups]]
path = "work"

[[cgroups]]
path = "work/protected"
"io.latency" = "target=1000"

[[cgroups]]
path = "work/batch"

[[files]]
name = "data"
size = "256MiB"

[[processes]]
name = "service"
cgroup = "work/protected"

  [[processes.threads]]
  name = "reader"
  program = [ { op = "io", size = "64KiB" }, { op = "think", time = "200us", dist = "exp" } ]

  [[processes.threads]]
  name = "monitor"
  every = "5ms"
  program = [ { op = "proc_read", target = "batch*" } ]

[[processes]]
name = "batch"
count = 2
cgroup = "work/batch"
mappings = [ { name = "data", file = "data" } ]

  [[processes.threads]]
  name = "faulter"
  program = [ { op = "touch", mapping = "data", pattern = "random" } ]

  [[processes.threads]]
  name = "mapper"
  program = [ { op = "mmap", length = "64KiB" }, { op = "munmap" }, { op = "think", time = "2ms" } ]
"""

SWEEP = """\
base = "base.toml"
policies = ["v4.19", "v5.1"]
seeds = 2
root_seed = 7
metric = "monitor/proc_read.p99_ns"
metrics = ["counters.throttled_bios"]

[[params]]
key = "cgroups[1].io.latency"
values = ["target=250", "target=2000"]

[[conclusions]]
claim = "below"
policy = "v5.1"
metric = "monitor/proc_read.p99_ns"
value = "1s"
"""

METRIC = "monitor/proc_read.p99_ns"
PARAMETER = "cgroups[1].io.latency"


def write_sweep(directory: pathlib.Path, text: str = SWEEP, base: str = BASE) -> pathlib.Path:
    """Write ``base.toml`` and ``sweep.toml`` into *directory*; return the sweep file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "base.toml").write_text(base)
    path = directory / "sweep.toml"
    path.write_text(text)
    return path


def invoke(*args: str):
    """Run ``emu sweep ARGS`` through a group built as the CLI builds it."""

    @click.group()
    def emu() -> None:
        """A stand-in for actors.lab.cli.main."""

    emu.add_command(sweep_command, "sweep")
    return CliRunner().invoke(emu, ["sweep", *args])


def digests(out: pathlib.Path) -> list[tuple[str, str, int, str]]:
    """(point, policy, seed, trace_digest) of every row of ``sweep.jsonl``."""
    lines = (out / "sweep.jsonl").read_bytes().splitlines()
    return [(r["point"], r["policy"], r["seed"], r["trace_digest"]) for r in map(orjson.loads, lines)]


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The tiny sweep (2 points x 2 policies x 2 seeds), run serially; its output directory."""
    root = tmp_path_factory.mktemp("serial")
    out = root / "out"
    result = invoke(str(write_sweep(root)), "--out", str(out), "--serial")
    assert result.exit_code == 0, result.output
    (root / "stdout.txt").write_text(result.stdout)
    return out


# -- the sweep file ------------------------------------------------------------------


def test_key_paths_resolve_against_the_base() -> None:
    """Dotted config names (io.latency) stay one step, quoted or not; indices must exist."""
    data = {"cgroups": [{"path": "a"}, {"path": "a/b", "io.latency": "target=1"}], "horizon": "1s"}
    assert resolve_key("cgroups[1].io.latency", data) == ("cgroups", 1, "io.latency")
    assert resolve_key('cgroups[0]."io.latency"', data) == ("cgroups", 0, "io.latency")
    assert resolve_key("cgroups[0].io.latency", data) == ("cgroups", 0, "io.latency")
    assert resolve_key("device.latency", data) == ("device", "latency")
    for key in ("io.max", "memory.max", "memory.high"):  # the other cgroup interface files, even where not set yet
        assert resolve_key(f"cgroups[0].{key}", data) == ("cgroups", 0, key)
    with pytest.raises(ValueError, match="index 2 out of range: cgroups has 2 entries"):
        resolve_key("cgroups[2].path", data)
    with pytest.raises(ValueError, match="not a list"):
        resolve_key("horizon[0]", data)
    with pytest.raises(ValueError, match="bad key path"):
        resolve_key("cgroups..path", data)


def test_seeds_are_derived_reproducibly() -> None:
    """SeedSequence(root).spawn(n): same root, same seeds; a longer list extends a shorter one."""
    assert derive_seeds(7, 3) == derive_seeds(7, 3)
    assert derive_seeds(7, 3)[:2] == derive_seeds(7, 2)
    assert len(set(derive_seeds(7, 8))) == 8
    assert derive_seeds(7, 2) != derive_seeds(8, 2)


def test_grid_and_points_cross(tmp_path: pathlib.Path) -> None:
    """Explicit points are crossed with the grid; each point is a checked config with its values applied."""
    text = SWEEP + '\n[[points]]\n"processes[1].count" = 1\n\n[[points]]\n"processes[1].count" = 3\ndevice.latency = "1ms"\n'
    sweep = load_sweep(write_sweep(tmp_path, text))
    assert sweep.keys == ("cgroups[1].io.latency", "processes[1].count", "device.latency")
    assert [p.values for p in sweep.points] == [
        {"cgroups[1].io.latency": "target=250", "processes[1].count": 1},
        {"cgroups[1].io.latency": "target=2000", "processes[1].count": 1},
        {"cgroups[1].io.latency": "target=250", "processes[1].count": 3, "device.latency": "1ms"},
        {"cgroups[1].io.latency": "target=2000", "processes[1].count": 3, "device.latency": "1ms"},
    ]
    config = config_from_dict(sweep.points[3].data)
    assert config.cgroups[1].io_latency == 2_000_000
    assert config.processes[1].count == 3
    assert config.device.latency == 1_000_000
    assert len(sweep.tasks()) == 4 * 2 * 2
    assert len({p.id for p in sweep.points}) == 4


def test_shipped_sweep_loads() -> None:
    """configs/sweeps/inversion-vs-target.toml is a valid sweep over seed-inversion."""
    sweep = load_sweep(ROOT / "configs" / "sweeps" / "inversion-vs-target.toml")
    assert sweep.base == (ROOT / "configs" / "seed-inversion.toml").resolve()
    assert sweep.policies == ("v4.19", "v3", "v5.1")
    assert len(sweep.seeds) >= 2
    assert sweep.metric == METRIC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n" + SWEEP, "sweep.toml: (top level): unknown key(s): colour"),
        (SWEEP.replace("cgroups[1]", "cgroups[7]"), "sweep.toml: params[0].key: index 7 out of range: cgroups has 3 entries"),
        (SWEEP.replace('"target=250"', '"fast"'), "sweep.toml: params[0].values[0]: 'fast' makes an invalid config: cgroups[1].io.latency:"),
        (SWEEP.replace('"v5.1"]', '"v9"]'), "sweep.toml: policies[1]: unknown policy 'v9'"),
        (SWEEP.replace("seeds = 2", "seeds = 0"), "sweep.toml: seeds: expected an integer >= 1"),
        (SWEEP.replace('"monitor/proc_read.p99_ns"', '"monitor/proc_read.p98"'), "sweep.toml: metric: a latency metric is <task>/<op>.<stat>"),
        (SWEEP.replace('base = "base.toml"', 'base = "nope.toml"'), "sweep.toml: base: "),
        (SWEEP + "\n[[params]]\nkey = 'horizon'\nvalues = ['10ms']\nstep = 2\n", "sweep.toml: params[1]: unknown key(s): step"),
        (SWEEP + "\n[[points]]\n'cgroups[1].io.latency' = 'max'\n", "sweep.toml: points[0]: 'cgroups[1].io.latency' is also a [[params]] key"),
        ("base = 'base.toml'\nmetric = 'events'\nseeds = [\n", "sweep.toml: not valid TOML"),
        (SWEEP.replace('policy = "v5.1"', 'policy = "v3"'), "sweep.toml: conclusions[0].policy: expected one of the sweep's policies (v4.19, v5.1), got 'v3'"),
    ],
    ids=["unknown-key", "index-out-of-range", "bad-value", "unknown-policy", "no-seeds", "bad-metric", "missing-base", "param-extra-key", "point-also-param", "bad-toml", "conclusion-policy"],
)
def test_bad_sweep_file_exits_2_with_a_located_message(tmp_path: pathlib.Path, text: str, message: str) -> None:
    """A bad sweep file: exit 2, one ``file: key.path: message`` line per problem, nothing written."""
    out = tmp_path / "out"
    result = invoke(str(write_sweep(tmp_path, text)), "--out", str(out))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_a_point_breaking_a_cross_reference_is_reported(tmp_path: pathlib.Path) -> None:
    """A value that structures but breaks a cross-reference is blamed on its own value."""
    text = SWEEP + '\n[[params]]\nkey = "processes[1].cgroup"\nvalues = ["work/batch", "work/missing"]\n'
    with pytest.raises(SweepError) as error:
        load_sweep(write_sweep(tmp_path, text))
    assert error.value.problems == [
        f"{tmp_path / 'sweep.toml'}: params[1].values[1]: 'work/missing' makes an invalid config: processes[1].cgroup: unknown cgroup 'work/missing'"
    ]


# -- running -------------------------------------------------------------------------


def test_serial_sweep_writes_runs_table_and_plot(serial: pathlib.Path) -> None:
    """One run file per (point, policy, seed); CSV and JSON lines agree; the plot is there."""
    runs = sorted((serial / "runs").glob("*.json"))
    assert len(runs) == 8
    document = orjson.loads(runs[0].read_bytes())
    assert set(document) >= {"point", "params", "policy", "seed", "config_sha256", "results"}
    rows = [orjson.loads(line) for line in (serial / "sweep.jsonl").read_bytes().splitlines()]
    assert len(rows) == 8
    assert [(r[PARAMETER], r["policy"]) for r in rows[::2]] == [
        ("target=250", "v4.19"),
        ("target=250", "v5.1"),
        ("target=2000", "v4.19"),
        ("target=2000", "v5.1"),
    ]
    assert {r["seed"] for r in rows} == set(derive_seeds(7, 2))
    assert all(isinstance(r[METRIC], int) and r[METRIC] > 0 for r in rows)
    with (serial / "sweep.csv").open() as table:
        csv_rows = list(csv.DictReader(table))
    assert [r["trace_digest"] for r in csv_rows] == [r["trace_digest"] for r in rows]
    assert list(csv_rows[0])[:4] == ["point", PARAMETER, "policy", "seed"]
    assert (serial / plot_name(METRIC, PARAMETER)).stat().st_size > 10_000
    assert (serial / "sweep.toml").read_text() == SWEEP
    assert (serial / "base.toml").read_text() == BASE


def test_serial_sweep_prints_counts_and_conclusions(serial: pathlib.Path) -> None:
    """Rows carry each latency op's sample count; stdout and summary.md show the table and where the conclusion holds."""
    rows = [orjson.loads(line) for line in (serial / "sweep.jsonl").read_bytes().splitlines()]
    assert all(r["monitor/proc_read.count"] == 12 for r in rows)  # 60 ms / 5 ms
    stdout = (serial.parent / "stdout.txt").read_text()
    summary = (serial / "summary.md").read_text()
    line = "v5.1 monitor/proc_read.p99_ns < 1 s: holds everywhere (2/2 points)"
    assert line in stdout and f"* {line}" in summary
    assert "monitor/proc_read n" in stdout and "| monitor/proc_read n |" in summary
    assert "*" in summary.split("| target=250 | v4.19 |")[1].split("\n")[0]  # a p99 of 12 samples


def test_joblib_gives_the_same_results(serial: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Two loky workers: the same trace digests, and byte-identical merged tables."""
    out = tmp_path / "out"
    result = invoke(str(write_sweep(tmp_path)), "--out", str(out), "--jobs", "2")
    assert result.exit_code == 0, result.output
    assert digests(out) == digests(serial)
    assert (out / "sweep.jsonl").read_bytes() == (serial / "sweep.jsonl").read_bytes()
    assert (out / "sweep.csv").read_bytes() == (serial / "sweep.csv").read_bytes()


# distributed (2026.8) emits no warning here when started on loopback without
# a dashboard and silenced below ERROR; the one it can emit on a slow CI disk
# (a UserWarning from distributed.diskutils while it creates the workers'
# scratch directories) is not ours and is ignored. Anything else fails the test.
@pytest.mark.filterwarnings("ignore:Creating scratch directories is taking a surprisingly long time:UserWarning")
def test_dask_local_cluster_gives_the_same_results(serial: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Two Dask worker processes on loopback, started and stopped here: the same digests and tables."""
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "out"
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=40,  # logging.ERROR
    ) as cluster:
        result = invoke(str(write_sweep(tmp_path)), "--out", str(out), "--dask-scheduler", cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    assert "on Dask at tcp://127.0.0.1:" in result.stderr
    assert digests(out) == digests(serial)
    assert (out / "sweep.jsonl").read_bytes() == (serial / "sweep.jsonl").read_bytes()


def test_resume_skips_finished_runs(serial: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume reruns only the runs whose files are missing (or are not this run's), then merges the same table."""
    out = tmp_path / "out"
    out.mkdir()
    for path in (serial / "runs").glob("*.json"):
        (out / "runs").mkdir(exist_ok=True)
        (out / "runs" / path.name).write_bytes(path.read_bytes())
    runs = sorted((out / "runs").glob("*.json"))
    runs[0].unlink()
    stale = orjson.loads(runs[1].read_bytes())
    runs[1].write_bytes(orjson.dumps({**stale, "config_sha256": "0" * 64}))  # another config's run: redo
    calls: list[str] = []
    real = sweep_module.run_one

    def counting(task: sweep_module.RunTask) -> dict:
        calls.append(task.run_id)
        return real(task)

    monkeypatch.setattr(sweep_module, "run_one", counting)
    sweep_path = str(write_sweep(tmp_path))
    refused = invoke(sweep_path, "--out", str(out), "--serial")
    assert refused.exit_code == 2
    assert "directory is not empty (use --resume" in refused.stderr
    result = invoke(sweep_path, "--out", str(out), "--serial", "--resume")
    assert result.exit_code == 0, result.output
    assert sorted(calls) == sorted([runs[0].stem, runs[1].stem])
    assert "6 reused" in result.stderr
    assert (out / "sweep.jsonl").read_bytes() == (serial / "sweep.jsonl").read_bytes()
    calls.clear()
    again = invoke(sweep_path, "--out", str(out), "--serial", "--resume")
    assert again.exit_code == 0, again.output
    assert calls == []


def test_conflicting_executor_options_exit_2(tmp_path: pathlib.Path) -> None:
    """--serial with --dask-scheduler (or --jobs with either) is a usage error."""
    sweep_path = str(write_sweep(tmp_path))
    result = invoke(sweep_path, "--out", str(tmp_path / "o"), "--serial", "--dask-scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 2
    assert "exclude each other" in result.stderr
    result = invoke(sweep_path, "--out", str(tmp_path / "o"), "--serial", "--jobs", "2")
    assert result.exit_code == 2
