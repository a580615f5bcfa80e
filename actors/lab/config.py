"""Experiment configuration: TOML in, a frozen attrs tree out.

``load_config(path)`` parses with ``tomllib`` and structures
with cattrs in strict mode (unknown keys rejected). Durations and sizes are
spelled as people write them (``"10ms"``, ``"4KiB"``); cgroup knobs use the
kernel's own syntax (``"io.latency" = "target=2000"``, microseconds, as
``iolatency_set_limit()`` parses it). Every problem becomes one line naming
the file, the key path and what was expected::

    bad.toml: processes[1].threads[0].every: expected a duration like "10ms", got 'ten'

and ``ConfigError`` carries all of them. Cross-references (a mapping's file, a
process's cgroup, a proc_read target, policy names) are checked after
structuring, with the same kind of message.

The shape of a config (see ``configs/seed-inversion.toml`` for a full one)::

    name, seed, horizon, policies
    [machine]           CPUs
    [device]            the block device: kind, queues, service model
    [costs]             CPU and scheduling costs
    [[cgroups]]         path, io.latency, io.max, memory.max, memory.high
    [[files]]           size, filesystem kind, initially cached fraction
    [btrfs], [writeback], [swap]
    [[processes]]       cgroup, count (replicas), mappings, threads
      [[processes.threads]]   name, program (a list of ops), iterations/every
    [[policy]]          custom policies: a preset with switches changed
    [inject], [checks], [swarm]
    [report]            the figures that answer the config's question

This module holds the constructors (``load_config``, ``config_from_dict``)
and ``resolve_policy``. The rest lives in four modules, layered in this
order, and every public name is re-exported here, so the lab and library
users import from ``actors.lab.config`` only::

    actors.schema               the kernel's side: value types, the attrs classes of
                                every table and the root ExperimentConfig, OP_NAMES
    actors.lab.config_types     TOML spellings of the value types, ConfigError, read_toml
    actors.lab.config_convert   the strict cattrs converter and its error messages
    actors.lab.config_check     cross-reference checks after structuring
"""

from __future__ import annotations

import pathlib

import attrs
import cattrs

from actors.lab.config_check import check_config
from actors.lab.config_convert import converter, describe
from actors.lab.config_types import (
    INT64_MAX,
    INT64_MIN,
    MAX_BANDWIDTH,
    MAX_DURATION,
    MAX_SIZE,
    Bandwidth,
    ConfigError,
    Count,
    Duration,
    Factor,
    Fraction,
    IoLatency,
    MemoryLimit,
    Natural,
    PositiveDuration,
    PositiveSize,
    Size,
    check_int64,
    read_toml,
)
from actors.policy import PRESETS, Policy
from actors.schema import (
    COST_SOURCES,
    DEVICE_KINDS,
    OP_NAMES,
    SWARM_FAMILIES,
    SWARM_OPS,
    BtrfsConfig,
    CgroupConfig,
    ChecksConfig,
    CostsConfig,
    DeviceConfig,
    ExperimentConfig,
    FileConfig,
    InjectConfig,
    Io,
    MachineConfig,
    MappingConfig,
    Mmap,
    Mprotect,
    Munmap,
    Op,
    PolicyConfig,
    Populate,
    ProcessConfig,
    ProcRead,
    ReportConfig,
    SwapConfig,
    SwarmConfig,
    Think,
    ThreadConfig,
    Touch,
    Truncate,
    WritebackConfig,
    apply_swarm,
    process_instance_names,
)

__all__ = [
    "COST_SOURCES",
    "DEVICE_KINDS",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_BANDWIDTH",
    "MAX_DURATION",
    "MAX_SIZE",
    "OP_NAMES",
    "SWARM_FAMILIES",
    "SWARM_OPS",
    "Bandwidth",
    "BtrfsConfig",
    "CgroupConfig",
    "ChecksConfig",
    "ConfigError",
    "CostsConfig",
    "Count",
    "DeviceConfig",
    "Duration",
    "ExperimentConfig",
    "Factor",
    "FileConfig",
    "Fraction",
    "InjectConfig",
    "Io",
    "IoLatency",
    "MachineConfig",
    "MappingConfig",
    "MemoryLimit",
    "Mmap",
    "Mprotect",
    "Munmap",
    "Natural",
    "Op",
    "PolicyConfig",
    "Populate",
    "PositiveDuration",
    "PositiveSize",
    "ProcRead",
    "ProcessConfig",
    "ReportConfig",
    "Size",
    "SwapConfig",
    "SwarmConfig",
    "Think",
    "ThreadConfig",
    "Touch",
    "Truncate",
    "WritebackConfig",
    "apply_swarm",
    "check_config",
    "check_int64",
    "config_from_dict",
    "load_config",
    "process_instance_names",
    "read_toml",
    "resolve_policy",
]


def load_config(path: str | pathlib.Path) -> ExperimentConfig:
    """Read, structure and check the config file *path*.

    Raises:
        ConfigError: one line per problem, each naming the file and key path.
    """
    path = pathlib.Path(path)
    return config_from_dict(read_toml(path), source=str(path))


def config_from_dict(data: dict, *, source: str = "<config>") -> ExperimentConfig:
    """Structure an already-parsed dict (same checks as ``load_config``)."""
    if not data:
        raise ConfigError([f"{source}: empty config, expected at least a name and processes"])
    try:
        config = attrs.evolve(converter.structure(data, ExperimentConfig), source=source)
    except (cattrs.BaseValidationError, ValueError) as error:
        raise ConfigError(describe(error, source)) from None
    problems = check_config(config)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return config


def resolve_policy(config: ExperimentConfig, name: str) -> Policy:
    """The policy called *name*: a preset or one of the config's custom policies."""
    for custom in config.policy:
        if custom.name == name:
            changes = {k: v for k, v in attrs.asdict(custom).items() if v is not None and k not in ("name", "base")}
            what = ", ".join(f"{k} = {v!r}" for k, v in changes.items()) or "nothing changed"
            return attrs.evolve(PRESETS[custom.base], name=name, description=f"custom: {custom.base} with {what}", **changes)
    return PRESETS[name]
