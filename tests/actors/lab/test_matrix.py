"""Matrix files and directories (actors.lab.matrix, actors.lab.matrix_view), through the library and ``emu``."""

from __future__ import annotations

import pathlib

import orjson
import pytest
from click.testing import CliRunner

from actors.lab.cli import main
from actors.lab.config import ConfigError
from actors.lab.matrix import MatrixStaging, is_matrix_dir, is_matrix_file, load_matrix, load_matrix_dir, verdicts, write_matrix
from actors.lab.output import OutDirClaim
from actors.lab.rundir import RunDirError, load_run_dir

from .test_cli import TINY

ROOT = pathlib.Path(__file__).resolve().parents[3]

MATRIX = """\
matrix = "tiny-matrix"
baseline = "few"
op = "toucher/touch"
factor = 2
threshold = "1us"

[[cases]]
name = "few"
config = "few.toml"

[[cases]]
name = "many"
config = "many.toml"
"""


@pytest.fixture
def matrix(tmp_path: pathlib.Path) -> pathlib.Path:
    """Two cases of the tiny config: 4 pages a touch (the baseline) and 64 pages a touch."""
    (tmp_path / "few.toml").write_text(TINY.replace('name = "tiny"', 'name = "few"'))
    (tmp_path / "many.toml").write_text(TINY.replace('name = "tiny"', 'name = "many"').replace("pages = 4", "pages = 64"))
    path = tmp_path / "matrix.toml"
    path.write_text(MATRIX)
    return path


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_load_matrix_reads_every_case(matrix: pathlib.Path) -> None:
    loaded = load_matrix(matrix)
    assert loaded.name == "tiny-matrix" and loaded.baseline == "few" and loaded.factor == 2.0
    assert [(c.name, c.config.name) for c in loaded.cases] == [("few", "few"), ("many", "many")]
    assert is_matrix_file(matrix) and not is_matrix_file(matrix.parent / "few.toml")


def test_the_shipped_matrix_loads() -> None:
    loaded = load_matrix(ROOT / "configs/realkernel-iomax.toml")
    assert [c.name for c in loaded.cases] == ["plain", "iomax-faults", "iomax-mem", "mem-nolimit"]
    assert loaded.baseline == "iomax-faults"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.replace('matrix = "tiny-matrix"', "matrix = 3"), "matrix: expected the matrix's name"),
        (lambda s: s + "colour = 1\n", "colour: unknown key"),
        (lambda s: s.replace('baseline = "few"', 'baseline = "none"'), "baseline: expected the name of a case (few, many), got 'none'"),
        (lambda s: s.replace("factor = 2", "factor = 0.5"), "factor: expected a number from 1 to 1e6"),
        (lambda s: s.replace('op = "toucher/touch"', 'op = "touch"'), 'op: expected "<task>/<op>"'),
        (lambda s: s.replace('name = "many"', 'name = "few"'), "cases[1].name: 'few' is the name of an earlier case"),
        (lambda s: s.replace('name = "many"', 'name = "../x"'), "cases[1].name: expected a directory name"),
        (lambda s: s.replace('config = "many.toml"', 'config = "absent.toml"'), "absent.toml: no such file"),
        (lambda s: s.replace('config = "many.toml"', 'config = "many.toml"\nseed = 1'), "cases[1].seed: unknown key"),
    ],
)
def test_bad_matrix_files_name_the_key(matrix: pathlib.Path, edit, expected: str) -> None:
    matrix.write_text(edit(MATRIX))
    with pytest.raises(ConfigError) as error:
        load_matrix(matrix)
    assert any(expected in line for line in error.value.problems), error.value.problems


