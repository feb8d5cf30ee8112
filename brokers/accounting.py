"""Position accounting: what a fill does to a position, first in, first out.

One rule for every book that holds a position, so a strategy is trained on
the P&L it will be judged by live: the daemon's portfolio and the training
environment both keep their positions as a ``FifoPosition``. A fill against
the position closes its oldest lots first; what is left of the fill opens a
new lot. Quantities and prices are ``Decimal``, so realized P&L is a sum of
products of fill quantities and fill prices: exact, no division.

The position is also marked here (``mark``, once per bar's close), because
what a strategy sees of it (``bars_held``, ``peak_unrealized``) must be
counted the same way in both books.

Cash, fees and round trips are the books' own business, not this module's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from brokers.base import ZERO

__all__ = ["Booked", "FifoPosition", "Lot"]


@dataclass(slots=True)
class Lot:
    """Quantity (signed: negative is short) opened at one price and not yet closed."""

    quantity: Decimal
    price: Decimal


@dataclass(frozen=True, slots=True)
class Booked:
    """What one fill did to a position: ``closed`` of it (oldest lots first), then ``opened`` a new lot."""

    closed: Decimal  # unsigned
    opened: Decimal  # unsigned
    realized: Decimal  # the closed part's price P&L, before fees
    direction: int  # the closed position's side: 1 long, -1 short (0 when nothing closed)
    flat_between: bool  # flat after the closing part: a round trip ended, or the opened lot starts one


@dataclass(slots=True)
class FifoPosition:
    """One symbol's open lots, oldest first, with the figures a strategy sees of them.

    ``quantity_float``, ``average`` and ``average_float`` are recomputed on
    every fill (rare) so that marking, which runs on every bar, reads them.
    ``bars_held`` and ``peak_unrealized`` restart whenever the position opens
    from flat or goes flat.
    """

    lots: deque[Lot] = field(default_factory=deque)
    quantity: Decimal = ZERO
    bars_held: int = 0
    peak_unrealized: float = 0.0
    quantity_float: float = 0.0
    average: Decimal = ZERO  # volume-weighted price of the open lots
    average_float: float = 0.0

    def book(self, signed: Decimal, price: Decimal) -> Booked:
        """Book a fill of ``signed`` quantity (negative sells) at ``price``."""
        held = self.quantity
        size = abs(signed)
        closing = min(size, abs(held)) if held and (held > ZERO) != (signed > ZERO) else ZERO
        opening = size - closing
        realized = ZERO
        direction = 0
        if closing:
            direction = 1 if held > ZERO else -1
            realized = self._consume(closing, price, direction)
        flat_between = not self.quantity
        if flat_between:
            self._restart()
        if opening:
            open_signed = opening if signed > ZERO else -opening
            self.lots.append(Lot(open_signed, price))
            self.quantity += open_signed
        self._refresh()
        return Booked(closing, opening, realized, direction, flat_between)

    def adopt(self, quantity: Decimal, price: Decimal) -> None:
        """Replace the lots with one of ``quantity`` at ``price`` (a position taken over from a broker)."""
        self.lots = deque([Lot(quantity, price)]) if quantity else deque()
        self.quantity = quantity
        self._refresh()

    def mark(self, price: float) -> None:
        """Count one bar closing at ``price`` while the position is open."""
        if self.quantity:
            self.bars_held += 1
            unrealized = self.unrealized_at(price)
            if unrealized > self.peak_unrealized:
                self.peak_unrealized = unrealized

    def unrealized_at(self, price: float) -> float:
        """The sum over lots of qty · (price - lot price), which is qty · (price - average); 0.0 when flat
        or unpriced (NaN)."""
        if not self.quantity_float or price != price:
            return 0.0
        return self.quantity_float * (price - self.average_float)

    def _consume(self, amount: Decimal, price: Decimal, direction: int) -> Decimal:
        """Close ``amount`` first in, first out; returns the price P&L realized."""
        realized = ZERO
        left = amount
        lots = self.lots
        while left:
            lot = lots[0]
            take = min(left, abs(lot.quantity))
            realized += take * (price - lot.price) * direction
            lot.quantity -= take * direction
            self.quantity -= take * direction
            left -= take
            if lot.quantity == 0:
                lots.popleft()
        return realized

    def _restart(self) -> None:
        self.bars_held = 0
        self.peak_unrealized = 0.0

    def _refresh(self) -> None:
        self.quantity_float = float(self.quantity)
        if self.quantity:
            cost = ZERO  # summed from ZERO like sum(..., ZERO), which fixes the result's exponent
            for lot in self.lots:
                cost += lot.quantity * lot.price
            self.average = cost / self.quantity
        else:
            self.average = ZERO
        self.average_float = float(self.average)
