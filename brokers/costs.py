"""The one cost model shared by the simulated broker and the training environment.

A policy trained against costs that differ from the ones it meets in a
backtest learns to over-trade; keeping one implementation makes that
impossible. Prices come out quantized to the instrument's tick and fees to the
account currency's smallest unit we count (``fee_increment``), as ``Decimal``,
so P&L is exact when it is summed over fills.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from brokers.base import Side

_BPS = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class CostModel:
    """Spread, slippage and commission, all relative to the reference price.

    * ``spread_bps``: full bid/ask spread; a buy pays half of it, a sell half.
    * ``slippage_bps``: extra adverse move on every fill.
    * ``commission_bps``: fee as a fraction of notional, at least ``min_commission``.
    * ``price_increment``: the instrument's tick; fills are rounded *against* the
      trader (buys up, sells down) so the simulation never flatters results.
    """

    spread_bps: Decimal = Decimal("1.0")
    slippage_bps: Decimal = Decimal("0.5")
    commission_bps: Decimal = Decimal("0.2")
    min_commission: Decimal = Decimal("0")
    price_increment: Decimal = Decimal("0.00001")
    fee_increment: Decimal = Decimal("0.01")

    @property
    def adverse_fraction(self) -> Decimal:
        """Fraction of the price a market order loses to spread and slippage."""
        return (self.spread_bps / 2 + self.slippage_bps) * _BPS

    def fill_price(self, side: Side, reference_price: float | Decimal) -> Decimal:
        """The price a market order of ``side`` fills at, given a mid/reference price."""
        ref = reference_price if isinstance(reference_price, Decimal) else Decimal(repr(reference_price))
        if side is Side.BUY:
            raw = ref * (1 + self.adverse_fraction)
            return raw.quantize(self.price_increment, rounding=ROUND_CEILING)
        raw = ref * (1 - self.adverse_fraction)
        return raw.quantize(self.price_increment, rounding=ROUND_FLOOR)

    def commission(self, quantity: Decimal, price: Decimal) -> Decimal:
        """Fee for one fill, rounded half-even to ``fee_increment``."""
        fee = abs(quantity) * price * self.commission_bps * _BPS
        fee = max(fee, self.min_commission)
        return fee.quantize(self.fee_increment, rounding=ROUND_HALF_EVEN)

    def round_price(self, price: float | Decimal) -> Decimal:
        value = price if isinstance(price, Decimal) else Decimal(repr(price))
        return value.quantize(self.price_increment, rounding=ROUND_HALF_EVEN)
