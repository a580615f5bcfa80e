"""Config cross-references: problems no single field's type can show.

``check_config`` runs after a config structured cleanly and returns one
``key.path: message`` line per problem (``actors.lab.config`` prefixes the
file): the device's ``MAJ:MIN``, jitter bound and kind-specific keys;
a file's ``block_map``; cgroup paths and their
parents, and a ``memory.high`` above ``memory.max``; a mapping that names
both or neither of a file and an anonymous size; ``swap.page_cluster``; duplicate names, also of replicas, of threads within a process and
of custom policies (which may not reuse a preset's name); unknown policy names
and presets; a process's cgroup, a mapping's file, an op's mapping (and
whether it is writable); a looping program that takes no virtual time;
``proc_read`` targets and ``[inject]`` globs that match nothing;
truncations that do not shrink their file; ``[report] answer`` figures
that are misspelled or name no thread's op; the bounds that keep a run
finite (at most ``MAX_TASKS`` threads in all, replicas counted; a touch of
at most its mapping's pages). Every problem is reported, not just the first;
one mistake gives one line (a duplicate process name is not also reported
as a replica clash).

Not here: a value's type and spelling, which the value hooks
(``actors.lab.config_types``) and the converter (``actors.lab.config_convert``)
report while structuring.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from actors.block.blk_cgroup import check_path, is_dev
from actors.lab.figures import check_figure, is_latency
from actors.policy import PRESETS
from actors.schema import (
    OP_NAMES,
    MappingConfig,
    Mprotect,
    ProcessConfig,
    ProcRead,
    Think,
    Touch,
    Truncate,
    process_instance_names,
)

if TYPE_CHECKING:
    from actors.schema import ExperimentConfig


#: The most threads a config may start (replicas times threads, over all processes).
MAX_TASKS = 10_000
#: The page size touches are counted in (``PAGE_SIZE`` on x86-64).
PAGE_SIZE = 4096


def check_config(config: ExperimentConfig) -> list[str]:
    """Cross-reference problems of *config*, as ``key.path: message`` lines, in key order."""
    problems: list[str] = []
    if _too_many_tasks(problems, config):
        return problems  # the checks below enumerate replicas
    _check_device(problems, config)
    _check_cgroups(problems, config)
    _unique(problems, "cgroups", [c.path for c in config.cgroups], "path")
    _unique(problems, "files", [f.name for f in config.files], "name")
    _unique(problems, "processes", [p.name for p in config.processes], "name")
    _check_instance_names(problems, config)
    _check_policies(problems, config)
    if not config.processes:
        problems.append("processes: expected at least one process")
    _check_inject(problems, config)
    for i, process in enumerate(config.processes):
        _check_process(problems, config, i, process)
    for i, file in enumerate(config.files):
        if file.block_map == "indirect" and file.fs != "generic":
            problems.append(f'files[{i}].block_map: "indirect" is a generic (ext2/ext3-like) filesystem mapping, this file is on {file.fs}')
    if config.swap.page_cluster > 10:
        problems.append(f"swap.page_cluster: expected at most 10 (2**10 pages a swap-in read), got {config.swap.page_cluster}")
    _check_report(problems, config)
    return problems


def _check_report(problems: list[str], config: ExperimentConfig) -> None:
    """``[report] answer`` figures are spelled right, and a latency figure names a thread's op."""
    ops = {f"{t.name}/{OP_NAMES[type(op)]}" for p in config.processes for t in p.threads for op in t.program}
    for i, figure in enumerate(config.report.answer):
        message = check_figure(figure, rates=True)
        if message is None and is_latency(figure) and figure.rpartition(".")[0] not in ops:
            message = f"no thread runs {figure.rpartition('.')[0]!r} (latencies are <thread>/<op>: {', '.join(sorted(ops))})"
        if message is not None:
            problems.append(f"report.answer[{i}]: {message}")


def _check_device(problems: list[str], config: ExperimentConfig) -> None:
    """``dev`` is ``MAJ:MIN`` (io.latency settings name it); jitter stays below 100 %; the disk
    keys belong to ``kind = "hdd"``, which has one head and a seek curve that rises."""
    device = config.device
    if not is_dev(device.dev):
        problems.append(f'device.dev: expected "MAJ:MIN" like "8:0", got {device.dev!r}')
    if device.jitter_pct > 99:
        problems.append(f"device.jitter_pct: expected at most 99 (percent), got {device.jitter_pct}")
    if device.kind == "hdd":
        if device.parallelism not in (None, 1):
            problems.append(f"device.parallelism: a hdd has one head, expected 1 or unset, got {device.parallelism}")
        if device.seek_min is not None and device.seek_max is not None and device.seek_min > device.seek_max:
            problems.append(f"device.seek_min: expected at most seek_max ({device.seek_max} ns), got {device.seek_min} ns")
    else:
        for key in ("rpm", "seek_min", "seek_max", "capacity"):
            if getattr(device, key) is not None:
                problems.append(f'device.{key}: only a kind = "hdd" device has it, this one is kind = "{device.kind}"')


