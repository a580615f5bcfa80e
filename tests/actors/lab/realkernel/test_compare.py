"""``emu compare`` and ``emu kernel-run`` on the command line (actors.lab.realkernel.compare, .cli)."""

from __future__ import annotations

import json
import pathlib

import orjson
import pytest
from click.testing import CliRunner

from actors.lab.cli import main
from actors.lab.realkernel import host
from actors.lab.realkernel.compare import compare, pairs_of
from actors.lab.rundir import load_run_dir

CASES = pathlib.Path(__file__).resolve().parents[4] / "configs" / "realkernel"
MS = 1_000_000


def _run_dir(path: pathlib.Path, runs: dict[str, list[int]], faults: dict[str, dict[str, int]] | None = None) -> pathlib.Path:
    """A run directory whose runs have these monitor/proc_read samples (ns) and, if given, these per-thread faults."""
    path.mkdir()
    entries = []
    for policy, values in runs.items():
        values = sorted(values)
        entries.append({"policy": policy, "counters": {}, "mmap_sem": {}, "faults": faults or {}, "latency": {"monitor/proc_read": {
            "count": len(values), "p50_ns": values[len(values) // 2], "p99_ns": values[-1], "max_ns": values[-1]}}})  # fmt: skip
        (path / policy).mkdir()
        (path / policy / "latency-samples.json").write_bytes(orjson.dumps({"samples": {"monitor/proc_read": values}}))
    (path / "results.json").write_bytes(orjson.dumps({"schema": 1, "experiment": "x", "runs": entries}))
    return path


def test_pairs_by_version_then_everyone(tmp_path: pathlib.Path) -> None:
    emulated = load_run_dir(_run_dir(tmp_path / "e", {"v6.1": [MS], "v5.7": [MS]}))
    real = load_run_dir(_run_dir(tmp_path / "r", {"linux-6.1": [MS], "linux-5.10": [MS]}))
    assert [(e.policy, r.policy) for e, r in pairs_of(emulated, real)] == [("v6.1", "linux-6.1"), ("v5.7", "linux-5.10")]


def test_verdicts_against_a_baseline(tmp_path: pathlib.Path) -> None:
    emulated = load_run_dir(_run_dir(tmp_path / "e", {"v6.1": [MS, 300 * MS]}))
    real = load_run_dir(_run_dir(tmp_path / "r", {"linux-6.1": [MS, 5 * MS]}))
    base_e = load_run_dir(_run_dir(tmp_path / "be", {"v6.1": [MS, 2 * MS]}))
    base_r = load_run_dir(_run_dir(tmp_path / "br", {"linux-6.1": [MS, 2 * MS]}))
    [pair] = compare(emulated, real, baselines=(base_e, base_r))
    assert (pair.emulated_verdict.verdict, pair.real_verdict.verdict, pair.agrees) == ("inversion", "none", False)
    assert pair.emulated_verdict.reference == "150.0x the baseline's p99 2 ms (v6.1); floor 20 ms"
    floor = compare(emulated, real, baselines=(base_e, base_r), threshold_ns=400 * MS)  # 150x, but under the floor
    assert floor[0].emulated_verdict.verdict == "none"
    [pair] = compare(emulated, real)  # no baseline: the 20 ms threshold
    assert (pair.emulated_verdict.verdict, pair.real_verdict.verdict) == ("inversion", "none")


def test_compare_command_prints_both_sides_and_draws_cdfs(tmp_path: pathlib.Path) -> None:
    e = _run_dir(tmp_path / "e", {"v5.7": [MS, 2 * MS, 300 * MS]})
    r = _run_dir(tmp_path / "r", {"linux-6.1": [MS, 400 * MS]})
    result = CliRunner().invoke(main, ["compare", str(e), str(r), "--plots-out", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert "v5.7 (emulated) vs linux-6.1 (real)" in result.output
    assert "verdict (real linux-6.1, monitor/proc_read): inversion (p99 >= 20 ms)" in result.output
    assert "verdicts agree" in result.output
    assert (tmp_path / "plots" / "compare-cdf-monitor-proc_read.png").stat().st_size > 1000
    data = json.loads(CliRunner().invoke(main, ["compare", str(e), str(r), "--json"]).output)
    assert data[0]["ops"]["monitor/proc_read"]["real"]["p99_ns"] == 400 * MS


def test_compare_puts_each_threads_faults_side_by_side(tmp_path: pathlib.Path) -> None:
    """Threads both sides have are paired; one only the real kernel has (the probe's own) is left out."""
    e = _run_dir(tmp_path / "e", {"v6.1": [MS]}, {"faulter": {"min_flt": 9566, "maj_flt": 150}, "monitor": {"min_flt": 0, "maj_flt": 0}})
    r = _run_dir(tmp_path / "r", {"linux-6.1": [MS]}, {"faulter": {"min_flt": 9600, "maj_flt": 119}, "sleeper": {"min_flt": 2, "maj_flt": 0}})
    [pair] = compare(load_run_dir(e), load_run_dir(r))
    assert pair.faults == [("faulter", {"min_flt": 9566, "maj_flt": 150}, {"min_flt": 9600, "maj_flt": 119})]
    result = CliRunner().invoke(main, ["compare", str(e), str(r)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "9,566/9,600" in result.output and "150/119" in result.output


def test_compare_refuses_a_directory_that_is_not_a_run(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(main, ["compare", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2
    assert result.output == f"error: {tmp_path}: not a run directory (no results.json)\n"


def test_kernel_run_refuses_an_unsupported_op_before_anything(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "check_tools", lambda: pytest.fail("the tools were looked for before the config was checked"))
    path = tmp_path / "x.toml"
    path.write_text((CASES / "plain.toml").read_text().replace('{ op = "munmap" }', '{ op = "truncate", file = "data" }'))
    result = CliRunner().invoke(main, ["kernel-run", str(path), "--kernel", "6.1", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output == f"{path}: processes[1].threads[1].program[1].op: 'truncate' is not run on a real kernel; supported: touch, mmap, munmap, mprotect, think, proc_read\n"
    assert not (tmp_path / "out").exists()


def test_kernel_run_without_qemu_prints_the_apt_get_line(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "_which", lambda name: None if name == "qemu-system-x86_64" else f"/usr/bin/{name}")
    monkeypatch.setattr(host, "_busybox_static", lambda _path: True)
    result = CliRunner().invoke(main, ["kernel-run", str(CASES / "plain.toml"), "--kernel", "6.1", "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert result.output == "error: emu kernel-run needs qemu-system-x86: install with `apt-get install -y qemu-system-x86`\n"
    assert list(tmp_path.iterdir()) == []


def test_kernel_run_refuses_an_unknown_kernel(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(main, ["kernel-run", str(CASES / "plain.toml"), "--kernel", "4.19"])
    assert result.exit_code == 2
    assert "'4.19' is not one of '5.10', '6.1', '6.12'" in result.output
