"""README.md stays true: its library examples run, and it mentions every name ``emu.__all__`` exports."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import attrs
import pytest

import emu

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: Horizon the examples run with: long enough for the monitor (every 50 ms) to read /proc twice.
EXAMPLE_HORIZON_NS = 200 * emu.NSEC_PER_MSEC


def library_examples(text: str) -> list[str]:
    """The README's python code blocks that start with ``import emu`` or ``from actors``."""
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    return [b for b in blocks if b.lstrip().startswith(("import emu", "from actors"))]


def test_readme_has_library_examples() -> None:
    """The README shows the engine and the experiment API in runnable examples."""
    examples = library_examples(README.read_text())
    assert any(e.lstrip().startswith("import emu") for e in examples)
    assert any("run_experiment" in e and "load_config(" in e for e in examples)


@pytest.mark.parametrize("index", range(len(library_examples(README.read_text()))))
def test_readme_example_runs(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each library example runs as written from the repository root (configs cut to a 200 ms horizon)."""
    import actors.lab.config

    source = library_examples(README.read_text())[index]
    real = actors.lab.config.load_config

    def short(path):
        return attrs.evolve(real(path), horizon=EXAMPLE_HORIZON_NS)

    monkeypatch.setattr(actors.lab.config, "load_config", short)
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, f"README.md example {index}", "exec"), {"__name__": "__readme__"})  # noqa: S102
    assert out.getvalue(), "the example prints what it shows"


def test_readme_mentions_every_public_name() -> None:
    """Every name in ``emu.__all__`` appears in README.md (as a whole word)."""
    text = README.read_text()
    missing = [name for name in emu.__all__ if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not missing, f"README.md does not mention: {', '.join(missing)}"