def _too_many_tasks(problems: list[str], config: ExperimentConfig) -> bool:
    """More than ``MAX_TASKS`` threads in all: one line at the process that crosses the bound."""
    total = 0
    for i, process in enumerate(config.processes):
        total += process.count * max(1, len(process.threads))
        if total > MAX_TASKS:
            problems.append(
                f"processes[{i}].count: {process.count} replicas of {len(process.threads)} thread(s) make over {MAX_TASKS} threads in all (the most a run may have)"
            )
            return True
    return False


def _check_instance_names(problems: list[str], config: ExperimentConfig) -> None:
    """Replicas (``name0``, ``name1``...) do not take another process's name (a plain duplicate is ``_unique``'s)."""
    owner: dict[str, int] = {}
    for i, process in enumerate(config.processes):
        for name in process_instance_names(process):
            if name in owner and owner[name] != i and config.processes[owner[name]].name != process.name:
                first = config.processes[owner[name]].name
                problems.append(f"processes[{i}].name: process {name!r} would exist twice (also from processes[{owner[name]}], {first!r})")
            owner.setdefault(name, i)


def _check_cgroups(problems: list[str], config: ExperimentConfig) -> None:
    """Each cgroup path is well formed, not the root, and its parent is configured."""
    cgroups = {c.path for c in config.cgroups} | {""}
    for i, cgroup in enumerate(config.cgroups):
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
        if cgroup.memory_high is not None and cgroup.memory_max is not None and cgroup.memory_high > cgroup.memory_max:
            problems.append(f"cgroups[{i}].memory.high: {cgroup.memory_high} bytes is above memory.max ({cgroup.memory_max} bytes), so it never applies")
        if cgroup.io_max is not None and cgroup.io_max.dev != config.device.dev:
            problems.append(f"cgroups[{i}].io.max: names device {cgroup.io_max.dev}, but the device is {config.device.dev} (device.dev)")


def _check_policies(problems: list[str], config: ExperimentConfig) -> None:
    """Custom policies start from a preset; ``policies`` names presets or custom policies."""
    policy_names = set(PRESETS) | {p.name for p in config.policy}
    for i, policy in enumerate(config.policy):
        if policy.name in PRESETS:
            problems.append(f"policy[{i}].name: {policy.name!r} is a preset; give the custom policy a name of its own")
        if policy.base not in PRESETS:
            problems.append(f"policy[{i}].base: unknown preset {policy.base!r}, expected one of {', '.join(PRESETS)}")
    _unique(problems, "policy", [p.name for p in config.policy], "name")
    for i, name in enumerate(config.policies):
        if name not in policy_names:
            problems.append(f"policies[{i}]: unknown policy {name!r}, expected one of {', '.join(sorted(policy_names))}")


def _check_inject(problems: list[str], config: ExperimentConfig) -> None:
    """``[inject]`` globs match some thread (``process.thread``) and file; SIGKILLs have a budget."""
    inject = config.inject
    thread_names = [f"{name}.{t.name}" for p in config.processes for name in process_instance_names(p) for t in p.threads]
    if inject.tasks != "*" and not any(fnmatch.fnmatchcase(n, inject.tasks) for n in thread_names):
        problems.append(f"inject.tasks: no thread matches {inject.tasks!r} (threads are named process.thread)")
    if inject.files != "*" and not any(fnmatch.fnmatchcase(n, inject.files) for n in {f.name for f in config.files}):
        problems.append(f"inject.files: no file matches {inject.files!r}")
    if inject.sigkill_every and not inject.sigkill_max:
        problems.append("inject.sigkill_max: sigkill_every is set but sigkill_max is 0")


