"""docs/CONFIG.md stays complete and true to the config schema.

The schema is walked from ``ExperimentConfig`` with ``attrs.fields``: every
table (``[device]``, ``[[processes.threads]]``...) and every op class
(``op = "touch"``...) must have a section whose heading carries that token
in backticks, and every key of the table, spelled as the TOML file spells it
(``io.latency``, not ``io_latency``), must be the first cell of a table row
in that section, before the next heading; a row naming a key the schema
lacks fails too (a key holding tables may instead rely on its own
section). Every ```` ```toml ```` block must validate; every
```` ```toml broken ```` block must fail ``emu validate`` with exit status 2
and exactly the lines of the ```` ```console ```` block after it.
"""

from __future__ import annotations

import pathlib
import re
import types
import typing

import attrs
import pytest
from click.testing import CliRunner

from actors.lab.cli import main
from actors.lab.config import OP_NAMES, ExperimentConfig, load_config
from actors.lab.config_convert import _keys
from actors.lab.config_types import VALUE_HOOKS
from actors.lab.experiment import run_experiment
from emu import NSEC_PER_MSEC

ROOT = pathlib.Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "CONFIG.md"
#: The section heading of the root table (it has no ``[name]`` of its own).
TOP_LEVEL = "Top level"
#: attrs classes that a TOML file spells as one string value (``"io.max"``), not as a table.
VALUE_TYPES = {value_type for value_type, _hook in VALUE_HOOKS}

#: Horizon the valid examples are run with: enough for every thread to start.
EXAMPLE_HORIZON_NS = 60 * NSEC_PER_MSEC


def _table_classes(hint: object) -> list[type]:
    """The attrs classes a field annotation holds (through ``list[...]`` and unions)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [cls for arg in typing.get_args(hint) for cls in _table_classes(arg)]
    if typing.get_origin(hint) is list:
        return _table_classes(typing.get_args(hint)[0])
    return [hint] if isinstance(hint, type) and attrs.has(hint) and hint not in VALUE_TYPES else []


def toml_keys(cls: type) -> dict[str, object]:
    """*cls*'s TOML keys, spelled as the converter reads them (``io.latency``), → their field annotations."""
    hints = typing.get_type_hints(cls)
    fields = [a.name for a in attrs.fields(cls) if a.name != "source"]  # ``source`` is the loader's, not the file's
    return {key: hints[field] for field, key in zip(fields, _keys(cls), strict=True)}


def subtable_keys(cls: type) -> set[str]:
    """The TOML keys of *cls* whose values are tables, lists of tables or ops."""
    return {key for key, hint in toml_keys(cls).items() if _table_classes(hint)}


def schema_tables() -> list[tuple[str, type]]:
    """Every (heading token, class) reachable from ``ExperimentConfig``, root first, in field order."""
    out: list[tuple[str, type]] = []

    def walk(cls: type, path: str, token: str) -> None:
        out.append((token, cls))
        for key, hint in toml_keys(cls).items():
            for sub in _table_classes(hint):
                if sub in OP_NAMES:
                    walk(sub, path, f'op = "{OP_NAMES[sub]}"')
                    continue
                sub_path = f"{path}.{key}" if path else key
                walk(sub, sub_path, f"[[{sub_path}]]" if typing.get_origin(hint) is list else f"[{sub_path}]")

    walk(ExperimentConfig, "", TOP_LEVEL)
    return out


