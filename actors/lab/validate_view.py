"""What ``emu validate`` prints by default: a config's resolved machine as rich tables.

The tables show what a run will use, each figure with where it comes from:

* the device: kind, queue depths and every service-model parameter, marked
  "config" when the file sets it or with the kind's default source
  (``actors.block.blk_dev_model.KIND_DEFAULTS``), then what the service model
  makes of them (the time of a 4 KiB and a 128 KiB read, the peak rate);
* ``[costs]`` after ``scale``, each with its source (``actors.schema.COST_SOURCES``)
  or "config" when the file sets it;
* ``[machine]``, the cgroups with their io.latency and io.max, and the
  policies with their switches.

``--format json`` prints the same facts as one JSON document (``validate_document``).
Nothing here runs the model: it reads the config and the resolved parameters.
"""

from __future__ import annotations

from typing import Any

import attrs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from actors.block.blk_dev_model import KIND_DEFAULTS, DeviceParams, device_params
from actors.lab.config import ExperimentConfig, resolve_policy
from actors.policy import Policy
from actors.schema import COST_SOURCES, CostsConfig
from actors.sched.core import COST_NAMES, resolve_costs
from emu import NSEC_PER_SEC, format_ns

KiB = 1024
MiB = 1024**2
#: E[sqrt(|U - V|)] for U, V uniform on [0, 1]: the mean of the sqrt seek curve
#: over random start and end points, ∫ 2(1 - d) sqrt(d) dd = 8/15.
MEAN_SQRT_DISTANCE = 8 / 15


def _size(nbytes: int) -> str:
    for unit, name in ((1000**4, "TB"), (1000**3, "GB"), (MiB, "MiB"), (KiB, "KiB")):
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit} {name}"
    return f"{nbytes} B"


def _device_rows(config: ExperimentConfig, params: DeviceParams) -> list[tuple[str, str, str]]:
    """(key, value, source) for every device parameter, in ``DeviceConfig`` order."""
    defaults = KIND_DEFAULTS[params.kind]
    dev = config.device
    shown = {
        "queue_depth": str(params.queue_depth),
        "parallelism": str(params.parallelism),
        "latency": format_ns(params.latency_ns),
        "bandwidth": f"{params.bandwidth / MiB:,.0f} MiB/s",
        "rpm": str(params.rpm),
        "seek_min": format_ns(params.seek_min_ns or 0),
        "seek_max": format_ns(params.seek_max_ns or 0),
        "capacity": _size(params.capacity or 0),
    }
    rows = [
        ("kind", params.kind, "config" if "kind" in _set_keys(config, "device") else "default"),
        ("nr_requests", str(dev.nr_requests), "config" if "nr_requests" in _set_keys(config, "device") else "default"),
    ]
    for key, value in shown.items():
        if key not in defaults:
            continue
        rows.append((key, value, "config" if getattr(dev, key) is not None else defaults[key][1]))
    rows.append(("rotational", str(params.rotational).lower(), "config" if dev.rotational is not None else f"{params.kind} default"))
    rows.append(("jitter_pct", f"±{dev.jitter_pct}%", "config" if "jitter_pct" in _set_keys(config, "device") else "default"))
    return rows


def _set_keys(config: ExperimentConfig, table: str) -> set[str]:
    """Keys of *table* whose value differs from the schema default (what the file must have set)."""
    value = getattr(config, table)
    default = type(value)()
    return {f.name for f in attrs.fields(type(value)) if getattr(value, f.name) != getattr(default, f.name)}


def service_figures(params: DeviceParams) -> list[tuple[str, str]]:
    """What the service model makes of *params*: per-request times without jitter, and the peak rate."""
    def transfer(nbytes: int) -> int:
        return nbytes * NSEC_PER_SEC // params.bandwidth

    if params.kind != "hdd":
        peak_iops = min(params.parallelism * NSEC_PER_SEC / params.latency_ns, params.bandwidth / (4 * KiB))
        return [
            ("4 KiB read", f"{format_ns(params.latency_ns + transfer(4 * KiB))} (latency + transfer)"),
            ("128 KiB read", f"{format_ns(params.latency_ns + transfer(128 * KiB))} alone on the link"),
            ("peak 4 KiB rate", f"{peak_iops:,.0f}/s ({params.parallelism} units, the link)"),
        ]
    seek = params.seek_min_ns + int((params.seek_max_ns - params.seek_min_ns) * MEAN_SQRT_DISTANCE)
    rotation = 60 * NSEC_PER_SEC // params.rpm // 2
    random_read = seek + rotation + params.latency_ns + transfer(4 * KiB)
    track = params.seek_min_ns + rotation + params.latency_ns + transfer(4 * KiB)
    return [
        ("mean seek", f"{format_ns(seek)} (random over the disk)"),
        ("mean rotation", format_ns(rotation)),
        ("4 KiB random read", f"{format_ns(random_read)}: {NSEC_PER_SEC / random_read:,.0f}/s"),
        ("4 KiB read, near", f"{format_ns(track)} (shortest seek)"),
        ("sequential", f"{params.bandwidth / MiB:,.0f} MiB/s, no positioning"),
    ]


