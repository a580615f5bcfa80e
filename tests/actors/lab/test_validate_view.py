"""``emu validate``'s tables (actors.lab.validate_view): complete, sourced, 80 columns wide."""

from __future__ import annotations

import pathlib

import attrs
import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from actors.block.blk_dev_model import KIND_DEFAULTS, device_params
from actors.lab.matrix import is_matrix_file
from actors.lab.cli import main
from actors.lab.config import config_from_dict, load_config
from actors.lab.validate_view import MEAN_SQRT_DISTANCE, cost_rows, print_validate, service_figures
from actors.schema import COST_SOURCES, CostsConfig, DeviceConfig
from actors.sched.core import COST_NAMES

ROOT = pathlib.Path(__file__).resolve().parents[3]
#: Every shipped config (a matrix file's cases are configs of configs/realkernel/).
CONFIGS = sorted(p for p in [*(ROOT / "configs").glob("*.toml"), *(ROOT / "configs/realkernel").glob("*.toml")] if not is_matrix_file(p))


def _render(config, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, highlight=False, color_system=None)
    print_validate(config, console)
    return console.export_text().splitlines()


def test_every_cost_has_one_source() -> None:
    """``COST_SOURCES`` names every ``[costs]`` item and nothing else (``scale`` is not a cost)."""
    fields = [f.name for f in attrs.fields(CostsConfig) if f.name != "scale"]
    assert list(COST_SOURCES) == fields == list(COST_NAMES)
    assert all(source for source in COST_SOURCES.values())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_fit_80_columns(path: pathlib.Path) -> None:
    """Every shipped config's tables fit an 80-column terminal and show each part."""
    config = load_config(path)
    lines = _render(config)
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for heading in ("device ", "service model", "[costs]", "[machine]", "policies"):
        assert heading in text, heading
    for name in config.policies:
        assert f"{name}: " in text


def test_device_rows_name_config_or_the_kind_source() -> None:
    """A key the file sets says "config"; a kind default carries its source from ``KIND_DEFAULTS``."""
    config = load_config(ROOT / "configs" / "lespinasse-2010.toml")
    text = "\n".join(_render(config, width=200))
    assert "queue_depth │ 32        │ config" in text
    assert KIND_DEFAULTS["hdd"]["rpm"][1] in text
    assert "rotational  │ true      │ hdd default" in text


def test_costs_show_scale_and_config() -> None:
    """Resolved costs are after ``scale``; one the file sets says "config", the rest their source."""
    rows = {name: (value, source) for name, value, source in cost_rows(CostsConfig(syscall=200, scale=2.0))}
    assert rows["syscall"] == ("400 ns (× scale 2)", "config")
    assert rows["wakeup"] == ("10 us (× scale 2)", COST_SOURCES["wakeup"])


def test_hdd_mean_seek_is_the_datasheet_average() -> None:
    """The sqrt seek curve averaged over random start and end points: 8/15 of the stroke, 8.5 ms by default."""
    grid = (np.arange(2000) + 0.5) / 2000
    numeric = float(np.mean(np.sqrt(np.abs(grid[:, None] - grid[None, :]))))
    assert numeric == pytest.approx(MEAN_SQRT_DISTANCE, rel=1e-3)
    figures = dict(service_figures(device_params(DeviceConfig(kind="hdd"))))
    assert figures["mean seek"].startswith("8.47 ms")
    assert figures["mean rotation"] == "4.17 ms"


def test_flash_figures() -> None:
    """ssd defaults: 100 us + 4 KiB at 512 MiB/s; the peak rate is the 8 units' 80,000/s."""
    figures = dict(service_figures(device_params(DeviceConfig(kind="ssd"))))
    assert figures["4 KiB read"].startswith("108 us")
    assert figures["peak 4 KiB rate"].startswith("80,000/s")


def test_cgroups_show_io_latency_and_io_max(tmp_path: pathlib.Path) -> None:
    config = config_from_dict({
        "name": "cg",
        "cgroups": [{"path": "a", "io.latency": "target=250"}, {"path": "b", "io.max": "8:0 rbps=1048576"}],
        "processes": [{"name": "p", "cgroup": "b", "threads": [{"name": "t", "program": [{"op": "think", "time": "1ms"}]}]}],
    })
    text = "\n".join(_render(config))
    assert "target=250 (250 us)" in text
    assert "8:0 rbps=1048576 wbps=max riops=max wiops=max" in text


def test_cli_default_is_the_tables() -> None:
    """``emu validate CONFIG`` prints the tables; ``--format json`` the JSON (tests/actors/lab/test_cli.py)."""
    result = CliRunner().invoke(main, ["validate", str(ROOT / "configs" / "seed-inversion.toml")])
    assert result.exit_code == 0, result.output
    assert "service model (ssd, no jitter)" in result.output
    assert "workload.slice/protected" in result.output