def _check_process(problems: list[str], config: ExperimentConfig, i: int, process: ProcessConfig) -> None:
    """``processes[i]``: its cgroup, mappings and threads, and what each op refers to."""
    at = f"processes[{i}]"
    cgroups = {c.path for c in config.cgroups} | {""}
    files = {f.name for f in config.files}
    file_sizes = {f.name: f.size for f in config.files}
    if process.cgroup not in cgroups:
        problems.append(f"{at}.cgroup: unknown cgroup {process.cgroup!r}")
    mappings = {m.name for m in process.mappings}
    _unique(problems, f"{at}.mappings", [m.name for m in process.mappings], "name")
    for j, mapping in enumerate(process.mappings):
        if mapping.file is None and mapping.size is None:
            problems.append(f"{at}.mappings[{j}]: expected file (a file mapping) or size (an anonymous one)")
        elif mapping.file is not None and mapping.size is not None:
            problems.append(f"{at}.mappings[{j}].size: an anonymous mapping has no file, a file mapping no size (got both)")
        elif mapping.file is not None and mapping.file not in files:
            problems.append(f"{at}.mappings[{j}].file: unknown file {mapping.file!r}")
        elif mapping.file is None and mapping.shared:
            problems.append(f"{at}.mappings[{j}].shared: a shared anonymous mapping is shmem, which is not modelled (expected false or unset)")
    if not process.threads:
        problems.append(f"{at}.threads: expected at least one thread")
    _unique(problems, f"{at}.threads", [t.name for t in process.threads], "name")
    for j, thread in enumerate(process.threads):
        if not thread.program:
            problems.append(f"{at}.threads[{j}].program: expected at least one op")
        elif not thread.iterations and thread.every is None and all(isinstance(op, Think) and not op.time for op in thread.program):
            problems.append(f"{at}.threads[{j}].program: takes no virtual time, so looping on it would never let time pass")
        for k, op in enumerate(thread.program):
            where = f"{at}.threads[{j}].program[{k}]"
            if isinstance(op, ProcRead):
                _check_proc_read(problems, config, where, process, op)
                continue
            mapping = getattr(op, "mapping", None)
            if mapping is not None and mapping not in mappings:
                problems.append(f"{where}.mapping: unknown mapping {mapping!r} in process {process.name!r}")
            if isinstance(op, Touch) and mapping in mappings:
                _check_touch_pages(problems, where, op, next(m for m in process.mappings if m.name == mapping), file_sizes)
            if isinstance(op, Touch) and op.write and mapping in mappings:
                spec = next(m for m in process.mappings if m.name == mapping)
                if not (spec.writable if spec.writable is not None else spec.file is None):
                    problems.append(f"{where}.write: mapping {mapping!r} is not writable")
            if isinstance(op, Mprotect) and op.prot == "rw" and mapping in mappings:
                spec = next(m for m in process.mappings if m.name == mapping)
                if not (spec.writable if spec.writable is not None else spec.file is None):
                    problems.append(f"{where}.prot: mapping {mapping!r} is not writable")
            if isinstance(op, Mprotect) and op.prot is not None and mapping is None:
                problems.append(f'{where}.prot: needs a mapping (prot = "{op.prot}" of which mapping?)')
            if isinstance(op, Truncate):
                if op.file not in file_sizes:
                    problems.append(f"{where}.file: unknown file {op.file!r}")
                elif op.size >= file_sizes[op.file]:
                    problems.append(f"{where}.size: {op.size} bytes does not shrink file {op.file!r} ({file_sizes[op.file]} bytes)")


def _check_touch_pages(problems: list[str], where: str, op: Touch, mapping: MappingConfig, file_sizes: dict[str, int]) -> None:
    """One touch takes at most as many pages as its mapping has (a bound that keeps the op's page list small)."""
    size = mapping.size if mapping.file is None else file_sizes.get(mapping.file)
    pages = -(-(size or 0) // PAGE_SIZE)
    if size is not None and op.pages > pages:
        problems.append(f"{where}.pages: {op.pages} is more than the {pages} pages of mapping {mapping.name!r}")


def _unique(problems: list[str], at: str, names: list[str], key: str) -> None:
    """Report each repeat of a name in *names* (the list at key path *at*) at its own index."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.append(f"{at}[{i}].{key}: duplicate {name!r}")
        seen.add(name)


def _check_proc_read(problems: list[str], config: ExperimentConfig, where: str, process: ProcessConfig, op: ProcRead) -> None:
    """A ``proc_read`` target exists; ``file = "mem"`` names a mapping every target has, and only it does."""
    targets = [process] if op.target == "self" else [p for p in config.processes if any(fnmatch.fnmatchcase(n, op.target) for n in process_instance_names(p))]
    if not targets:
        problems.append(f"{where}.target: no process matches {op.target!r}")
        return
    if op.file != "mem":
        if op.target_mapping is not None:
            problems.append(f'{where}.target_mapping: only file = "mem" reads a mapping (file is {op.file!r})')
        return
    if op.target_mapping is None:
        problems.append(f'{where}.target_mapping: file = "mem" needs the target mapping to read (a mapping name of the target process)')
        return
    for target in targets:
        if op.target_mapping not in {m.name for m in target.mappings}:
            problems.append(f"{where}.target_mapping: process {target.name!r} has no mapping {op.target_mapping!r}")
