"""Import contracts: actors/ never imports trio; emu/ never imports actors; the kernel never imports the lab."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _imported_modules(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    return names


def _offenders(package: str, banned: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imported_modules(path):
            if name == banned or name.startswith(banned + "."):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


def test_actors_never_import_trio() -> None:
    """Nothing under actors/ imports trio or a trio submodule (actors await engine primitives only)."""
    assert (ROOT / "actors").is_dir()
    assert _offenders("actors", "trio") == []


def test_emu_never_imports_actors() -> None:
    """The engine knows no kernel words: nothing under emu/ imports the actors package."""
    assert _offenders("emu", "actors") == []


def test_the_scanner_sees_imports() -> None:
    """The scan is not vacuous: it finds the engine's own trio imports."""
    assert any(name.startswith("trio") for name in _imported_modules(ROOT / "emu" / "engine.py"))


def test_the_kernel_never_imports_the_lab() -> None:
    """Everything under actors/ outside actors/lab/ (the emulated kernel) imports nothing of actors.lab."""
    found = []
    for path in sorted((ROOT / "actors").rglob("*.py")):
        if "lab" in path.relative_to(ROOT / "actors").parts:
            continue
        found += [f"{path.relative_to(ROOT)}: {name}" for name in _imported_modules(path) if name.startswith("actors.lab")]
    assert (ROOT / "actors" / "lab").is_dir()
    assert found == []


def test_the_engine_has_no_private_imports() -> None:
    """emu/ modules import no underscore name of another emu module."""
    found = []
    for path in sorted((ROOT / "emu").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emu"):
                found += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert found == []
