"""Position sizing: how large a position a BUY or SELL decision aims at.

Sizing proposes, the risk layers dispose: every method here returns an
unsigned size rounded DOWN to the lot and capped by ``max_quantity``; the
position, exposure and drawdown layers may cut it further. Sizes are
``Decimal`` and computed in ``Decimal`` so a hand-checked size is exact and
never loses a lot to a float that landed at 2499.999….

Inputs a method needs but does not get (no ATR, no realised volatility)
size to zero: an unknown risk is not sized as if it were small.

Methods
-------
* fixed: ``units``.
* risk_fraction: equity x risk_fraction / (ATR x stop_atr_multiple) — the
  loss if the volatility stop is hit is ``risk_fraction`` of equity.
* volatility: base_units x min(target_vol / realised_vol, max_scale).
* safe_f: the risk fraction is Kelly x ``kelly_multiplier`` (0.25) from a
  rolling record of closed round trips, capped at ``max_risk_fraction``,
  turned into units over the same ATR stop as risk_fraction. Until
  ``min_trades`` trips are recorded it uses ``bootstrap_risk_fraction``. A
  Kelly <= 0 means no measurable edge: the size is ``floor_quantity``
  (default 0, i.e. no new entries; see the config for the trade-off).
"""

from __future__ import annotations

import math
from collections import deque
from decimal import ROUND_DOWN, Decimal
from typing import Protocol

from brokers.base import OrderRequest, Side
from risk.config import SizingConfig
from strategies.base import FLAT, Action, Decision, PositionView

# Keys of Decision.extras the sizer reads when not given the values directly.
ATR = "atr"  # average true range, in price units
REALISED_VOL = "realised_vol"  # realised volatility, same unit as sizing.volatility.target_volatility

_ZERO = Decimal(0)


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


# No instrument trades this many units in one order; a size beyond it comes from degenerate inputs.
_ABSURD_UNITS = Decimal("1e12")


def round_to_lot(quantity: Decimal, lot: Decimal) -> Decimal:
    """Round toward zero to a whole number of lots (sign kept): never more than was sized."""
    return (quantity / lot).to_integral_value(rounding=ROUND_DOWN) * lot


def fixed_units(units: Decimal, lot: Decimal) -> Decimal:
    return max(round_to_lot(units, lot), _ZERO)


def risk_fraction_units(
    equity: float, risk_fraction: float, atr: float | None, stop_multiple: float, lot: Decimal
) -> Decimal:
    """Units whose loss at an ``stop_multiple`` x ATR stop is ``risk_fraction`` of equity."""
    if not (_usable(equity) and _usable(atr) and risk_fraction > 0 and stop_multiple > 0):
        return _ZERO
    assert atr is not None
    raw = _dec(equity) * _dec(risk_fraction) / (_dec(atr) * _dec(stop_multiple))
    if raw > _ABSURD_UNITS:
        # a stop distance this close to zero is a degenerate ATR, not a reason to bet the account
        return _ZERO
    return round_to_lot(raw, lot)


def volatility_scaled_units(
    base_units: Decimal, target_vol: float, realised_vol: float | None, max_scale: float, lot: Decimal
) -> Decimal:
    """``base_units`` scaled so every position carries about the same volatility."""
    if not (_usable(realised_vol) and target_vol > 0):
        return _ZERO
    assert realised_vol is not None
    scale = min(_dec(target_vol) / _dec(realised_vol), _dec(max_scale))
    return round_to_lot(base_units * scale, lot)


def kelly_fraction(win_rate: float, avg_win: float, avg_loss: float) -> float:
    """Kelly f* = W - (1 - W) / R with R = avg win / avg loss (both magnitudes).

    No losses yet gives W (R is unbounded); no wins gives -1. Any value <= 0
    means the record shows no edge.
    """
    if avg_loss <= 0:
        return win_rate
    if avg_win <= 0:
        return -1.0
    return win_rate - (1.0 - win_rate) * avg_loss / avg_win


class TradeRecord:
    """The rolling record of closed round trips that safe-f is estimated from."""

    def __init__(self, window: int) -> None:
        self._pnl: deque[float] = deque(maxlen=window)

    def add(self, pnl: float | Decimal) -> None:
        self._pnl.append(float(pnl))

    def __len__(self) -> int:
        return len(self._pnl)

    @property
    def win_rate(self) -> float:
        return sum(p > 0 for p in self._pnl) / len(self._pnl) if self._pnl else 0.0

    @property
    def avg_win(self) -> float:
        wins = [p for p in self._pnl if p > 0]
        return sum(wins) / len(wins) if wins else 0.0

    @property
    def avg_loss(self) -> float:
        """Average loss as a positive magnitude; break-even trips are neither wins nor losses."""
        losses = [-p for p in self._pnl if p < 0]
        return sum(losses) / len(losses) if losses else 0.0

    def kelly(self) -> float:
        return kelly_fraction(self.win_rate, self.avg_win, self.avg_loss)


def safe_f(record: TradeRecord, multiplier: float = 0.25) -> float:
    """Kelly x ``multiplier``: full Kelly is estimated from few trades and overbets wildly when wrong."""
    return record.kelly() * multiplier


def target_quantity(action: Action, size: Decimal) -> Decimal | None:
    """The signed position a decision aims at; None leaves the position alone."""
    if action is Action.BUY:
        return size
    if action is Action.SELL:
        return -size
    if action is Action.CLOSE:
        return _ZERO
    return None