def test_emu_run_writes_one_run_directory_per_case(matrix: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    result = _run("run", str(matrix), "--out", str(out), "--no-plots", "--perfetto", "none")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["few", "many", "matrix.json", "matrix.toml"]
    assert (out / "matrix.toml").read_text() == MATRIX
    header = orjson.loads((out / "matrix.json").read_bytes())
    assert header["experiment"] == "tiny-matrix" and header["cases"] == ["few", "many"] and header["baseline"] == "few"
    assert load_run_dir(out / "many").document["experiment"] == "many"
    assert "case many" in result.stdout and "(baseline)" in result.stdout
    rows = verdicts(load_matrix_dir(out))
    assert [(r.case, r.column) for r in rows] == [("few", "v4.19"), ("few", "v5.1"), ("many", "v4.19"), ("many", "v5.1")]
    many = [r for r in rows if r.case == "many"]
    # 64 pages a touch take longer than 4: the verdict is computed, not assumed
    assert all(r.ratio is not None and r.ratio > 1 for r in many)
    assert all(r.verdict.verdict == ("inversion" if r.ratio >= 2 and r.verdict.p99_ns >= 1_000 else "none") for r in many)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.toml", "many.toml", "matrix.toml", "out"]  # no lock, no temporary


def test_emu_run_of_a_matrix_on_the_direct_driver_gives_the_same_results(matrix: pathlib.Path, tmp_path: pathlib.Path) -> None:
    for driver in ("trio", "direct"):
        assert _run("run", str(matrix), "--out", str(tmp_path / driver), "--no-plots", "--driver", driver).exit_code == 0
    for case in ("few", "many"):
        assert (tmp_path / "trio" / case / "results.json").read_bytes() == (tmp_path / "direct" / case / "results.json").read_bytes()


def test_rerun_replaces_and_another_experiment_needs_force(matrix: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    assert _run("run", str(matrix), "--out", str(out), "--no-plots", "--no-trace").exit_code == 0
    assert _run("run", str(matrix), "--out", str(out), "--no-plots", "--no-trace").exit_code == 0
    refused = _run("run", str(matrix.parent / "few.toml"), "--out", str(out), "--no-plots")
    assert refused.exit_code == 2 and "holds a run of 'tiny-matrix', not of 'few'" in refused.output
    assert is_matrix_dir(out)


def test_report_and_compare_read_matrix_directories(matrix: pathlib.Path, tmp_path: pathlib.Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert _run("run", str(matrix), "--out", str(out), "--no-trace").exit_code == 0
    shown = _run("report", str(a))
    assert shown.exit_code == 0 and "case few" in shown.stdout and "x baseline" in shown.stdout
    as_json = orjson.loads(_run("report", str(a), "--format", "json").stdout)
    assert set(as_json) == {"matrix", "cases", "verdicts"} and len(as_json["verdicts"]) == 4
    compared = _run("compare", str(a), str(b), "--op", "toucher/touch", "--factor", "2", "--plots-out", str(tmp_path / "plots"))
    assert compared.exit_code == 0, compared.output
    assert "case many" in compared.stdout and "DIFFER" not in compared.stdout  # the same runs agree with themselves
    assert (tmp_path / "plots" / "many").is_dir()
    single = _run("report", str(a / "few"))
    assert single.exit_code == 0
    with pytest.raises(RunDirError, match="a matrix directory; give one of its cases"):
        load_run_dir(a)
    mixed = _run("compare", str(a), str(a / "few"))
    assert mixed.exit_code == 2


def test_a_failing_case_leaves_nothing(matrix: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    loaded = load_matrix(matrix)

    def run_case(case, directory: pathlib.Path) -> None:
        directory.mkdir()
        if case.name == "many":
            raise RuntimeError("boom")

    with OutDirClaim(out, force=False, experiment=loaded.name) as claim:
        staging = MatrixStaging(out, claim)
        with pytest.raises(RuntimeError):
            try:
                write_matrix(loaded, staging, run_case)
            finally:
                staging.__exit__()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.toml", "many.toml", "matrix.toml"]


def test_bad_matrix_is_one_line_exit_2(matrix: pathlib.Path, tmp_path: pathlib.Path) -> None:
    matrix.write_text(MATRIX.replace('baseline = "few"', 'baseline = "x"'))
    result = _run("run", str(matrix), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and f"{matrix}: baseline: expected the name of a case" in result.output
    assert not (tmp_path / "out").exists()


def test_validate_checks_every_case(matrix: pathlib.Path) -> None:
    shown = _run("validate", str(matrix))
    assert shown.exit_code == 0 and "case few" in shown.stdout and "case many" in shown.stdout
    document = orjson.loads(_run("validate", str(matrix), "--format", "json").stdout)
    assert document["matrix"]["experiment"] == "tiny-matrix" and set(document["cases"]) == {"few", "many"}
    (matrix.parent / "many.toml").write_text("name = 3\n")
    bad = _run("validate", str(matrix))
    assert bad.exit_code == 2 and "many.toml" in bad.output


def test_kernel_run_refuses_a_matrix_case_before_anything_boots(matrix: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """A case the probe cannot run is one located line naming that case's config; nothing is written."""
    many = matrix.parent / "many.toml"
    many.write_text(many.read_text().replace('size = "1MiB"', 'size = "1MiB"\ncached = 0.5'))
    result = _run("kernel-run", str(matrix), "--kernel", "6.1", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert f"{many}: files[0].cached: the guest's files start cold" in result.output
    assert not (tmp_path / "out").exists()
