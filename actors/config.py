"""Experiment configuration: TOML in, a frozen attrs tree out.

``ExperimentConfig.from_toml(path)`` parses with ``tomllib`` and structures
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
    [device]            the block device and its timing model
    [[cgroups]]         path and io.latency
    [[files]]           size, filesystem kind, initially cached fraction
    [btrfs], [writeback]
    [[processes]]       cgroup, count (replicas), mappings, threads
      [[processes.threads]]   name, program (a list of ops), iterations/every
    [[policy]]          custom policies: a preset with switches changed
    [inject], [checks], [swarm]

This module holds the root, ``ExperimentConfig`` with its constructors, and
what is done with a whole config (``apply_swarm``, ``resolve_policy``). The
rest lives in four modules, layered in this order, and every public name is
re-exported here, so callers import from ``actors.config`` only::

    actors.config_types     value types (Duration, Size, ...), ConfigError, read_toml
    actors.config_schema    the attrs classes of every table, the ops, OP_NAMES
    actors.config_convert   the strict cattrs converter and its error messages
    actors.config_check     cross-reference checks after structuring
"""

from __future__ import annotations

import pathlib

import attrs
import cattrs

from actors.config_check import check_config
from actors.config_convert import converter, describe
from actors.config_schema import (
    OP_NAMES,
    SWARM_FAMILIES,
    SWARM_OPS,
    BtrfsConfig,
    CgroupConfig,
    ChecksConfig,
    DeviceConfig,
    FileConfig,
    InjectConfig,
    Io,
    MappingConfig,
    Mmap,
    Mprotect,
    Munmap,
    Op,
    PolicyConfig,
    Populate,
    ProcessConfig,
    ProcRead,
    SwarmConfig,
    Think,
    ThreadConfig,
    Touch,
    Truncate,
    WritebackConfig,
    process_instance_names,
)
from actors.config_types import (
    ConfigError,
    Count,
    Duration,
    Fraction,
    IoLatency,
    Natural,
    PositiveDuration,
    PositiveSize,
    Size,
    read_toml,
)
from actors.policy import PRESETS, Policy

__all__ = [
    "OP_NAMES",
    "SWARM_FAMILIES",
    "SWARM_OPS",
    "BtrfsConfig",
    "CgroupConfig",
    "ChecksConfig",
    "ConfigError",
    "Count",
    "DeviceConfig",
    "Duration",
    "ExperimentConfig",
    "FileConfig",
    "Fraction",
    "InjectConfig",
    "Io",
    "IoLatency",
    "MappingConfig",
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
    "Size",
    "SwarmConfig",
    "Think",
    "ThreadConfig",
    "Touch",
    "Truncate",
    "WritebackConfig",
    "apply_swarm",
    "process_instance_names",
    "read_toml",
    "resolve_policy",
]


@attrs.frozen(kw_only=True)
class ExperimentConfig:
    """One experiment: a machine, a workload, and the policies to compare."""

    name: str
    seed: Natural = 1
    horizon: PositiveDuration = 10_000_000_000
    policies: list[str] = attrs.field(factory=lambda: ["v4.19", "v3", "v5.1"])
    device: DeviceConfig = attrs.field(factory=DeviceConfig)
    cgroups: list[CgroupConfig] = attrs.field(factory=list)
    files: list[FileConfig] = attrs.field(factory=list)
    btrfs: BtrfsConfig = attrs.field(factory=BtrfsConfig)
    writeback: WritebackConfig = attrs.field(factory=WritebackConfig)
    processes: list[ProcessConfig] = attrs.field(factory=list)
    policy: list[PolicyConfig] = attrs.field(factory=list)
    inject: InjectConfig = attrs.field(factory=InjectConfig)
    checks: ChecksConfig = attrs.field(factory=ChecksConfig)
    swarm: SwarmConfig = attrs.field(factory=SwarmConfig)
    source: str = attrs.field(default="<config>", eq=False)

    @classmethod
    def from_toml(cls, path: str | pathlib.Path) -> ExperimentConfig:
        """Read, structure and check *path*.

        Raises:
            ConfigError: one line per problem, each naming the file and key path.
        """
        path = pathlib.Path(path)
        return cls.from_dict(read_toml(path), source=str(path))

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "<config>") -> ExperimentConfig:
        """Structure an already-parsed dict (same checks as ``from_toml``)."""
        if not data:
            raise ConfigError([f"{source}: empty config, expected at least a name and processes"])
        try:
            config = attrs.evolve(converter.structure(data, cls), source=source)
        except (cattrs.BaseValidationError, ValueError) as error:
            raise ConfigError(describe(error, source)) from None
        problems = config.check()
        if problems:
            raise ConfigError([f"{source}: {p}" for p in problems])
        return config

    def check(self) -> list[str]:
        """Cross-reference problems, as ``key.path: message`` lines (``actors.config_check``)."""
        return check_config(self)


def apply_swarm(config: ExperimentConfig) -> ExperimentConfig:
    """*config* with ``[swarm] off`` applied: families set to 0, ops of those kinds removed.

    A program left empty gets one ``think`` for the whole horizon, so the
    thread idles instead of spinning.
    """
    off = set(config.swarm.off)
    if not off:
        return config
    inject = attrs.evolve(config.inject, **{name: 0 for name in SWARM_FAMILIES if name in off and name != "sigkill"})
    if "sigkill" in off:
        inject = attrs.evolve(inject, sigkill_every=0)
    by_name = {name: cls for cls, name in OP_NAMES.items()}
    removed = tuple(by_name[name] for name in off if name in by_name)
    processes = []
    for process in config.processes:
        threads = []
        for thread in process.threads:
            program = [op for op in thread.program if not isinstance(op, removed)] if removed else list(thread.program)
            if not program:
                program = [Think(time=config.horizon)]
            threads.append(attrs.evolve(thread, program=program))
        processes.append(attrs.evolve(process, threads=threads))
    return attrs.evolve(config, inject=inject, processes=processes)


def resolve_policy(config: ExperimentConfig, name: str) -> Policy:
    """The policy called *name*: a preset or one of the config's custom policies."""
    for custom in config.policy:
        if custom.name == name:
            changes = {k: v for k, v in attrs.asdict(custom).items() if v is not None and k not in ("name", "base")}
            what = ", ".join(f"{k} = {v!r}" for k, v in changes.items()) or "nothing changed"
            return attrs.evolve(PRESETS[custom.base], name=name, description=f"custom: {custom.base} with {what}", **changes)
    return PRESETS[name]
