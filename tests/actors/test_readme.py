"""README.md and docs/API.md stay true: their library examples run, and docs/API.md describes every name ``emu.__all__`` exports."""

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
API = ROOT / "docs" / "API.md"
#: The pages whose python examples must run.
PAGES = (README, API)
#: Horizon the examples run with: long enough for the monitor (every 50 ms) to read /proc twice.
EXAMPLE_HORIZON_NS = 200 * emu.NSEC_PER_MSEC


def library_examples(text: str) -> list[str]:
    """The README's python code blocks that start with ``import emu`` or ``from actors``."""
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    return [b for b in blocks if b.lstrip().startswith(("import emu", "from actors"))]


def all_examples() -> list[tuple[str, str]]:
    """``(page name, example)`` for every library example of README.md and docs/API.md."""
    return [(page.name, example) for page in PAGES for example in library_examples(page.read_text())]


def test_readme_has_library_examples() -> None:
    """The README shows the experiment API in a runnable example; docs/API.md shows the engine and the experiment API."""
    readme = library_examples(README.read_text())
    assert any("run_experiment" in e and "load_config(" in e for e in readme)
    api = library_examples(API.read_text())
    assert any(e.lstrip().startswith("import emu") for e in api)
    assert any("run_experiment" in e and "load_config(" in e for e in api)
    assert "docs/API.md" in README.read_text()


@pytest.mark.parametrize("index", range(len(all_examples())))
def test_readme_example_runs(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each library example runs as written from the repository root (configs cut to a 200 ms horizon)."""
    import actors.lab.config

    page, source = all_examples()[index]
    real = actors.lab.config.load_config

    def short(path):
        return attrs.evolve(real(path), horizon=EXAMPLE_HORIZON_NS)

    monkeypatch.setattr(actors.lab.config, "load_config", short)
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, f"{page} example {index}", "exec"), {"__name__": "__readme__"})  # noqa: S102
    assert out.getvalue(), "the example prints what it shows"


def test_api_page_mentions_every_public_name() -> None:
    """Every name in ``emu.__all__`` appears in docs/API.md (as a whole word)."""
    text = API.read_text()
    missing = [name for name in emu.__all__ if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not missing, f"docs/API.md does not mention: {', '.join(missing)}"


def test_readme_is_a_short_page_whose_links_resolve() -> None:
    """README.md stays a user's page (at most 12 KB) and every relative link in it resolves."""
    text = README.read_text()
    assert len(text.encode()) <= 12 * 1024
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (ROOT / target).exists(), target
