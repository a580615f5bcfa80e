"""A sweep's summary (actors.lab.sweep_summary): conclusions parsed strictly, checked per seed, their range in words."""

from __future__ import annotations

import pathlib

import attrs
import pytest

from actors.lab.sweep_spec import Sweep, load_sweep
from actors.lab.sweep_summary import (
    Conclusion,
    count_metrics,
    describe_range,
    evaluate,
    parse_conclusions,
    render_markdown,
    summary_rows,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]
P99 = "monitor/proc_read.p99_ns"
POLICIES = ("v4.19", "v3", "v5.1")


def _sweep(conclusions: tuple[Conclusion, ...] = (), metrics: tuple[str, ...] = (P99, "counters.throttled_bios")) -> Sweep:
    return Sweep(
        path=pathlib.Path("s.toml"), name="s", base=pathlib.Path("b.toml"), policies=POLICIES, seeds=(1, 2), root_seed=0,
        metric=P99, metrics=metrics, parameter="units", keys=("horizon", "units", "target"), points=(), conclusions=conclusions,
    )  # fmt: skip


def _table(values: dict[tuple[int, str, str], tuple[int, int]], count: int = 80) -> list[dict]:
    """Rows from (units, target, policy) -> (p99 of seed 1, of seed 2); every other figure fixed."""
    rows = []
    for (units, target, policy), p99s in values.items():
        for seed, p99 in zip((1, 2), p99s, strict=True):
            rows.append({"point": f"p{units}_{target}", "horizon": "1s", "units": units, "target": target, "policy": policy,
                         "seed": seed, P99: p99, "counters.throttled_bios": 10 * seed, "monitor/proc_read.count": count})  # fmt: skip
    return rows


# v5.1 low everywhere; v4.19 high but at units=16; V3 between, but above v4.19 at units=16 target=2000.
TABLE = _table({
    **{(u, t, "v5.1"): (50_000, 60_000) for u in (1, 16) for t in ("a", "b")},
    (1, "a", "v4.19"): (3_000_000, 2_000_000), (1, "b", "v4.19"): (2_500_000, 1_000_000),
    (16, "a", "v4.19"): (70_000, 80_000), (16, "b", "v4.19"): (90_000, 65_000),
    (1, "a", "v3"): (1_000_000, 900_000), (1, "b", "v3"): (800_000, 700_000),
    (16, "a", "v3"): (60_000, 70_000), (16, "b", "v3"): (200_000, 70_000),
})  # fmt: skip


def test_parse_good_conclusions() -> None:
    raw = [
        {"claim": "below", "policy": "v5.1", "metric": P99, "value": "200us"},
        {"claim": "ratio", "policy": "v4.19", "over": "v5.1", "factor": 10, "metric": P99},
        {"claim": "between", "policy": "v3", "low": "v5.1", "high": "v4.19", "metric": P99},
        {"claim": "above", "policy": "v4.19", "metric": "counters.throttled_bios", "value": 0},
    ]
    conclusions, problems = parse_conclusions(raw, POLICIES, [P99, "counters.throttled_bios"])
    assert problems == []
    assert [c.describe() for c in conclusions] == [
        "v5.1 monitor/proc_read.p99_ns < 200 us",
        "v4.19 monitor/proc_read.p99_ns >= 10 x v5.1's",
        "v3 monitor/proc_read.p99_ns between v5.1's and v4.19's",
        "v4.19 counters.throttled_bios > 0",
    ]
    assert conclusions[0].value == 200_000


@pytest.mark.parametrize(
    ("entry", "where", "message"),
    [
        ({"claim": "under"}, "conclusions[0].claim", "expected one of below, above, ratio, between"),
        ({"claim": "below", "policy": "v5.1", "metric": P99, "value": "1ms", "seed": 3}, "conclusions[0]", "unknown key(s) for claim 'below': seed"),
        ({"claim": "below", "policy": "v9", "metric": P99, "value": "1ms"}, "conclusions[0].policy", "got 'v9'"),
        ({"claim": "below", "policy": "v5.1", "metric": "x.p50_ns", "value": "1ms"}, "conclusions[0].metric", "expected one of the sweep's metrics"),
        ({"claim": "below", "policy": "v5.1", "metric": "counters.throttled_bios", "value": "1ms"}, "conclusions[0].value", "needs a *_ns metric"),
        ({"claim": "below", "policy": "v5.1", "metric": P99, "value": "soon"}, "conclusions[0].value", "expected a duration"),
        ({"claim": "ratio", "policy": "v4.19", "over": "v5.1", "factor": 0, "metric": P99}, "conclusions[0].factor", "expected a number > 0"),
        ({"claim": "between", "policy": "v3", "low": "v5.1", "metric": P99}, "conclusions[0].high", "required key is missing"),
    ],
)
def test_bad_conclusions_are_located(entry: dict, where: str, message: str) -> None:
    conclusions, problems = parse_conclusions([entry], POLICIES, [P99, "counters.throttled_bios"])
    assert conclusions == []
    assert [w for w, _ in problems] == [where]
    assert message in problems[0][1]


