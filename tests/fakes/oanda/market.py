"""The fake OANDA's account and market: prices, orders, FIFO trades, transactions, candles. No I/O.

Rules (the venue's, simplified where a test does not need more):

* The test is the market: ``tick`` publishes a bid/ask at a venue time; the
  venue clock is the latest tick or heartbeat time (never the wall clock).
* Market orders fill at the next tick after they arrive (buy at the ask,
  sell at the bid); a buy limit fills at the ask once the ask is at or below
  its price (a sell limit at the bid once it is at or above). Each fill is an
  ``ORDER_FILL`` transaction; ``max_fill_units`` (the partial-fill fault)
  caps what one tick fills, and the order stays PENDING until complete;
  ``overfill_units`` (the position-escalation fault) makes the next fill
  that many units larger than what the order had left.
* Positions are FIFO trades per instrument; closing units realise
  ``(exit - entry) * units`` into the balance, less the commission.
* Candles are built from the published ticks: ``mid`` is the exact midpoint
  (Decimal), volume the tick count, ``complete`` once the clock passed the close.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NoReturn

__all__ = ["Market", "Order", "OrderError", "Tick", "rfc3339"]

D = Decimal
ZERO = D(0)


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")


def _s(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"


class OrderError(Exception):
    """A refused request: HTTP status and the v20 error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("errorMessage", ""))
        self.status = status
        self.body = body


@dataclass(frozen=True, slots=True)
class Tick:
    instrument: str
    ts: int
    bid: Decimal
    ask: Decimal

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass
class Order:
    id: str
    client_id: str | None
    instrument: str
    units: Decimal  # signed
    type: str  # MARKET | LIMIT
    time_in_force: str
    price: Decimal | None
    create_time: int
    state: str = "PENDING"
    filled: Decimal = ZERO
    fill_ids: list[str] = field(default_factory=list)
    filled_time: int | None = None
    cancelled_time: int | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "createTime": rfc3339(self.create_time), "state": self.state,
                               "type": self.type, "instrument": self.instrument, "units": _s(self.units),
                               "timeInForce": self.time_in_force, "positionFill": "DEFAULT"}
        if self.client_id:
            doc["clientExtensions"] = {"id": self.client_id, "tag": "tradectl"}
        if self.price is not None:
            doc["price"] = _s(self.price)
            doc["triggerCondition"] = "DEFAULT"
            doc["partialFill"] = "DEFAULT_FILL"
        if self.state == "FILLED":
            doc.update(fillingTransactionID=self.fill_ids[-1], filledTime=rfc3339(self.filled_time or 0))
        if self.state == "CANCELLED":
            doc["cancelledTime"] = rfc3339(self.cancelled_time or 0)
        return doc


