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
"""

from __future__ import annotations

import fnmatch
import pathlib
import tomllib
import types
import typing
from typing import Literal, NewType

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override
from cattrs.errors import IterableValidationError, IterableValidationNote

from actors.block.blk_cgroup import check_path, parse_io_latency
from actors.policy import PRESETS, Policy
from emu.time import parse_duration, parse_size


class ConfigError(Exception):
    """A config could not be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# Value types. Each is an ``int``/``float`` at run time; the cattrs hooks
# below parse and check TOML values into them, so a bad value is reported at
# its own key path. Code building configs directly passes plain numbers.
Duration = NewType("Duration", int)  # ns; TOML: "10ms" (or 0)
PositiveDuration = NewType("PositiveDuration", int)
Size = NewType("Size", int)  # bytes; TOML: "4KiB" or an integer
PositiveSize = NewType("PositiveSize", int)
Count = NewType("Count", int)  # an integer >= 1
Natural = NewType("Natural", int)  # an integer >= 0
Fraction = NewType("Fraction", float)  # 0..1
IoLatency = NewType("IoLatency", int)  # min_lat_nsec from "target=<usec>"; "max" means off


def _duration(value: object, _type: object = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return 0
    if not isinstance(value, str):
        raise ValueError(f'expected a duration like "10ms", got {value!r}')
    return parse_duration(value)


def _positive_duration(value: object, _type: object = None) -> int:
    ns = _duration(value)
    if ns <= 0:
        raise ValueError(f"expected a duration above zero, got {value!r}")
    return ns


def _size(value: object, _type: object = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str):
        raise ValueError(f'expected a size like "4KiB", got {value!r}')
    return parse_size(value)


def _positive_size(value: object, _type: object = None) -> int:
    size = _size(value)
    if size <= 0:
        raise ValueError(f"expected a size above zero, got {value!r}")
    return size


def _integer(low: int):
    def structure(value: object, _type: object = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"expected an integer >= {low}, got {value!r}")
        return value

    return structure


def _fraction(value: object, _type: object = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"expected a fraction between 0 and 1, got {value!r}")
    return float(value)


def _io_latency(value: object, _type: object = None) -> int | None:
    if not isinstance(value, str):
        raise ValueError(f'expected "target=<usec>" or "max", got {value!r}')
    return parse_io_latency(value)


# -- machine -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DeviceConfig:
    """The block device: queue depth and a per-IO timing model.

    IO time = ``latency`` + bytes / ``bandwidth`` per second, scaled by a
    seeded jitter of up to ``jitter_pct`` percent.
    """

    name: str = "sda"
    dev: str = "8:0"
    nr_requests: Count = 64
    rotational: bool = False
    latency: Duration = 100_000
    bandwidth: PositiveSize = 512 * 1024**2
    jitter_pct: Natural = 10


@attrs.frozen(kw_only=True)
class CgroupConfig:
    """A cgroup v2 directory and its io.latency setting (``None`` = no target)."""

    path: str
    io_latency: IoLatency | None = None


@attrs.frozen(kw_only=True)
class FileConfig:
    """A file on one of the filesystems; ``cached`` is the fraction in the page cache at start."""

    name: str
    size: PositiveSize
    fs: Literal["generic", "btrfs"] = "generic"
    cached: Fraction = 0.0


@attrs.frozen(kw_only=True)
class BtrfsConfig:
    """The btrfs-like filesystem's space and costs (``page_mkwrite`` reservation)."""

    space: PositiveSize = 256 * 1024**2
    reserve_cost: Duration = 20_000
    flush_threshold: Fraction = 0.1
    commit_cost: Duration = 2_000_000


@attrs.frozen(kw_only=True)
class WritebackConfig:
    """The flusher: ``dirty_writeback_interval`` and the dirty limit for ``balance_dirty_pages``."""

    interval: PositiveDuration = 500_000_000
    dirty_limit_pages: Count = 4096
    batch_pages: Count = 32


# -- workload ops ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Touch:
    """Touch pages of a mapping: each page access may fault."""

    mapping: str
    pattern: Literal["sequential", "random", "hotset"] = "random"
    pages: Count = 1
    write: bool = False
    hot_pages: Count = 64


@attrs.frozen(kw_only=True)
class Mmap:
    """``mmap()`` an anonymous region, or re-map the named file ``mapping`` if it is unmapped.

    mmap_sem is held for write for ``hold``; ``length`` is ignored with ``mapping``.
    """

    length: PositiveSize = 4096
    mapping: str | None = None
    hold: Duration = 20_000


@attrs.frozen(kw_only=True)
class Munmap:
    """``munmap()`` the region this thread mapped last (or ``mapping``)."""

    mapping: str | None = None
    hold: Duration = 20_000


@attrs.frozen(kw_only=True)
class Mprotect:
    """``mprotect()`` a mapping (or this thread's last region): write-held for ``hold``.

    ``prot = "r"`` removes write permission (and write-protects the PTEs),
    ``"rw"`` gives it back (the mapping must be writable); unset re-applies
    the current protection.
    """

    mapping: str | None = None
    prot: Literal["r", "rw"] | None = None
    hold: Duration = 10_000


@attrs.frozen(kw_only=True)
class Truncate:
    """``ftruncate(file, size)``: drop the page cache beyond ``size`` (waiting for locked pages,
    zapping PTEs), then, with ``extend``, grow the file back to its configured size after ``hold``
    (truncate-then-extend)."""

    file: str
    size: Size = 0
    extend: bool = True
    hold: Duration = 0


@attrs.frozen(kw_only=True)
class Populate:
    """``mlock()``/``MAP_POPULATE`` of a whole mapping: ``__mm_populate`` through GUP."""

    mapping: str


@attrs.frozen(kw_only=True)
class ProcRead:
    """Read ``/proc/<pid>/<file>`` of each process matching ``target`` (a glob)."""

    target: str
    file: Literal["cmdline", "maps"] = "cmdline"
    cost: Duration = 5_000


@attrs.frozen(kw_only=True)
class Io:
    """Direct IO of ``size`` from the thread's cgroup, waited for (an IO-bound service)."""

    size: PositiveSize = 4096
    write: bool = False


@attrs.frozen(kw_only=True)
class Think:
    """Compute or sleep for ``time`` (``dist = "exp"``: exponential with that mean)."""

    time: Duration
    dist: Literal["fixed", "exp"] = "fixed"


Op = Touch | Mmap | Munmap | Mprotect | Truncate | Populate | ProcRead | Io | Think
OP_NAMES: dict[type, str] = {
    Touch: "touch",
    Mmap: "mmap",
    Munmap: "munmap",
    Mprotect: "mprotect",
    Truncate: "truncate",
    Populate: "populate",
    ProcRead: "proc_read",
    Io: "io",
    Think: "think",
}


@attrs.frozen(kw_only=True)
class MappingConfig:
    """A file mapping in a process (``mmap(MAP_SHARED)`` by default).

    ``madvise`` sets VM_RAND_READ/VM_SEQ_READ; ``read_ahead_kb`` is the
    device's setting when the file was opened (``file->f_ra.ra_pages``).
    """

    name: str
    file: str
    shared: bool = True
    writable: bool = False
    madvise: Literal["normal", "random", "sequential"] = "normal"
    read_ahead_kb: Natural = 128


@attrs.frozen(kw_only=True)
class ThreadConfig:
    """A thread running ``program`` ``iterations`` times (0 = until the horizon).

    With ``every``, iterations start on a fixed schedule (open loop) and the
    latency of an iteration's first op counts from its intended start.
    With ``handle_signals`` the thread has SIGSEGV/SIGBUS handlers that
    skip the rest of the op (as a JVM or a database does) instead of dying.
    """

    name: str
    program: list[Op]
    iterations: Natural = 0
    every: PositiveDuration | None = None
    start: Duration = 0
    handle_signals: bool = False


@attrs.frozen(kw_only=True)
class ProcessConfig:
    """``count`` processes named ``name`` (``name0``, ``name1``... when count > 1)."""

    name: str
    cgroup: str = ""
    count: Count = 1
    mappings: list[MappingConfig] = attrs.field(factory=list)
    threads: list[ThreadConfig] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class InjectConfig:
    """Fault injection (``actors.inject``), drawn from the run's own ``inject`` stream.

    Probabilities are per event; ``tasks`` (a glob of ``process.thread``
    names) and ``files`` (a glob of file names) narrow who is hit.
    ``sigkill_every`` is the mean of an exponential gap between SIGKILLs
    sent to a random live task matching ``tasks`` (at most ``sigkill_max``);
    0 turns signals off.
    """

    read_error: Fraction = 0.0
    write_error: Fraction = 0.0
    enospc: Fraction = 0.0
    sigkill_every: Duration = 0
    sigkill_max: Natural = 1
    tasks: str = "*"
    files: str = "*"


@attrs.frozen(kw_only=True)
class ChecksConfig:
    """Invariant tuning: ``liveness`` is how long an op may stay in flight at the end of a run."""

    liveness: PositiveDuration = 1_000_000_000


#: What ``[swarm] off`` may switch off: fault families, then op kinds of the workload mix.
SWARM_FAMILIES = ("read_error", "write_error", "enospc", "sigkill")
SWARM_OPS = ("munmap", "mmap", "mprotect", "truncate", "proc_read", "populate", "io")


@attrs.frozen(kw_only=True)
class SwarmConfig:
    """Swarm testing: fault families and op kinds switched off for this config (``emu explore --swarm``)."""

    off: list[Literal[SWARM_FAMILIES + SWARM_OPS]] = attrs.field(factory=list)  # type: ignore[valid-type]


@attrs.frozen(kw_only=True)
class PolicyConfig:
    """A custom policy: a preset with some switches changed."""

    name: str
    base: str = "v4.19"
    rwsem: Literal["4.19", "5.3"] | None = None
    fault_retry: Literal["never", "once", "many"] | None = None
    filemap_fault: Literal["4.19", "v3", "v5.1"] | None = None
    cached_page: bool | None = None
    page_mkwrite: Literal["hold", "v3-btrfs"] | None = None
    zero_readahead_fix: bool | None = None
    bdp_drop_mmap_sem: bool | None = None


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
            config = attrs.evolve(_converter.structure(data, cls), source=source)
        except (cattrs.BaseValidationError, ValueError) as error:
            raise ConfigError(_describe(error, source)) from None
        problems = config.check()
        if problems:
            raise ConfigError([f"{source}: {p}" for p in problems])
        return config

    def check(self) -> list[str]:
        """Cross-reference problems, as ``key.path: message`` lines."""
        problems: list[str] = []
        cgroups = {c.path for c in self.cgroups} | {""}
        for i, cgroup in enumerate(self.cgroups):
            parent = cgroup.path.rpartition("/")[0]
            try:
                check_path(cgroup.path)
            except ValueError as error:
                problems.append(f"cgroups[{i}].path: {error}")
                continue
            if not cgroup.path:
                problems.append(f'cgroups[{i}].path: the root cgroup is implicit, expected a path like "a/b"')
            elif parent and parent not in cgroups:
                problems.append(f"cgroups[{i}].path: parent {parent!r} is not a configured cgroup")
        _unique(problems, "cgroups", [c.path for c in self.cgroups], "path")
        _unique(problems, "files", [f.name for f in self.files], "name")
        _unique(problems, "processes", [p.name for p in self.processes], "name")
        files = {f.name for f in self.files}
        policy_names = set(PRESETS) | {p.name for p in self.policy}
        for i, policy in enumerate(self.policy):
            if policy.base not in PRESETS:
                problems.append(f"policy[{i}].base: unknown preset {policy.base!r}, expected one of {', '.join(PRESETS)}")
        for i, name in enumerate(self.policies):
            if name not in policy_names:
                problems.append(f"policies[{i}]: unknown policy {name!r}, expected one of {', '.join(sorted(policy_names))}")
        if not self.processes:
            problems.append("processes: expected at least one process")
        process_names = [name for p in self.processes for name in process_instance_names(p)]
        file_sizes = {f.name: f.size for f in self.files}
        thread_names = [f"{name}.{t.name}" for p in self.processes for name in process_instance_names(p) for t in p.threads]
        inject = self.inject
        if inject.tasks != "*" and not any(fnmatch.fnmatchcase(n, inject.tasks) for n in thread_names):
            problems.append(f"inject.tasks: no thread matches {inject.tasks!r} (threads are named process.thread)")
        if inject.files != "*" and not any(fnmatch.fnmatchcase(n, inject.files) for n in files):
            problems.append(f"inject.files: no file matches {inject.files!r}")
        if inject.sigkill_every and not inject.sigkill_max:
            problems.append("inject.sigkill_max: sigkill_every is set but sigkill_max is 0")
        for i, process in enumerate(self.processes):
            at = f"processes[{i}]"
            if process.cgroup not in cgroups:
                problems.append(f"{at}.cgroup: unknown cgroup {process.cgroup!r}")
            mappings = {m.name for m in process.mappings}
            _unique(problems, f"{at}.mappings", [m.name for m in process.mappings], "name")
            for j, mapping in enumerate(process.mappings):
                if mapping.file not in files:
                    problems.append(f"{at}.mappings[{j}].file: unknown file {mapping.file!r}")
            if not process.threads:
                problems.append(f"{at}.threads: expected at least one thread")
            for j, thread in enumerate(process.threads):
                if not thread.program:
                    problems.append(f"{at}.threads[{j}].program: expected at least one op")
                for k, op in enumerate(thread.program):
                    where = f"{at}.threads[{j}].program[{k}]"
                    mapping = getattr(op, "mapping", None)
                    if mapping is not None and mapping not in mappings:
                        problems.append(f"{where}.mapping: unknown mapping {mapping!r} in process {process.name!r}")
                    if isinstance(op, Touch) and op.write and mapping in mappings:
                        spec = next(m for m in process.mappings if m.name == mapping)
                        if not spec.writable:
                            problems.append(f"{where}.write: mapping {mapping!r} is not writable")
                    if isinstance(op, ProcRead) and not any(fnmatch.fnmatchcase(n, op.target) for n in process_names):
                        problems.append(f"{where}.target: no process matches {op.target!r}")
                    if isinstance(op, Mprotect) and op.prot == "rw" and mapping in mappings:
                        spec = next(m for m in process.mappings if m.name == mapping)
                        if not spec.writable:
                            problems.append(f"{where}.prot: mapping {mapping!r} is not writable")
                    if isinstance(op, Mprotect) and op.prot is not None and mapping is None:
                        problems.append(f'{where}.prot: needs a mapping (prot = "{op.prot}" of which mapping?)')
                    if isinstance(op, Truncate):
                        if op.file not in file_sizes:
                            problems.append(f"{where}.file: unknown file {op.file!r}")
                        elif op.size >= file_sizes[op.file]:
                            problems.append(f"{where}.size: {op.size} bytes does not shrink file {op.file!r} ({file_sizes[op.file]} bytes)")
        return problems


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


def read_toml(path: pathlib.Path) -> dict:
    """Parse a TOML file.

    Raises:
        ConfigError: one line naming the file: missing, a directory, not
            UTF-8 (with the byte offset) or not TOML (with line and column).
    """
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a directory, expected a TOML file"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None


def process_instance_names(process: ProcessConfig) -> list[str]:
    """The names of a process entry's replicas: ``name`` or ``name0..nameN-1``."""
    if process.count == 1:
        return [process.name]
    return [f"{process.name}{i}" for i in range(process.count)]


def resolve_policy(config: ExperimentConfig, name: str) -> Policy:
    """The policy called *name*: a preset or one of the config's custom policies."""
    for custom in config.policy:
        if custom.name == name:
            changes = {k: v for k, v in attrs.asdict(custom).items() if v is not None and k not in ("name", "base")}
            return attrs.evolve(PRESETS[custom.base], name=name, **changes)
    return PRESETS[name]


def _unique(problems: list[str], at: str, names: list[str], key: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.append(f"{at}[{i}].{key}: duplicate {name!r}")
        seen.add(name)


def _describe(error: BaseException, source: str) -> list[str]:
    def format_exception(exc: BaseException, type_: object) -> str:
        if isinstance(exc, KeyError):
            return "required key is missing"
        if isinstance(exc, cattrs.ForbiddenExtraKeysError):
            return f"unknown key(s): {', '.join(sorted(exc.extra_fields))}, expected one of {', '.join(_keys(exc.cl))}"
        if typing.get_origin(type_) in (typing.Union, types.UnionType):
            type_ = next(arg for arg in typing.get_args(type_) if arg is not type(None))
        if typing.get_origin(type_) is Literal:
            choices = ", ".join(repr(c) for c in typing.get_args(type_))
            got = str(exc).partition(" not in literal")[0]
            return f"expected one of {choices}, got {got!r}"
        if isinstance(exc, ValueError) and str(exc):
            return str(exc)
        return f"expected {getattr(type_, '__name__', type_)}, got {type(exc).__name__}: {exc}"

    out = []
    for line in cattrs.transform_error(error, path="", format_exception=format_exception):
        message, _, path = line.rpartition(" @ ")
        path = path.lstrip(".").replace(".io_latency", ".io.latency")
        out.append(f"{source}: {path or '(top level)'}: {message}")
    return out


def _keys(cls: type) -> list[str]:
    return ["io.latency" if a.name == "io_latency" else a.name for a in attrs.fields(cls) if a.name != "source"]


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def structure_int(value: object, _type: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value

    def structure_bool(value: object, _type: type) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value

    def structure_str(value: object, _type: type) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value

    for type_, hook in (
        (int, structure_int),
        (bool, structure_bool),
        (str, structure_str),
        (Duration, _duration),
        (PositiveDuration, _positive_duration),
        (Size, _size),
        (PositiveSize, _positive_size),
        (Count, _integer(1)),
        (Natural, _integer(0)),
        (Fraction, _fraction),
        (IoLatency, _io_latency),
    ):
        conv.register_structure_hook(type_, hook)

    def structure_list(type_: type):
        (element,) = typing.get_args(type_)

        def structure(value: object, _type: type) -> list:
            if not isinstance(value, list):
                raise ValueError(f"expected a list (an array), got {value!r}")
            items, errors = [], []
            for i, item in enumerate(value):
                try:
                    items.append(conv.structure(item, element))
                except Exception as exc:
                    exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"@ index {i}", i, element)]
                    errors.append(exc)
            if errors:
                raise IterableValidationError(f"while structuring {type_}", errors, type_)
            return items

        return structure

    def structure_table(cls: type):
        overrides = {"io_latency": override(rename="io.latency")} if cls is CgroupConfig else {}
        inner = make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True, **overrides)

        def structure(value: object, _type: type):
            if not isinstance(value, dict):
                raise ValueError(f"expected a table with keys {', '.join(_keys(cls))}, got {value!r}")
            return inner(value, cls)

        return structure

    by_name = {name: cls for cls, name in OP_NAMES.items()}

    def structure_op(value: object, _type: type) -> Op:
        names = ", ".join(by_name)
        if not isinstance(value, dict):
            raise ValueError(f'expected an op table like {{ op = "touch", ... }}, got {value!r}')
        if "op" not in value:
            raise ValueError(f'missing key "op", expected one of {names}')
        cls = by_name.get(value["op"])
        if cls is None:
            raise ValueError(f"unknown op {value['op']!r}, expected one of {names}")
        return conv.structure({k: v for k, v in value.items() if k != "op"}, cls)

    conv.register_structure_hook_factory(lambda t: typing.get_origin(t) is list, structure_list)
    conv.register_structure_hook_factory(attrs.has, structure_table)
    conv.register_structure_hook(Op, structure_op)
    return conv


_converter = _make_converter()
