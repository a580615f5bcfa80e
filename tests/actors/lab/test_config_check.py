"""Tests for ``actors.lab.config_check``: cross-reference problems of a structured config."""

from __future__ import annotations

from actors.lab.config import ExperimentConfig
from actors.lab.config_check import check_config
from actors.lab.config_convert import converter

#: One problem of every kind the checks know, each at a different key path.
EVERYTHING_WRONG = {
    "name": "x",
    "policies": ["v4.19", "nope", "mine"],
    "cgroups": [{"path": "a"}, {"path": "a/b/c"}, {"path": "a"}, {"path": "/abs"}, {"path": ""}],
    "files": [{"name": "f", "size": "1MiB"}, {"name": "f", "size": 4096}],
    "policy": [{"name": "mine", "base": "v0"}],
    "inject": {"tasks": "zz*", "files": "q*", "sigkill_every": "1ms", "sigkill_max": 0},
    "processes": [
        {
            "name": "p",
            "cgroup": "nowhere",
            "count": 2,
            "mappings": [{"name": "m", "file": "nofile"}, {"name": "m", "file": "f"}, {"name": "r", "file": "f"}],
            "threads": [
                {
                    "name": "t",
                    "program": [
                        {"op": "touch", "mapping": "zz"},
                        {"op": "touch", "mapping": "r", "write": True},
                        {"op": "proc_read", "target": "ghost"},
                        {"op": "mprotect", "mapping": "r", "prot": "rw"},
                        {"op": "mprotect", "prot": "r"},
                        {"op": "truncate", "file": "nofile"},
                        {"op": "truncate", "file": "f", "size": "2MiB"},
                    ],
                },
                {"name": "u", "program": []},
            ],
        },
        {"name": "p", "threads": []},
    ],
}


def test_check_config_reports_every_problem_in_key_order() -> None:
    """All cross-reference problems come back at once, as key-path lines, in the order of the config's keys."""
    config = converter.structure(EVERYTHING_WRONG, ExperimentConfig)
    assert check_config(config) == [
        "cgroups[1].path: parent 'a/b' is not a configured cgroup",
        """cgroups[3].path: cgroup path must look like "a.slice/b" (root is ""), got '/abs'""",
        'cgroups[4].path: the root cgroup is implicit, expected a path like "a/b"',
        "cgroups[2].path: duplicate 'a'",
        "files[1].name: duplicate 'f'",
        "processes[1].name: duplicate 'p'",
        "policy[0].base: unknown preset 'v0', expected one of v2.6.36, v4.19, v3, v3-no-cached-page, v5.1, v5.7, v5.10, v6.1, v6.4, v6.12",
        "policies[1]: unknown policy 'nope', expected one of mine, v2.6.36, v3, v3-no-cached-page, v4.19, v5.1, v5.10, v5.7, v6.1, v6.12, v6.4",
        "inject.tasks: no thread matches 'zz*' (threads are named process.thread)",
        "inject.files: no file matches 'q*'",
        "inject.sigkill_max: sigkill_every is set but sigkill_max is 0",
        "processes[0].cgroup: unknown cgroup 'nowhere'",
        "processes[0].mappings[1].name: duplicate 'm'",
        "processes[0].mappings[0].file: unknown file 'nofile'",
        "processes[0].threads[0].program[0].mapping: unknown mapping 'zz' in process 'p'",
        "processes[0].threads[0].program[1].write: mapping 'r' is not writable",
        "processes[0].threads[0].program[2].target: no process matches 'ghost'",
        "processes[0].threads[0].program[3].prot: mapping 'r' is not writable",
        'processes[0].threads[0].program[4].prot: needs a mapping (prot = "r" of which mapping?)',
        "processes[0].threads[0].program[5].file: unknown file 'nofile'",
        "processes[0].threads[0].program[6].size: 2097152 bytes does not shrink file 'f' (4096 bytes)",
        "processes[0].threads[1].program: expected at least one op",
        "processes[1].threads: expected at least one thread",
    ]


def test_check_config_matches_replicas_and_threads_by_name() -> None:
    """proc_read targets and [inject] tasks match replica names (p0, p1) and ``process.thread``."""
    data = {
        "name": "x",
        "files": [{"name": "f", "size": 4096}],
        "inject": {"tasks": "p1.t", "files": "f"},
        "processes": [
            {"name": "p", "count": 2, "threads": [{"name": "t", "program": [{"op": "proc_read", "target": "p0"}]}]}
        ],
    }
    assert check_config(converter.structure(data, ExperimentConfig)) == []


def test_check_config_needs_a_process() -> None:
    """A config without processes has nothing to run."""
    assert check_config(ExperimentConfig(name="empty")) == ["processes: expected at least one process"]