def sections(text: str) -> dict[str, str]:
    """Each heading's text (``#`` stripped) → the lines up to the next heading of any level, outside code fences."""
    out: dict[str, str] = {}
    heading, body, fenced = None, [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^#+ (.*)$", line)
        if match:
            if heading is not None:
                out[heading] = "\n".join(body)
            heading, body = match.group(1).strip(), []
        else:
            body.append(line)
    if heading is not None:
        out[heading] = "\n".join(body)
    return out


def section_for(token: str, by_heading: dict[str, str]) -> str:
    """The body of the one section whose heading is *token* (the root) or shows it as `` `token` ``."""
    found = [body for heading, body in by_heading.items() if heading == token or f"`{token}`" in heading]
    assert len(found) == 1, f"docs/CONFIG.md: expected one section headed `{token}`, found {len(found)}"
    return found[0]


def documented_keys(section: str) -> list[str]:
    """The keys a section's tables list: the `` `key` `` first cell of each row."""
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def toml_blocks(text: str, info: str) -> list[str]:
    """The fenced code blocks whose info string is exactly *info*."""
    return re.findall(rf"^```{re.escape(info)}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def broken_examples(text: str) -> list[tuple[str, list[str]]]:
    """Each ```toml broken`` block with the ``emu validate bad.toml`` output shown after it."""
    pairs = re.findall(
        r"^```toml broken\n(.*?)^```\n\n```console\n\$ emu validate bad\.toml\n(.*?)^```$",
        text,
        flags=re.DOTALL | re.MULTILINE,
    )
    return [(config, output.splitlines()) for config, output in pairs]


TABLES = schema_tables()


def test_schema_walk_reaches_every_table_and_op() -> None:
    """The walk finds the tables the config module documents and all nine op kinds."""
    tokens = [token for token, _cls in TABLES]
    assert tokens[0] == TOP_LEVEL
    for token in ("[device]", "[[cgroups]]", "[[processes.mappings]]", "[[processes.threads]]", "[[policy]]", "[swarm]"):
        assert token in tokens
    assert {cls for _token, cls in TABLES} >= set(OP_NAMES)


@pytest.mark.parametrize(("token", "cls"), TABLES, ids=[token for token, _cls in TABLES])
def test_every_key_is_documented_in_its_section(token: str, cls: type) -> None:
    """Every TOML key of the table is a row of its section, and every row there is a key of the table.

    A key holding tables (``device``, ``processes``) may go without a row: the walk gives it its own section.
    """
    section = section_for(token, sections(DOC.read_text()))
    listed = documented_keys(section)
    keys = list(toml_keys(cls))
    missing = [key for key in keys if key not in listed and key not in subtable_keys(cls)]
    stale = [key for key in listed if key not in keys]
    assert not missing, f"docs/CONFIG.md section `{token}` does not document: {', '.join(missing)}"
    assert not stale, f"docs/CONFIG.md section `{token}` documents keys {cls.__name__} does not have: {', '.join(stale)}"


def test_doc_has_examples() -> None:
    """The doc shows a minimal config, a complete one and at least two rejected ones."""
    text = DOC.read_text()
    assert len(toml_blocks(text, "toml")) >= 2
    assert len(broken_examples(text)) >= 2
    assert len(broken_examples(text)) == len(toml_blocks(text, "toml broken")), "each broken example is followed by its output"


@pytest.mark.parametrize("index", range(len(toml_blocks(DOC.read_text(), "toml"))))
def test_toml_example_validates_and_runs(index: int, tmp_path: pathlib.Path) -> None:
    """Each ```toml block is a whole config that validates and runs under its policies (horizon cut to 60 ms)."""
    path = tmp_path / f"example{index}.toml"
    path.write_text(toml_blocks(DOC.read_text(), "toml")[index])
    config = load_config(path)
    result = run_experiment(attrs.evolve(config, horizon=min(config.horizon, EXAMPLE_HORIZON_NS)), config.policies)
    assert [run.policy for run in result.runs] == config.policies
    assert all(run.results["latency"] for run in result.runs)


@pytest.mark.parametrize("index", range(len(broken_examples(DOC.read_text()))))
def test_broken_example_fails_as_shown(index: int, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``emu validate bad.toml`` on each broken example exits 2 and prints exactly the lines the doc shows."""
    config, expected = broken_examples(DOC.read_text())[index]
    (tmp_path / "bad.toml").write_text(config)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["validate", "bad.toml"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == expected
