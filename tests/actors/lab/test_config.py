"""Config parsing (actors.lab.config): a good config round trip and a corpus of bad ones.

Each file in ``bad_configs/`` is named after what is wrong with it (its first
line says so too). ``EXPECTED`` says where the problem must be reported: the
key path that every good message names (docs/CONFIG.md, "Errors":
``bad.toml: processes[1].threads[0].every: expected a duration like "10ms",
got 'ten'``), and optionally a pattern the same line must contain. A path
matches the reported one or any deeper path under it.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import tomllib
import types

import attrs
import pytest
from click.testing import CliRunner

import actors.lab.config
from actors import schema as config_schema
from actors.lab import config_types
from actors.lab.cli import main
from actors.lab.config import (
    ConfigError,
    Mmap,
    Think,
    Touch,
    config_from_dict,
    load_config,
    resolve_policy,
)

CORPUS = pathlib.Path(__file__).with_name("bad_configs")

GOOD = """\
name = "good"
seed = 7
horizon = "1.5s"
policies = ["v4.19", "mine"]

[device]
latency = "250us"
nr_requests = 16

[[cgroups]]
path = "batch"

[[cgroups]]
path = "batch/low"
"io.latency" = "target=2000"

[[files]]
name = "data"
size = "8MiB"
cached = 0.25

[[processes]]
name = "app"
cgroup = "batch/low"
count = 2
mappings = [ { name = "data", file = "data", writable = true } ]

  [[processes.threads]]
  name = "toucher"
  iterations = 3
  every = "10ms"
  program = [
    { op = "touch", mapping = "data", pattern = "hotset", pages = 4, write = true },
    { op = "mmap", length = "64KiB", hold = "20us" },
    { op = "think", time = "1ms", dist = "exp" },
  ]