def order_for_target(symbol: str, current: Decimal, target: Decimal, reason: str = "") -> OrderRequest | None:
    """The market order that moves ``current`` to ``target``; None when they are equal."""
    delta = target - current
    if not delta:
        return None
    return OrderRequest(symbol, Side.BUY if delta > 0 else Side.SELL, abs(delta), reason=reason)


class Sizer(Protocol):
    """What the pipeline asks of a sizer; every sizer implements all of it (no-ops where it does not apply)."""

    def target(
        self, decision: Decision, *, equity: float, price: float, position: PositionView = FLAT
    ) -> Decimal | None:
        """The signed position ``decision`` aims at; None leaves the position alone."""
        ...

    def keeps_position(self, action: Action, side: int) -> bool:
        """True when ``target`` surely leaves a position of ``side`` (-1, 0, 1) as it is for ``action``."""
        ...

    def record_trade(self, pnl: float | Decimal) -> None:
        """A round trip closed with ``pnl`` net of fees (the record sizes may be estimated from)."""
        ...

    def figures(self) -> dict[str, object]:
        """What the sizer last did, for the status view."""
        ...


class PositionSizer:
    """The ``Sizer`` for the ``sizing:`` config: the configured method, and the trade record safe-f needs.

    With ``resize_open`` off, a BUY while already long (or SELL while short)
    keeps the position: sizes are set at entry, so a size that drifts with
    volatility or equity does not turn every bar into a small adjustment order.
    """

    def __init__(self, cfg: SizingConfig) -> None:
        self.cfg = cfg
        self.record = TradeRecord(cfg.safe_f.window)
        self.last_size: Decimal | None = None

    def record_trade(self, pnl: float | Decimal) -> None:
        self.record.add(pnl)

    def size(self, *, equity: float, atr: float | None = None, realised_vol: float | None = None) -> Decimal:
        """The unsigned size the configured method proposes, lot-rounded and capped."""
        cfg, lot = self.cfg, self.cfg.lot_size
        method = cfg.method
        if method == "fixed":
            size = fixed_units(cfg.fixed.units, lot)
        elif method == "risk_fraction":
            rf = cfg.risk_fraction
            size = risk_fraction_units(equity, rf.risk_fraction, atr, rf.stop_atr_multiple, lot)
        elif method == "volatility":
            vol = cfg.volatility
            size = volatility_scaled_units(vol.base_units, vol.target_volatility, realised_vol, vol.max_scale, lot)
        else:
            size = self._safe_f_size(equity, atr)
        if cfg.max_quantity is not None and size > cfg.max_quantity:
            size = round_to_lot(cfg.max_quantity, lot)
        self.last_size = size
        return size

    def target(
        self,
        decision: Decision,
        *,
        equity: float,
        price: float,
        position: PositionView = FLAT,
        atr: float | None = None,
        realised_vol: float | None = None,
    ) -> Decimal | None:
        """The signed target position for ``decision``; None = leave the position alone.

        ``atr`` and ``realised_vol`` default to ``decision.extras[ATR]`` and
        ``[REALISED_VOL]``. A BUY/SELL that sizes to zero only closes an
        opposite position; it never closes a position on its own side.
        """
        action = decision.action
        if action is Action.HOLD:
            return None
        if action is Action.CLOSE:
            return _ZERO
        held = position.side
        if self.keeps_position(action, held):
            return None  # sizes are set at entry
        atr = atr if atr is not None else _float_or_none(decision.extras.get(ATR))
        realised_vol = realised_vol if realised_vol is not None else _float_or_none(decision.extras.get(REALISED_VOL))
        size = self.size(equity=equity, atr=atr, realised_vol=realised_vol)
        if size == 0:
            opposite = -1 if action is Action.BUY else 1
            return _ZERO if held == opposite else None
        return target_quantity(action, size)

    def keeps_position(self, action: Action, side: int) -> bool:
        """True when ``target`` surely leaves a position of ``side`` (-1, 0, 1) where it is for ``action``.

        ``target`` answers such a BUY/SELL with None (a CLOSE when flat
        targets flat); the backtester's quiet stretches skip sizing on them.
        """
        if action is Action.CLOSE:
            return side == 0
        if action is Action.HOLD:
            return True
        return side == (1 if action is Action.BUY else -1) and not self.cfg.resize_open

    def figures(self) -> dict[str, object]:
        record = self.record
        return {
            "method": self.cfg.method,
            "last_size": self.last_size,
            "trades": len(record),
            "win_rate": record.win_rate,
            "kelly": record.kelly() if len(record) else None,
            "safe_f": safe_f(record, self.cfg.safe_f.kelly_multiplier) if len(record) else None,
        }

    def _safe_f_size(self, equity: float, atr: float | None) -> Decimal:
        cfg = self.cfg.safe_f
        stop = self.cfg.risk_fraction.stop_atr_multiple
        if len(self.record) < cfg.min_trades:
            fraction = cfg.bootstrap_risk_fraction
        else:
            # Rounded to 1e-9 so float noise in the estimate (0.0999…) cannot cost a whole lot.
            fraction = round(min(safe_f(self.record, cfg.kelly_multiplier), cfg.max_risk_fraction), 9)
            if fraction <= 0:
                return round_to_lot(cfg.floor_quantity, self.cfg.lot_size)
        return risk_fraction_units(equity, fraction, atr, stop, self.cfg.lot_size)


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def build_sizer(cfg: SizingConfig) -> Sizer:
    """The sizer for the daemon's ``sizing:`` config section."""
    return PositionSizer(cfg)
