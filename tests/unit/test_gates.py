"""Each validation gate passes and fails on its own figure, says why, and reads its limit from the config."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from brokers.errors import ConfigError
from daemon.config import load_config
from strategies.evaluation.gates import GATE_NAMES, Evidence, ValidationConfig, failed_required, judge, render_gates

GOOD = Evidence(
    decisions=2_400,
    action_counts={"HOLD": 1_600, "BUY": 400, "SELL": 300, "CLOSE": 100},
    invalid_actions=0,
    trading_days=100,
    round_trips=150,
    return_pct=3.0,
    max_drawdown_pct=1.2,
    sharpe=1.4,
    sma_return_pct=1.0,
    buy_and_hold_return_pct=2.0,
)


def _by_name(evidence: Evidence, config: ValidationConfig | None = None) -> dict[str, Any]:
    return {r.name: r for r in judge(evidence, config or ValidationConfig())}


def test_good_evidence_passes_every_gate_in_order() -> None:
    results = judge(GOOD, ValidationConfig())
    assert [r.name for r in results] == list(GATE_NAMES)
    assert all(r.passed and r.required for r in results)
    assert failed_required(results) == []
    assert render_gates(results).splitlines()[-1] == "PASSED: every required gate passed"


@pytest.mark.parametrize(
    ("change", "gate", "figure"),
    [
        ({"decisions": 2_399}, "episodes", 99.0),  # 99 complete windows of 24
        ({"action_counts": {"HOLD": 2_200, "BUY": 200}}, "hold_rate", 2_200 / 2_400),
        ({"action_counts": {"HOLD": 600, "BUY": 1_800}}, "hold_rate", 0.25),
        ({"round_trips": 1_001}, "trades_per_day", 10.01),
        ({"round_trips": 9}, "trades_per_day", 0.09),
        ({"max_drawdown_pct": 2.51}, "max_drawdown", 2.51),
        ({"sharpe": 0.49}, "sharpe", 0.49),
        ({"sharpe": None}, "sharpe", None),
        ({"action_counts": {"HOLD": 2_000, "BUY": 400}}, None, None),
        ({"invalid_actions": 1}, "invalid_actions", 1.0),
        ({"sma_return_pct": 3.0}, "beats_sma", 3.0),  # equal is not better
        ({"buy_and_hold_return_pct": 3.5}, "beats_buy_and_hold", 3.0),
        ({"buy_and_hold_return_pct": None}, "beats_buy_and_hold", 3.0),
    ],
)
def test_each_gate_fails_alone(change: dict[str, Any], gate: str | None, figure: float | None) -> None:
    results = _by_name(replace(GOOD, **change))
    failed = [name for name, r in results.items() if not r.passed]
    if gate is None:  # a control row: a different mix inside every band fails nothing
        assert failed == []
        return
    assert failed == [gate]
    assert results[gate].figure == (figure if figure is None else pytest.approx(figure))


def test_action_share_catches_a_policy_that_always_buys() -> None:
    results = _by_name(replace(GOOD, action_counts={"HOLD": 800, "BUY": 1_600}),
                       ValidationConfig(max_action_share=0.6))
    assert not results["action_share"].passed
    assert results["action_share"].detail == "BUY takes 1600 of 2400 decisions"


def test_no_decisions_fails_rather_than_passes() -> None:
    empty = Evidence(0, {}, 0, 0, 0, 0.0, 0.0, None, 0.0, 0.0)
    results = _by_name(empty)
    assert {name for name, r in results.items() if not r.passed} == set(GATE_NAMES) - {"invalid_actions"}


def test_reasons_are_printed_with_figure_and_limit() -> None:
    losing = replace(GOOD, return_pct=-0.25, buy_and_hold_return_pct=2.26)
    table = render_gates(judge(losing, ValidationConfig()))
    row = next(line for line in table.splitlines() if line.startswith("beats_buy_and_hold"))
    assert "FAIL" in row and "-0.25%" in row and "> +2.26%" in row
    assert "return -0.25% <= buy-and-hold +2.26% after costs" in row
    assert table.splitlines()[-1] == "REJECTED: 2 required gate(s) failed: beats_sma, beats_buy_and_hold"


def test_advisory_gates_are_reported_but_not_required() -> None:
    config = ValidationConfig(advisory=["episodes"])
    results = judge(replace(GOOD, decisions=240, action_counts={"HOLD": 160, "BUY": 80}), config)
    episodes = next(r for r in results if r.name == "episodes")
    assert not episodes.passed and not episodes.required
    assert failed_required(results) == []
    assert "fail (advisory)" in render_gates(results)


def test_limits_come_from_the_config() -> None:
    strict = ValidationConfig(min_sharpe=2.0, max_drawdown_pct=1.0, min_episodes=200)
    failed = {r.name for r in judge(GOOD, strict) if not r.passed}
    assert failed == {"sharpe", "max_drawdown", "episodes"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"advisory": ["sharpe", "no_such_gate"]}, "no_such_gate"),
        ({"hold_rate_min": 0.9, "hold_rate_max": 0.5}, "hold_rate_min"),
        ({"trades_per_day_min": 5, "trades_per_day_max": 1}, "trades_per_day_min"),
        ({"monte_carlo_runs": 500}, "monte_carlo_runs"),
        ({"min_episodes": 0}, "min_episodes"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ValidationConfig(**settings)


def test_the_validation_section_of_a_config_file(tmp_path: Any) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("validation:\n  min_sharpe: 1.5\n  advisory: [episodes]\n")
    config = load_config(path)
    assert config.validation.min_sharpe == 1.5 and config.validation.advisory == ["episodes"]
    path.write_text("validation:\n  min_sharpe: 1.5\n  typo_key: 1\n")
    with pytest.raises(ConfigError, match="typo_key"):
        load_config(path)