[[policy]]
name = "mine"
base = "v5.1"
rwsem = "5.3"
"""

#: Where each corpus file's problem must be reported: (key path, pattern in the same line).
EXPECTED: dict[str, tuple[str, str | None]] = {
    # wrong types
    "seed_is_a_string": ("seed", None),
    "seed_is_a_boolean": ("seed", None),
    "horizon_is_a_float": ("horizon", None),
    "policies_is_a_string": ("policies", "list|array"),
    "threads_is_a_string": ("processes[0].threads", "list|array|table"),
    "iterations_is_a_float": ("processes[0].threads[0].iterations", None),
    "write_is_a_string": ("processes[0].threads[0].program[0].write", None),
    "device_is_a_string": ("device", "table"),
    # unknown keys at several depths
    "unknown_top_level_key": ("(top level)", "colour"),
    "unknown_key_in_device": ("device", "speed"),
    "unknown_key_in_cgroup": ("cgroups[0]", "io.weight"),
    "unknown_key_in_mapping": ("processes[0].mappings[0]", "huge"),
    "unknown_key_in_thread": ("processes[0].threads[0]", "priority"),
    "unknown_key_in_op": ("processes[0].threads[0].program[1]", "colour"),
    "unknown_op_kind": ("processes[0].threads[0].program[1]", "jump"),
    "op_without_kind": ("processes[0].threads[0].program[1]", r"\bop\b"),
    # missing fields
    "missing_experiment_name": ("name", None),
    "missing_file_size": ("files[0].size", None),
    "missing_thread_program": ("processes[0].threads[0].program", None),
    "missing_think_time": ("processes[0].threads[0].program[1].time", None),
    "missing_mapping_file": ("processes[0].mappings[0].file", None),
    # sizes and counts
    "zero_file_size": ("files[0].size", None),
    "negative_file_size": ("files[0].size", None),
    "file_size_bad_unit": ("files[0].size", "furlong"),
    "zero_nr_requests": ("device.nr_requests", None),
    "negative_iterations": ("processes[0].threads[0].iterations", None),
    "zero_touch_pages": ("processes[0].threads[0].program[0].pages", None),
    "zero_process_count": ("processes[0].count", None),
    "cached_fraction_above_one": ("files[0].cached", None),
    "zero_mmap_length": ("processes[0].threads[0].program[1].length", None),
    # durations
    "duration_ten": ("processes[0].threads[0].every", r"""expected a duration like "10ms" \(units: ns, us .*, h\), got 'ten'"""),
    "duration_unknown_unit": ("processes[0].threads[0].program[1].time", "parsecs"),
    "duration_negative": ("processes[0].threads[0].start", None),
    "zero_horizon": ("horizon", None),
    "zero_every": ("processes[0].threads[0].every", None),
    "fractional_nanoseconds": ("processes[0].threads[0].program[1].time", None),
    # io.latency, in the kernel's syntax
    "io_latency_target_abc": ("cgroups[0].io.latency", "target=abc"),
    "io_latency_garbage": ("cgroups[0].io.latency", None),
    "io_latency_is_a_number": ("cgroups[0].io.latency", None),
    # policy names and switches
    "unknown_policy_name": ("policies[1]", "v9.99"),
    "unknown_policy_base": ("policy[0].base", "v1.0"),
    "unknown_rwsem_semantics": ("policy[0].rwsem", "6.0"),
    "per_vma_lock_unknown": ("policy[0].per_vma_lock", "all"),
    "per_vma_lock_needs_v51_filemap": ("policy[0].per_vma_lock", 'needs filemap_fault = "v5.1", got \'4.19\''),
    "unknown_iolatency_rules": ("policy[0].iolatency", "5.0"),
    "unknown_fault_accounting": ("policy[0].fault_accounting", "5.10"),
    "swapin_sync_not_bool": ("policy[0].swapin_sync", "yes"),
    "unknown_page_wait": ("policy[0].page_wait", "5.8"),
    "unknown_fs_kind": ("files[0].fs", "ext9"),
    "unknown_touch_pattern": ("processes[0].threads[0].program[0].pattern", "zigzag"),
    # cross-references
    "unknown_cgroup": ("processes[0].cgroup", "nowhere"),
    "unknown_file_in_mapping": ("processes[0].mappings[0].file", "nofile"),
    "unknown_mapping_in_touch": ("processes[0].threads[0].program[0].mapping", "nomap"),
    "unknown_proc_read_target": ("processes[0].threads[0].program[1].target", "ghost"),
    "write_to_read_only_mapping": ("processes[0].threads[0].program[0].write", None),
    "no_processes": ("processes", None),
    "empty_program": ("processes[0].threads[0].program", None),
    # cgroup paths (parents come from the path, so a cycle cannot be written; odd paths can)
    "cgroup_parent_missing": ("cgroups[0].path", "batch"),
    "cgroup_self_parent": ("cgroups[0].path", None),
    "cgroup_dotdot_path": ("cgroups[1].path", r"\.\."),
    "cgroup_absolute_path": ("cgroups[0].path", None),
    "cgroup_double_slash": ("cgroups[1].path", None),
    # duplicates
    "duplicate_cgroup_path": ("cgroups[1].path", "duplicate"),
    "duplicate_file_name": ("files[1].name", "duplicate"),
    "duplicate_process_name": ("processes[1].name", "duplicate"),
    "duplicate_mapping_name": ("processes[0].mappings[1].name", "duplicate"),
    "duplicate_thread_name": ("processes[0].threads[1].name", "duplicate"),
    "replica_name_clash": ("processes[1].name", "'app1' would exist twice"),
    "duplicate_custom_policy": ("policy[1].name", "duplicate"),
    "custom_policy_shadows_preset": ("policy[0].name", "is a preset"),
    # values that only make sense together with others
    "device_dev_not_maj_min": ("device.dev", "MAJ:MIN"),
    "jitter_pct_over_99": ("device.jitter_pct", "at most 99"),
    "device_kind_unknown": ("device.kind", "'ssd', 'nvme', 'hdd'"),
    "zero_queue_depth": ("device.queue_depth", ">= 1"),
    "zero_parallelism": ("device.parallelism", ">= 1"),
    "hdd_parallelism_not_one": ("device.parallelism", "one head"),
    "rpm_on_ssd": ("device.rpm", "hdd"),
    "seek_min_above_max": ("device.seek_min", "at most seek_max"),
    "rotational_is_a_string": ("device.rotational", "true or false"),
    "machine_cpus_negative": ("machine.cpus", ">= 0"),
    "machine_unknown_key": ("machine", "cores"),
    "machine_cgroup_writeback_is_a_string": ("machine.cgroup_writeback", "true or false"),
    "cgroup_dirty_limit_zero": ("cgroups[0].dirty_limit_pages", ">= 1"),
    "costs_unknown_key": ("costs", "page_fault"),
    "costs_duration_ten": ("costs.wakeup", "duration"),
    "costs_scale_negative": ("costs.scale", "factor"),
    "costs_scale_is_a_string": ("costs.scale", "factor"),
    "block_map_unknown": ("files[0].block_map", "'extents', 'indirect'"),
    "block_map_indirect_on_btrfs": ("files[0].block_map", "btrfs"),
    "program_takes_no_time": ("processes[0].threads[1].program", "no virtual time"),
    "source_key_in_file": ("(top level)", "source"),
    # fault injection, swarm switches, checks
    "inject_probability_above_one": ("inject.read_error", None),
    "inject_unknown_key": ("inject", "colour"),
    "inject_tasks_no_match": ("inject.tasks", "nobody"),
    "inject_files_no_match": ("inject.files", "nofile"),
    "inject_sigkill_every_negative": ("inject.sigkill_every", None),
    "inject_is_a_string": ("inject", "table"),
    "swarm_off_unknown": ("swarm.off[0]", "teleport"),
    "checks_liveness_zero": ("checks.liveness", None),
    "handle_signals_is_a_string": ("processes[0].threads[0].handle_signals", None),
    # the racing ops
    "truncate_unknown_file": ("processes[0].threads[0].program[1].file", "nofile"),
    "truncate_size_not_smaller": ("processes[0].threads[0].program[1].size", "shrink"),
    "truncate_missing_file": ("processes[0].threads[0].program[1].file", None),
    "mprotect_prot_unknown": ("processes[0].threads[0].program[1].prot", "rwx"),
    "mprotect_rw_read_only_mapping": ("processes[0].threads[0].program[1].prot", "not writable"),
    "mmap_unknown_mapping": ("processes[0].threads[0].program[1].mapping", "nomap"),
    # bounds that keep a run finite, and units
    "integer_wider_than_64_bits": ("device.nr_requests", "64 bits"),
    "file_size_beyond_bound": ("files[0].size", "at most 1PiB"),
    "horizon_beyond_bound": ("horizon", "at most 1h"),
    "replicas_beyond_bound": ("processes[0].count", "10000 threads"),
    "touch_pages_beyond_mapping": ("processes[0].threads[0].program[0].pages", "256 pages"),
    "report_answer_bad_stat": ("report.answer[0]", "p99_ns"),
    "report_answer_unknown_op": ("report.answer[1]", "no thread runs 'toucher/io'"),
    "bandwidth_per_hour": ("device.bandwidth", r"bandwidth like \"512MiB/s\" .*then /s\), got '200MB/h'"),
    # memory and swap
    "memory_max_bad_unit": ("cgroups[0].memory.max", "furlongs"),
    "memory_high_above_max": ("cgroups[0].memory.high", "above memory.max"),
    "mapping_file_and_size": ("processes[0].mappings[0].size", "got both"),
    "mapping_shared_anonymous": ("processes[0].mappings[0].shared", "shmem"),
    "swap_page_cluster_too_big": ("swap.page_cluster", "at most 10"),
    "swap_size_one_page": ("swap.size", "8KiB"),
}

#: Problems with the file itself: no key path exists, so the line names where in the file.
FILE_LEVEL: dict[str, str] = {
    "empty_file": "empty",
    "non_utf8_bytes": r"UTF-8.*byte \d+",
    "invalid_toml_syntax": r"TOML.*line 2",
    "invalid_toml_duplicate_key": r"TOML.*line 4",
}

#: A key path as messages print it: ``name``, ``a.b[3].c``, ``cgroups[0].io.latency``, ``(top level)``.
KEY_PATH = re.compile(r"^(\(top level\)|[A-Za-z_][\w\-]*(\[\d+\])*(\.\"?[\w.\-]+\"?(\[\d+\])*)*)$")


def _corpus() -> list[pathlib.Path]:
    return sorted(CORPUS.glob("*.toml"))


def _problems(path: pathlib.Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems, "ConfigError without problems"
    return info.value.problems


def _path_pattern(path: str) -> re.Pattern[str]:
    """*path* or anything deeper (``a.b`` also matches ``a.b.c`` and ``a.b[0]``); quotes optional."""
    parts = [re.escape(p) for p in re.split(r"(?<!\[)\.(?=[A-Za-z_\"])", path)]
    body = r"\.".join(f'"?{p}"?' for p in parts) if path != "(top level)" else re.escape(path)
    return re.compile(rf"^{body}(?:[.\[][^:]*)?$")


def test_corpus_is_large_and_every_file_has_an_expectation() -> None:
    """The corpus has at least 30 files and each has an entry saying where its problem is."""
    names = {p.stem for p in _corpus()}
    assert len(names) >= 30
    assert names == set(EXPECTED) | set(FILE_LEVEL)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_names_file_and_key_path(name: str) -> None:
    """Every problem line starts with the file, then a key path; one line names the expected path."""
    path = CORPUS / f"{name}.toml"
    problems = _problems(path)
    expected_path, pattern = EXPECTED[name]
    wanted = _path_pattern(expected_path)
    matched = False
    for line in problems:
        assert line.startswith(f"{path}: "), line
        key_path, sep, message = line[len(f"{path}: ") :].partition(": ")
        assert sep and message, f"no key path in {line!r}"
        assert KEY_PATH.match(key_path), f"{key_path!r} is not a key path, in {line!r}"
        if wanted.match(key_path) and (pattern is None or re.search(pattern, message)):
            matched = True
    assert matched, f"no line reports {expected_path!r}" + (f" with {pattern!r}" if pattern else "") + f": {problems}"


@pytest.mark.parametrize("name", sorted(FILE_LEVEL))
def test_unreadable_config_names_file_and_place(name: str) -> None:
    """A file that is not a TOML table gets one line naming the file and where it goes wrong."""
    path = CORPUS / f"{name}.toml"
    problems = _problems(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: ")
    assert re.search(FILE_LEVEL[name], problems[0]), problems


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_messages_speak_config_not_python(name: str) -> None:
    """Messages say what was expected in config terms, without Python exception or typing names."""
    for line in _problems(CORPUS / f"{name}.toml"):
        assert not re.search(r"\w+Error\b|typing\.|<class |NoneType|Literal\[", line), line


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.stem)
def test_emu_run_on_bad_config_exits_2_and_creates_nothing(path: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``emu run`` prints the problems, exits 2 without a traceback and creates no output directory."""
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip(), "no problem printed"
    assert all(line.startswith(f"{path}: ") for line in result.stderr.splitlines()), result.stderr
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.stem)
def test_emu_validate_on_bad_config_exits_2(path: pathlib.Path) -> None:
    """``emu validate`` reports the same problems and exits 2."""
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.stderr.strip()


