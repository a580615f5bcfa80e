"""The probe itself (probe.c), compiled (into the usual cache) and run on the host on a spec without cgroups: no boot needed."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import attrs
import pytest

from actors.lab.config import load_config
from actors.lab.realkernel.probe import build_probe
from actors.lab.realkernel.samples import GuestResults, parse_results
from actors.lab.realkernel.spec import GUEST_DATA, translate

CASES = pathlib.Path(__file__).resolve().parents[4] / "configs" / "realkernel"


@pytest.fixture(scope="module")
def probe() -> pathlib.Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    return build_probe(gcc)


def _run(probe: pathlib.Path, case: str, tmp_path: pathlib.Path) -> GuestResults:
    config = attrs.evolve(load_config(CASES / f"{case}.toml"), horizon=300_000_000, cgroups=[])
    config = attrs.evolve(config, processes=[attrs.evolve(p, cgroup="") for p in config.processes])
    spec = translate(config).spec.replace(f"{GUEST_DATA}/", f"{tmp_path}/")
    with open(tmp_path / "data", "wb") as data:
        data.truncate(64 << 20)
    (tmp_path / "spec").write_text(spec)
    (tmp_path / "out").mkdir()
    done = subprocess.run([str(probe), str(tmp_path / "spec"), str(tmp_path / "out")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "probe error" not in done.stderr
    text = "".join(f"F {p.name}\n" + p.read_text() for p in sorted((tmp_path / "out").iterdir())) + "@@END rc=0\n"
    guest = parse_results(text)
    assert guest.status == 0
    return guest


def test_probe_runs_every_thread_of_the_plain_case(probe: pathlib.Path, tmp_path: pathlib.Path) -> None:
    guest = _run(probe, "plain", tmp_path)
    samples = guest.samples
    assert set(samples) == {("monitor", "proc_read"), ("faulter", "touch"), ("mapper", "mmap"), ("mapper", "munmap")}
    assert 25 <= len(samples[("monitor", "proc_read")]) <= 30  # every 10 ms for 300 ms
    assert all(0 < ns < 300_000_000 for values in samples.values() for ns in values)
    # every thread's fault counts; the faulter's touches of a fresh file fault (major or minor by the host's fs)
    assert set(guest.faults) == {"monitor", "faulter", "mapper"}
    assert guest.faults["faulter"]["min_flt"] + guest.faults["faulter"]["maj_flt"] >= len(samples[("faulter", "touch")])
    assert guest.vmstat["pgfault"] > 0  # the host's /proc/vmstat, over the run


def test_probe_reads_its_own_mem(probe: pathlib.Path, tmp_path: pathlib.Path) -> None:
    guest = _run(probe, "mem-nolimit", tmp_path)
    assert len(guest.samples[("memreader", "proc_read")]) >= 3