def cost_rows(costs: CostsConfig) -> list[tuple[str, str, str]]:
    """(name, resolved value, source) for every ``[costs]`` item; "config" where the file sets it."""
    resolved = resolve_costs(costs)
    default = CostsConfig()
    scaled = f" (× scale {costs.scale:g})" if costs.scale != 1 else ""
    return [
        (name, format_ns(resolved[name]) + scaled, "config" if getattr(costs, name) != getattr(default, name) else COST_SOURCES[name])
        for name in COST_NAMES
    ]


def _table(title: str, *columns: str) -> Table:
    """A table whose title and cells are plain text (``[costs]`` is not rich markup)."""
    table = Table(title=Text(title), title_justify="left", show_edge=False, pad_edge=False)
    for column in columns:
        table.add_column(Text(column), overflow="fold")
    return table


def _add(table: Table, *cells: str) -> None:
    table.add_row(*(Text(cell) for cell in cells))


def render_validate(config: ExperimentConfig) -> list[Table | str]:
    """The tables ``emu validate`` prints, in order."""
    params = device_params(config.device)
    nr_threads = sum(p.count * len(p.threads) for p in config.processes)
    out: list[Table | str] = [
        f"{config.name}: seed {config.seed}, horizon {format_ns(config.horizon)}, "
        f"{len(config.files)} file(s), {nr_threads} thread(s) in {sum(p.count for p in config.processes)} process(es)"
    ]
    device = _table(f"device {config.device.name} ({config.device.dev})", "key", "value", "source")
    for row in _device_rows(config, params):
        _add(device, *row)
    out.append(device)
    service = _table(f"service model ({params.kind}, no jitter)", "figure", "value")
    for row in service_figures(params):
        _add(service, *row)
    out.append(service)
    costs = _table("[costs]", "cost", "value", "source")
    for row in cost_rows(config.costs):
        _add(costs, *row)
    out.append(costs)
    machine = _table("[machine]", "key", "value", "meaning")
    cpus = config.machine.cpus
    _add(machine, "cpus", str(cpus), "every task has a CPU of its own" if not cpus else "CPU work waits FIFO for a free CPU")
    out.append(machine)
    cgroups = _table("cgroups", "path", "io.latency", "io.max")
    for cgroup in config.cgroups:
        target = "-" if cgroup.io_latency is None else f"target={cgroup.io_latency // 1000} ({format_ns(cgroup.io_latency)})"
        _add(cgroups, cgroup.path, target, "-" if cgroup.io_max is None else str(cgroup.io_max))
    if config.cgroups:
        out.append(cgroups)
    out.append(policy_table(config))
    out.extend(f"{name}: {resolve_policy(config, name).description}" for name in config.policies)
    return out


def policy_table(config: ExperimentConfig) -> Table:
    """One column per policy, one row per switch of ``actors.policy.Policy``."""
    policies = [resolve_policy(config, name) for name in config.policies]
    table = _table("policies", "switch", *config.policies)
    for field in attrs.fields(Policy):
        if field.name in ("name", "description"):
            continue
        _add(table, field.name, *(_switch(getattr(p, field.name)) for p in policies))
    return table


def _switch(value: object) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def print_validate(config: ExperimentConfig, console: Console | None = None) -> None:
    """Print ``render_validate``: a blank line before each table, plain text as is."""
    console = console or Console(highlight=False)
    for part in render_validate(config):
        if isinstance(part, Table):
            console.print()
        console.print(part if isinstance(part, Table) else Text(part))


def validate_document(config: ExperimentConfig, effective: dict[str, Any]) -> dict[str, Any]:
    """The JSON ``emu validate --format json`` prints: the effective config, device, costs, policies."""
    return {
        "config": effective,
        "device": attrs.asdict(device_params(config.device)),
        "costs": resolve_costs(config.costs),
        "policies": {name: attrs.asdict(resolve_policy(config, name)) for name in config.policies},
    }

