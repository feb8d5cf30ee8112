"""Validation gates: named pass/fail checks a model must clear before it may trade.

Each gate compares one figure of an evaluation on held-out data with one
configured limit and says PASS or FAIL with both, so a refusal always reads
as a reason ("return -0.25 % <= buy-and-hold +2.26 %"), never as a verdict
without evidence. The figures come from ``Evidence``, which whoever ran the
model fills in (``daemon.validate`` from the backtest pipeline; cyclic
training later from its evaluation episodes), so the gates never depend on
how the model was made to trade.

Gates (names are what ``validation.advisory`` lists):

* ``episodes`` — at least ``min_episodes`` windows of ``episode_bars``
  decisions on data the model did not train on: fewer say too little;
* ``hold_rate`` — the share of HOLD decisions inside a band: a policy that
  never holds churns, one that always holds has learned nothing;
* ``trades_per_day`` — closed round trips per trading day inside a band
  (the options seed system overtraded itself into its costs);
* ``max_drawdown`` — the worst fall of equity, in percent;
* ``sharpe`` — the annualised Sharpe ratio of per-bar equity returns;
* ``action_share`` — no single action above a share of all decisions;
* ``invalid_actions`` — decisions naming an action outside the action map;
* ``beats_sma`` / ``beats_buy_and_hold`` — a higher return after costs than
  the SMA-cross baseline and than buying and holding, on the same bars
  through the same pipeline.

A gate whose figure cannot be computed (no decision, a flat equity curve)
fails: absence of evidence is not a pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "GATE_NAMES",
    "Evidence",
    "GateResult",
    "ValidationConfig",
    "failed_required",
    "judge",
    "render_gates",
]

GATE_NAMES: tuple[str, ...] = (
    "episodes",
    "hold_rate",
    "trades_per_day",
    "max_drawdown",
    "sharpe",
    "action_share",
    "invalid_actions",
    "beats_sma",
    "beats_buy_and_hold",
)

_HOLD = "HOLD"


class ValidationConfig(BaseModel):
    """Gates a model must pass on held-out data before it may trade (`tradectl validate`)."""

    model_config = ConfigDict(extra="forbid")

    min_episodes: int = Field(100, ge=1, description="evaluation episodes needed on data the model did not train on")
    episode_bars: int = Field(24, ge=1, description="decisions per evaluation episode (24 hourly bars = one day)")
    hold_rate_min: float = Field(0.30, ge=0, le=1, description="lowest share of HOLD decisions (below: churning)")
    hold_rate_max: float = Field(
        0.90, ge=0, le=1, description="highest share of HOLD decisions (above: the policy barely trades)"
    )
    trades_per_day_min: float = Field(
        0.1, ge=0, description="fewest closed round trips per trading day (a model that never trades shows nothing)"
    )
    trades_per_day_max: float = Field(10.0, gt=0, description="most closed round trips per trading day (overtrading)")
    max_drawdown_pct: float = Field(
        2.5, gt=0, description="worst equity drawdown allowed, percent (the risk governor's halt tier by default)"
    )
    min_sharpe: float = Field(0.5, description="lowest annualised Sharpe ratio of per-bar equity returns")
    max_action_share: float = Field(0.95, gt=0, le=1, description="no single action may take more of the decisions")
    max_invalid_actions: int = Field(0, ge=0, description="decisions naming an action outside the model's action map")
    advisory: list[str] = Field(
        default_factory=list, description="gates reported but not required to pass (names as printed)"
    )
    monte_carlo_runs: int = Field(5000, ge=1000, description="bootstrap runs over the trade list (at least 1,000)")
    monte_carlo_seed: int = Field(0, ge=0, description="seed of the bootstrap's random generator")
    monte_carlo_loss_pct: float = Field(
        0.0, ge=0, description="the loss whose probability is reported, percent of equity (0 = any loss)"
    )

    @field_validator("advisory")
    @classmethod
    def _known_gates(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(GATE_NAMES))
        if unknown:
            raise ValueError(f"unknown gate(s) {unknown}; gates are {list(GATE_NAMES)}")
        return names

    @model_validator(mode="after")
    def _bands(self) -> ValidationConfig:
        if self.hold_rate_min > self.hold_rate_max:
            raise ValueError("hold_rate_min must not exceed hold_rate_max")
        if self.trades_per_day_min > self.trades_per_day_max:
            raise ValueError("trades_per_day_min must not exceed trades_per_day_max")
        return self


@dataclass(frozen=True, slots=True)
class Evidence:
    """The figures of one evaluation on held-out data, as the gates need them."""

    decisions: int
    action_counts: Mapping[str, int]
    invalid_actions: int
    trading_days: int  # UTC dates with at least one bar decided on
    round_trips: int
    return_pct: float
    max_drawdown_pct: float
    sharpe: float | None
    sma_return_pct: float | None
    buy_and_hold_return_pct: float | None
    action_map: Sequence[str] = field(default=("HOLD", "BUY", "SELL", "CLOSE"))

    @property
    def hold_rate(self) -> float | None:
        return self.action_counts.get(_HOLD, 0) / self.decisions if self.decisions else None

    @property
    def trades_per_day(self) -> float | None:
        return self.round_trips / self.trading_days if self.trading_days else None

    def episodes(self, episode_bars: int) -> int:
        """Complete windows of ``episode_bars`` decisions."""
        return self.decisions // episode_bars


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    passed: bool
    required: bool
    figure: float | None
    limit: str
    detail: str
    unit: str = ""  # "%" when figure and limit are percentages

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def shown(self) -> str:
        """The figure as the table prints it, in the limit's terms."""
        if self.figure is None:
            return "n/a"
        if self.unit == "%":
            return f"{self.figure:.2f}%"
        if self.unit == "+%":
            return f"{self.figure:+.2f}%"
        return f"{self.figure:.4g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}%"