class Market:
    def __init__(self, *, account_id: str, balance: Decimal, currency: str = "USD", start_time: int = 0,
                 commission: Decimal = ZERO, instruments: tuple[str, ...] = ("EUR_USD",)) -> None:
        self.account_id = account_id
        self.balance = balance
        self.currency = currency
        self.clock = start_time
        self.commission = commission
        self.instruments = instruments
        self.max_fill_units: Decimal | None = None
        self.overfill_units = ZERO  # the overfill fault: the next fill is this much larger than the order's rest
        self.transactions: list[dict[str, Any]] = []
        self.orders: list[Order] = []
        self.ticks: dict[str, list[Tick]] = {i: [] for i in instruments}
        self.last: dict[str, Tick] = {}
        self.trades: dict[str, list[list[Decimal]]] = {i: [] for i in instruments}  # [signed units, price]
        self.fills: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ transactions
    @property
    def last_id(self) -> str:
        return self.transactions[-1]["id"] if self.transactions else "0"

    def _tx(self, kind: str, **fields: Any) -> dict[str, Any]:
        tx = {"id": str(len(self.transactions) + 1), "type": kind, "time": rfc3339(self.clock),
              "accountID": self.account_id, "userID": 1, "batchID": str(len(self.transactions) + 1), **fields}
        self.transactions.append(tx)
        return tx

    def since(self, after: str, page: int) -> list[dict[str, Any]]:
        start = int(after) if after.isdigit() else 0
        return self.transactions[start:start + page]

    def financing(self, amount: Decimal) -> dict[str, Any]:
        """A DAILY_FINANCING transaction (negative: the account paid)."""
        self.balance += amount
        return self._tx("DAILY_FINANCING", financing=_s(amount), accountBalance=_s(self.balance))

    # ------------------------------------------------------------------ orders
    def find(self, spec: str) -> Order | None:
        if spec.startswith("@"):
            return next((o for o in self.orders if o.client_id == spec[1:]), None)
        return next((o for o in self.orders if o.id == spec), None)

    def create(self, body: dict[str, Any]) -> tuple[Order, dict[str, Any]]:
        spec = body.get("order") if isinstance(body, dict) else None
        if not isinstance(spec, dict):
            raise OrderError(400, {"errorMessage": "Invalid value specified for 'order'", "errorCode": "INVALID"})
        kind = str(spec.get("type") or "")
        instrument = str(spec.get("instrument") or "")
        client_id = (spec.get("clientExtensions") or {}).get("id")
        if kind not in ("MARKET", "LIMIT"):
            self.reject(kind, spec, "ORDER_TYPE_INVALID")
        if instrument not in self.instruments:
            self.reject(kind, spec, "INSTRUMENT_UNKNOWN")
        try:
            units = D(str(spec.get("units")))
        except ArithmeticError:
            self.reject(kind, spec, "UNITS_INVALID")
        try:
            price = D(str(spec["price"])) if kind == "LIMIT" else None
        except (ArithmeticError, KeyError):
            self.reject(kind, spec, "PRICE_INVALID")
        if units == 0 or not units.is_finite():
            self.reject(kind, spec, "UNITS_INVALID")
        if client_id and any(o.client_id == client_id for o in self.orders):
            self.reject(kind, spec, "CLIENT_ORDER_ID_ALREADY_EXISTS")
        tif = str(spec.get("timeInForce") or ("FOK" if kind == "MARKET" else "GTC"))
        tx = self._tx(f"{kind}_ORDER", instrument=instrument, units=_s(units), timeInForce=tif,
                      positionFill=spec.get("positionFill", "DEFAULT"), reason="CLIENT_ORDER",
                      **({"price": _s(price)} if price is not None else {}),
                      **({"clientExtensions": spec["clientExtensions"]} if client_id else {}))
        order = Order(tx["id"], client_id, instrument, units, kind, tif, price, self.clock)
        self.orders.append(order)
        return order, tx

    def reject(self, kind: str, spec: dict[str, Any], reason: str) -> NoReturn:
        """Refuse an order create with a ``*_ORDER_REJECT`` transaction (HTTP 400)."""
        tx = self._tx(f"{kind or 'MARKET'}_ORDER_REJECT", instrument=spec.get("instrument"),
                      units=str(spec.get("units")), rejectReason=reason,
                      **({"clientExtensions": spec["clientExtensions"]} if spec.get("clientExtensions") else {}))
        raise OrderError(400, {"orderRejectTransaction": tx, "relatedTransactionIDs": [tx["id"]],
                               "lastTransactionID": tx["id"], "errorCode": reason,
                               "errorMessage": f"The order was rejected: {reason}"})

    def cancel(self, order: Order, reason: str = "CLIENT_REQUEST") -> dict[str, Any]:
        order.state = "CANCELLED"
        order.cancelled_time = self.clock
        return self._tx("ORDER_CANCEL", orderID=order.id, reason=reason,
                        **({"clientOrderID": order.client_id} if order.client_id else {}))

    # ------------------------------------------------------------------ market
    def advance(self, ts: int) -> None:
        self.clock = max(self.clock, ts)

    def tick(self, tick: Tick) -> list[dict[str, Any]]:
        """Publish a price: the clock moves, then working orders of the instrument fill against it."""
        self.advance(tick.ts)
        self.ticks[tick.instrument].append(tick)
        self.last[tick.instrument] = tick
        done = []
        for order in [o for o in self.orders if o.state == "PENDING" and o.instrument == tick.instrument]:
            if order.create_time > tick.ts:
                continue
            buy = order.units > 0
            price = tick.ask if buy else tick.bid
            if order.type == "LIMIT" and order.price is not None and (price > order.price if buy
                                                                      else price < order.price):
                continue
            done.append(self._fill(order, price))
        return done

    def _fill(self, order: Order, price: Decimal) -> dict[str, Any]:
        remaining = abs(order.units) - order.filled
        quantity = remaining if self.max_fill_units is None else min(remaining, self.max_fill_units)
        quantity, self.overfill_units = quantity + self.overfill_units, ZERO
        signed = quantity if order.units > 0 else -quantity
        pl = self._book(order.instrument, signed, price)
        commission = self.commission
        self.balance += pl - commission
        order.filled += quantity
        tx = self._tx("ORDER_FILL", orderID=order.id, instrument=order.instrument, units=_s(signed),
                      price=_s(price), fullVWAP=_s(price), pl=_s(pl), financing="0", commission=_s(commission),
                      guaranteedExecutionFee="0", accountBalance=_s(self.balance), reason=f"{order.type}_ORDER",
                      **({"clientOrderID": order.client_id} if order.client_id else {}))
        order.fill_ids.append(tx["id"])
        if order.filled >= abs(order.units):
            order.state = "FILLED"
            order.filled_time = self.clock
        self.fills.append(tx)
        return tx

    def _book(self, instrument: str, units: Decimal, price: Decimal) -> Decimal:
        """FIFO: close opposite trades first (realising P&L), open the rest as a new trade."""
        trades = self.trades[instrument]
        pl = ZERO
        while units and trades and (trades[0][0] > 0) != (units > 0):
            held, entry = trades[0]
            closing = min(abs(units), abs(held))
            direction = 1 if held > 0 else -1
            pl += (price - entry) * closing * direction
            trades[0][0] = held - closing * direction
            units += closing * direction
            if trades[0][0] == 0:
                trades.pop(0)
        if units:
            trades.append([units, price])
        return pl

    # ------------------------------------------------------------------ reports
    def position(self, instrument: str) -> dict[str, Any] | None:
        trades = self.trades[instrument]
        if not trades:
            return None
        sides: dict[str, dict[str, Any]] = {}
        for name, sign in (("long", 1), ("short", -1)):
            mine = [t for t in trades if (t[0] > 0) == (sign > 0)]
            units = sum((t[0] for t in mine), ZERO)
            side: dict[str, Any] = {"units": _s(units), "pl": "0", "resettablePL": "0", "financing": "0",
                                    "unrealizedPL": _s(self._unrealized(mine, instrument))}
            if mine:
                side["averagePrice"] = _s(sum((t[0] * t[1] for t in mine), ZERO) / units)
                side["tradeIDs"] = [str(i) for i, _ in enumerate(mine, 1)]
            sides[name] = side
        return {"instrument": instrument, "pl": "0", "unrealizedPL": _s(self.unrealized()), "resettablePL": "0",
                "commission": "0", "financing": "0", **sides}

    def _unrealized(self, trades: list[list[Decimal]], instrument: str) -> Decimal:
        last = self.last.get(instrument)
        if last is None:
            return ZERO
        return sum(((last.mid - price) * units for units, price in trades), ZERO)

    def unrealized(self) -> Decimal:
        return sum((self._unrealized(self.trades[i], i) for i in self.instruments), ZERO)

    def summary(self) -> dict[str, Any]:
        unrealized = self.unrealized()
        return {"id": self.account_id, "alias": "fake", "currency": self.currency, "balance": _s(self.balance),
                "NAV": _s(self.balance + unrealized), "unrealizedPL": _s(unrealized), "pl": "0",
                "marginRate": "0.02", "marginAvailable": _s(self.balance + unrealized), "marginUsed": "0",
                "openTradeCount": sum(len(t) for t in self.trades.values()),
                "openPositionCount": sum(1 for t in self.trades.values() if t),
                "pendingOrderCount": sum(1 for o in self.orders if o.state == "PENDING"),
                "hedgingEnabled": False, "lastTransactionID": self.last_id, "createdTime": rfc3339(0)}

    def candles(self, instrument: str, step: int, from_ts: int | None, count: int, components: str, *,
                to_ts: int | None = None) -> list[dict[str, Any]]:
        """Candles opening at or after ``from_ts`` and before ``to_ts``: the first ``count`` of them, or with
        ``to_ts`` alone the last ``count`` (v20's rules for from / to / count)."""
        by_open: dict[int, list[Tick]] = {}
        for tick in self.ticks[instrument]:
            by_open.setdefault(tick.ts - tick.ts % step, []).append(tick)
        opens = [t for t in sorted(by_open) if (from_ts is None or t >= from_ts) and (to_ts is None or t < to_ts)]
        if from_ts is None and to_ts is not None:
            opens = opens[-count:]
        found = []
        for start in opens:
            ticks = by_open[start]
            candle: dict[str, Any] = {"complete": self.clock >= start + step, "volume": len(ticks),
                                      "time": rfc3339(start)}
            for letter, key, value in (("M", "mid", Tick.mid.fget), ("B", "bid", lambda t: t.bid),
                                       ("A", "ask", lambda t: t.ask)):
                if letter in components:
                    prices = [value(t) for t in ticks]  # type: ignore[misc]
                    candle[key] = {"o": _s(prices[0]), "h": _s(max(prices)), "l": _s(min(prices)),
                                   "c": _s(prices[-1])}
            found.append(candle)
            if len(found) >= count:
                break
        return found