def test_custom_policy_is_its_base_with_its_switches_and_says_so(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    config = load_config(path)
    mine, base = resolve_policy(config, "mine"), resolve_policy(config, "v5.1")
    assert attrs.evolve(mine, name="v5.1", rwsem=base.rwsem, description=base.description) == base
    assert (mine.name, mine.rwsem, mine.description) == ("mine", "5.3", "custom: v5.1 with rwsem = '5.3'")


def test_good_config_round_trip(tmp_path: pathlib.Path) -> None:
    """A good config parses to the values written, and parsing a copy gives an equal tree."""
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert (config.name, config.seed, config.horizon) == ("good", 7, 1_500_000_000)
    assert config.policies == ["v4.19", "mine"]
    assert (config.device.latency, config.device.nr_requests) == (250_000, 16)
    assert config.cgroups[1].path == "batch/low" and config.cgroups[1].io_latency is not None
    assert (config.files[0].size, config.files[0].cached) == (8 * 1024**2, 0.25)
    (process,) = config.processes
    (thread,) = process.threads
    assert (process.count, thread.iterations, thread.every) == (2, 3, 10_000_000)
    assert [type(op) for op in thread.program] == [Touch, Mmap, Think]
    assert thread.program[1].length == 64 * 1024 and thread.program[2].time == 1_000_000
    assert config.source == str(path)
    copy = tmp_path / "copy.toml"
    shutil.copyfile(path, copy)
    assert load_config(copy) == config  # ``source`` does not take part in equality
    assert config_from_dict(tomllib.loads(GOOD)) == config
    assert attrs.asdict(load_config(path)) == attrs.asdict(config)


def test_good_config_fills_defaults(tmp_path: pathlib.Path) -> None:
    """Keys left out take their documented defaults."""
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.device.name == "sda" and config.device.dev == "8:0"
    assert config.processes[0].threads[0].start == 0
    assert config.processes[0].mappings[0].madvise == "normal"
    assert config.writeback.interval > 0 and config.btrfs.space > 0


def test_missing_config_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    """A path that does not exist is one problem line, not a traceback."""
    path = tmp_path / "nope.toml"
    assert _problems(path) == [f"{path}: no such file"]


def test_all_problems_are_reported_at_once(tmp_path: pathlib.Path) -> None:
    """Several independent problems in one file give one line each."""
    text = (CORPUS / "unknown_cgroup.toml").read_text().replace('file = "data" }', 'file = "nofile" }')
    path = tmp_path / "two.toml"
    path.write_text(text)
    problems = _problems(path)
    assert any(".cgroup: " in p for p in problems) and any(".file: " in p for p in problems), problems


def _defined_in(module: types.ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", module.__name__) == module.__name__
    }


def test_actors_config_re_exports_the_config_modules() -> None:
    """Callers import from ``actors.lab.config`` only: it re-exports the schema and value types as the same objects."""
    exported = set(actors.lab.config.__all__)
    assert _defined_in(config_schema) <= exported
    assert _defined_in(config_types) - {"VALUE_HOOKS"} <= exported
    for name in exported:
        home = next((m for m in (config_schema, config_types) if hasattr(m, name)), actors.lab.config)
        assert getattr(actors.lab.config, name) is getattr(home, name), name


def test_duplicate_process_name_is_one_line() -> None:
    """One mistake, one line: a repeated process name is not also reported as a replica clash."""
    path = CORPUS / "duplicate_process_name.toml"
    assert _problems(path) == [f"{path}: processes[1].name: duplicate 'app'"]