def judge(evidence: Evidence, config: ValidationConfig) -> list[GateResult]:
    """Every gate in ``GATE_NAMES`` order, each with its figure, limit and why it passed or failed."""
    advisory = set(config.advisory)
    results: list[GateResult] = []

    def gate(name: str, passed: bool, figure: float | None, limit: str, detail: str, unit: str = "") -> None:
        results.append(GateResult(name, passed, name not in advisory, figure, limit, detail, unit))

    c, e = config, evidence
    episodes = e.episodes(c.episode_bars)
    gate(
        "episodes", episodes >= c.min_episodes, float(episodes), f">= {c.min_episodes}",
        f"{episodes} windows of {c.episode_bars} decisions ({e.decisions} decisions on held-out bars)",
    )
    hold = e.hold_rate
    gate(
        "hold_rate", hold is not None and c.hold_rate_min <= hold <= c.hold_rate_max, hold,
        f"{c.hold_rate_min:.2f} .. {c.hold_rate_max:.2f}",
        "no decisions" if hold is None else f"{e.action_counts.get(_HOLD, 0)} of {e.decisions} decisions HOLD",
    )
    tpd = e.trades_per_day
    gate(
        "trades_per_day", tpd is not None and c.trades_per_day_min <= tpd <= c.trades_per_day_max, tpd,
        f"{c.trades_per_day_min:g} .. {c.trades_per_day_max:g}",
        "no trading days" if tpd is None else f"{e.round_trips} round trips over {e.trading_days} dates with bars",
    )
    gate(
        "max_drawdown", e.decisions > 0 and e.max_drawdown_pct <= c.max_drawdown_pct, e.max_drawdown_pct,
        f"<= {c.max_drawdown_pct:g}%", "worst fall of equity from a peak", "%",
    )
    gate(
        "sharpe", e.sharpe is not None and e.sharpe >= c.min_sharpe, e.sharpe, f">= {c.min_sharpe:g}",
        "undefined (equity never moved)" if e.sharpe is None else "annualised, per-bar equity returns",
    )
    if e.decisions:
        top, count = max(e.action_counts.items(), key=lambda kv: kv[1])
        share: float | None = count / e.decisions
        detail = f"{top} takes {count} of {e.decisions} decisions"
    else:
        share, detail = None, "no decisions"
    gate("action_share", share is not None and share <= c.max_action_share, share, f"<= {c.max_action_share:.2f}",
         detail)
    gate(
        "invalid_actions", e.invalid_actions <= c.max_invalid_actions, float(e.invalid_actions),
        f"<= {c.max_invalid_actions}", f"actions outside ({', '.join(e.action_map)})",
    )
    for name, label, baseline in (
        ("beats_sma", "SMA-cross baseline", e.sma_return_pct),
        ("beats_buy_and_hold", "buy-and-hold", e.buy_and_hold_return_pct),
    ):
        passed = baseline is not None and e.decisions > 0 and e.return_pct > baseline
        relation = ">" if passed else "<="
        gate(
            name, passed, e.return_pct, f"> {_pct(baseline)}",
            f"return {_pct(e.return_pct)} {relation} {label} {_pct(baseline)} after costs, same bars", "+%",
        )
    return results


def failed_required(results: Sequence[GateResult]) -> list[GateResult]:
    return [r for r in results if r.required and not r.passed]


def render_gates(results: Sequence[GateResult]) -> str:
    """The gate table: one row per gate, then a verdict line naming the required gates that failed."""
    rows = [("gate", "result", "figure", "limit", "detail")]
    for r in results:
        verdict = "PASS" if r.passed else ("FAIL" if r.required else "fail (advisory)")
        rows.append((r.name, verdict, r.shown, r.limit, r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in rows]
    failed = failed_required(results)
    if failed:
        lines.append(f"REJECTED: {len(failed)} required gate(s) failed: {', '.join(r.name for r in failed)}")
    else:
        lines.append("PASSED: every required gate passed")
    return "\n".join(lines)
