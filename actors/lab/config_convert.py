"""Structuring TOML into the config schema with cattrs, and saying what went wrong.

``converter`` is a strict cattrs converter: unknown keys are rejected, ints,
bools and strings are never coerced, the value types of
``actors.lab.config_types`` are parsed by their own hooks, lists and tables say
"expected a list"/"expected a table with keys ..." instead of failing
inside cattrs, and an op table is dispatched on its ``op`` key to the op
class ``OP_NAMES`` names. The keys spelled differently from their fields,
``"io.latency"``, ``"io.max"``, ``"memory.max"`` and ``"memory.high"``
(``CgroupConfig.io_latency``...), are renamed both ways.

``describe`` turns cattrs' nested validation errors into the config's own
message format, one line per problem::

    bad.toml: processes[1].threads[0].every: expected a duration like "10ms", got 'ten'

Not here: the value types and TOML reading (``actors.lab.config_types``), the
schema (``actors.schema``), and checks that look across fields
(``actors.lab.config_check``), which run after structuring succeeded.
"""

from __future__ import annotations

import types
import typing
from typing import Literal

import attrs
import cattrs
from cattrs.errors import IterableValidationError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn, override

from actors.lab.config_types import VALUE_HOOKS, check_int64
from actors.schema import OP_NAMES, CgroupConfig, Op


def describe(error: BaseException, source: str) -> list[str]:
    """*error* (from ``converter.structure``) as ``source: key.path: message`` lines."""

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
        for field, key in _SPELLED.items():
            path = path.replace(f".{field}", f".{key}")
        path = path.lstrip(".")
        out.append(f"{source}: {path or '(top level)'}: {message}")
    return out


def _keys(cls: type) -> list[str]:
    """The TOML keys of *cls*: ``io.latency``/``io.max`` as the file spells them; ``source`` is the loader's, not the file's."""
    return [_SPELLED.get(a.name, a.name) for a in attrs.fields(cls) if a.name != "source"]


#: ``CgroupConfig`` fields and the cgroup interface files they spell.
_SPELLED = {"io_latency": "io.latency", "io_max": "io.max", "memory_max": "memory.max", "memory_high": "memory.high"}


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def structure_int(value: object, _type: type) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return check_int64(value)

    def structure_bool(value: object, _type: type) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value

    def structure_str(value: object, _type: type) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value

    for type_, hook in ((int, structure_int), (bool, structure_bool), (str, structure_str), *VALUE_HOOKS):
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
        overrides = {field: override(rename=key) for field, key in _SPELLED.items()} if cls is CgroupConfig else {}
        if any(a.name == "source" for a in attrs.fields(cls)):
            overrides["source"] = override(omit=True)  # set by the loader, never by the file
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


#: The strict converter every config is structured with (``converter.structure(data, ExperimentConfig)``).
converter = _make_converter()