def test_conclusions_hold_seed_by_seed() -> None:
    """A claim holds at a point only if it holds for every seed; a missing value fails it."""
    below = Conclusion(claim="below", policy="v5.1", metric=P99, value=55_000)
    assert below.holds({"v5.1": {1: 50_000, 2: 54_999}})
    assert not below.holds({"v5.1": {1: 50_000, 2: 55_000}})
    assert not below.holds({"v5.1": {1: 50_000, 2: None}})
    assert not below.holds({})
    ratio = Conclusion(claim="ratio", policy="v4.19", over="v5.1", factor=10, metric=P99)
    assert ratio.holds({"v4.19": {1: 100, 2: 200}, "v5.1": {1: 10, 2: 20}})
    assert not ratio.holds({"v4.19": {1: 100, 2: 200}, "v5.1": {1: 10, 2: 21}})  # paired by seed
    between = Conclusion(claim="between", policy="v3", low="v5.1", high="v4.19", metric=P99)
    assert between.holds({"v3": {1: 5}, "v5.1": {1: 5}, "v4.19": {1: 9}})
    assert not between.holds({"v3": {1: 10}, "v5.1": {1: 5}, "v4.19": {1: 9}})


POINTS = {f"p{u}_{t}": {"units": u, "target": t} for u in (1, 4, 16) for t in ("a", "b")}


@pytest.mark.parametrize(
    ("holding", "text"),
    [
        (set(POINTS), "everywhere (6/6 points)"),
        (set(), "nowhere (0/6 points)"),
        ({"p4_a", "p4_b", "p16_a", "p16_b"}, "where units in {4, 16} (4/6 points)"),
        ({"p16_b"}, "where units in {16} and target in {b} (1/6 points)"),
        ({"p1_a", "p16_b"}, "at units=1, target=a; units=16, target=b (2/6 points)"),
        (set(POINTS) - {"p1_a"}, "everywhere but at units=1, target=a (5/6 points)"),
    ],
)
def test_describe_range(holding: set[str], text: str) -> None:
    assert describe_range(POINTS, holding) == text


def test_evaluate_on_a_table() -> None:
    sweep = _sweep((
        Conclusion(claim="below", policy="v5.1", metric=P99, value=100_000),
        Conclusion(claim="ratio", policy="v4.19", over="v5.1", factor=10, metric=P99),
        Conclusion(claim="between", policy="v3", low="v5.1", high="v4.19", metric=P99),
    ))  # fmt: skip
    assert [v.where for v in evaluate(sweep, TABLE)] == [
        "everywhere (4/4 points)",
        "where units in {1} (2/4 points)",
        "everywhere but at units=16, target=b (3/4 points)",
    ]


def test_keys_that_move_together_are_named_once() -> None:
    """Two keys equal at every point (units and its twin) are one range: ``units=twin in {1}``."""
    sweep = attrs.evolve(_sweep((Conclusion(claim="ratio", policy="v4.19", over="v5.1", factor=10, metric=P99),)), keys=("units", "twin", "target"))
    table = [{**row, "twin": row["units"]} for row in TABLE]
    assert [v.where for v in evaluate(sweep, table)] == ["where units=twin in {1} (2/4 points)"]


def test_summary_rows_medians_counts_and_stars() -> None:
    """Median over seeds, min-max for the plotted metric, ``n`` the fewest samples, ``*`` below 100."""
    sweep = _sweep(metrics=(P99, "counters.throttled_bios"))
    assert count_metrics(sweep.metrics) == ["monitor/proc_read.count"]
    headers, rows = summary_rows(sweep, TABLE)
    assert headers == ["units", "target", "policy", f"{P99} [min-max]", "counters.throttled_bios", "monitor/proc_read n"]
    first = rows[0]
    assert (first.values, first.policy) == (("1", "a"), "v5.1")
    assert first.cells == ("55 us* [50 us-60 us]", "15", "80")
    _, rows = summary_rows(sweep, _table({(1, "a", "v5.1"): (50_000, 60_000)}, count=100))
    assert rows[0].cells[0] == "55 us [50 us-60 us]"  # 100 samples: no star
    markdown = render_markdown(sweep, TABLE, evaluate(sweep, TABLE))
    assert "horizon = 1s" in markdown.splitlines()[0]
    assert "| 1 | a | v5.1 | 55 us* [50 us-60 us] | 15 | 80 |" in markdown


def test_shipped_sensitivity_sweep_loads() -> None:
    """configs/sweeps/seed-inversion-sensitivity.toml: 11 points x 3 policies x 5 seeds, its conclusions parsed."""
    sweep = load_sweep(ROOT / "configs" / "sweeps" / "seed-inversion-sensitivity.toml")
    assert len(sweep.tasks()) == 11 * 3 * 5
    assert len(sweep.conclusions) >= 3
    assert {c.metric for c in sweep.conclusions} <= set(sweep.metrics)
