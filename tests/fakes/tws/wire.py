"""The TWS API socket protocol as the fake speaks it: framing, and the server messages ib_async 2.1 decodes.

Every message after the handshake is a 4-byte big-endian length and NUL-terminated text fields. The field
layouts below are those of ``ib_async/decoder.py`` at ``SERVER_VERSION`` (176: the order messages still
carry ``faProfile`` (< 177), the execution no ``pendingPriceRevision`` (< 178), contract details have no
version field (>= 164), error messages carry the advanced-reject JSON (>= 166)). Numbers go out as text the
way TWS writes them; ``Decimal`` keeps prices and commissions exact on our side of the wire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

SERVER_VERSION = 176
MIN_CLIENT_VERSION = 157

# message ids, server -> client
ORDER_STATUS, ERR_MSG, OPEN_ORDER, NEXT_VALID_ID, CONTRACT_DATA, EXECUTION_DATA = 3, 4, 5, 9, 10, 11
MANAGED_ACCTS, HISTORICAL_DATA, CURRENT_TIME, REAL_TIME_BARS = 15, 17, 49, 50
CONTRACT_DATA_END, OPEN_ORDER_END, EXECUTION_DATA_END, COMMISSION_REPORT = 52, 53, 55, 59
POSITION_DATA, POSITION_END, ACCOUNT_SUMMARY, ACCOUNT_SUMMARY_END = 61, 62, 63, 64
COMPLETED_ORDER, COMPLETED_ORDERS_END = 101, 102

Field = str | int | float | Decimal | bool | None


def text(value: Field) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def frame(fields: Iterable[Field]) -> bytes:
    """One message: the length prefix, then each field followed by NUL."""
    payload = "".join(text(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def split(payload: bytes) -> list[str]:
    """A message's fields (the trailing NUL's empty field dropped)."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


@dataclass(frozen=True)
class Instrument:
    """A contract the fake venue lists; ``conId`` is its IB contract id."""

    con_id: int
    symbol: str
    sec_type: str  # STK, CASH, FUT
    currency: str
    exchange: str
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    last_trade_date: str = ""  # FUT: YYYYMMDD
    multiplier: str = ""
    min_tick: str = "0.01"
    long_name: str = ""

    def contract_fields(self, exchange: str | None = None) -> list[Field]:
        """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency, localSymbol,
        tradingClass: the contract as order, execution and position messages carry it."""
        return [self.con_id, self.symbol, self.sec_type, self.last_trade_date, "0", "", self.multiplier,
                exchange if exchange is not None else self.exchange, self.currency, self.local_symbol,
                self.trading_class]


def next_valid_id(order_id: int) -> list[Field]:
    return [NEXT_VALID_ID, 1, order_id]


def managed_accounts(accounts: Sequence[str]) -> list[Field]:
    return [MANAGED_ACCTS, 1, ",".join(accounts)]


def error(req_id: int, code: int, message: str) -> list[Field]:
    return [ERR_MSG, 2, req_id, code, message, ""]


def current_time(epoch: int) -> list[Field]:
    return [CURRENT_TIME, 1, epoch]


def contract_details(req_id: int, i: Instrument) -> list[Field]:
    return [
        CONTRACT_DATA, req_id, i.symbol, i.sec_type, i.last_trade_date, "0", "", i.exchange, i.currency,
        i.local_symbol, i.trading_class, i.trading_class, i.con_id, i.min_tick,
        i.multiplier, "ACTIVETIM,ADJUST,LMT,MKT", i.exchange, 1, 0, i.long_name, i.primary_exchange, "",
        "", "", "", "UTC", "", "", "", "", 0,  # numSecIds
        0, "", "", "", "", "", "1", "1", "1",  # aggGroup..stockType, minSize, sizeIncrement, suggested
    ]


def contract_details_end(req_id: int) -> list[Field]:
    return [CONTRACT_DATA_END, 1, req_id]


def position(account: str, i: Instrument, quantity: Decimal, average_cost: Decimal) -> list[Field]:
    return [POSITION_DATA, 3, account, *i.contract_fields(), quantity, average_cost]


def position_end() -> list[Field]:
    return [POSITION_END, 1]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> list[Field]:
    return [ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> list[Field]:
    return [ACCOUNT_SUMMARY_END, 1, req_id]


def real_time_bar(req_id: int, ts_open: int, o: Decimal, h: Decimal, low: Decimal, c: Decimal, volume: Decimal,
                  wap: Decimal, count: int) -> list[Field]:
    return [REAL_TIME_BARS, 3, req_id, ts_open, o, h, low, c, volume, wap, count]


def historical_data(req_id: int, start: str, end: str, bars: Sequence[Sequence[Field]]) -> list[Field]:
    """``bars``: (date, open, high, low, close, volume, wap, count) each; the decoder ends the request itself."""
    fields: list[Field] = [HISTORICAL_DATA, req_id, start, end, len(bars)]
    for bar in bars:
        fields += list(bar)
    return fields


def order_status(order_id: int, status: str, filled: Decimal, remaining: Decimal, avg_price: Decimal,
                 perm_id: int, last_price: Decimal, client_id: int) -> list[Field]:
    return [ORDER_STATUS, order_id, status, filled, remaining, avg_price, perm_id, 0, last_price, client_id, "", ""]


@dataclass
class OrderFields:
    """What the fake knows about one order, for openOrder and completedOrder."""

    order_id: int
    client_id: int
    perm_id: int
    action: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None
    tif: str
    account: str
    order_ref: str
    status: str
    filled: Decimal
    completed_time: str = ""


def open_order(o: OrderFields, i: Instrument) -> list[Field]:
    lmt = "" if o.limit_price is None else o.limit_price
    return [
        OPEN_ORDER, o.order_id, *i.contract_fields(),
        o.action, o.quantity, o.order_type, lmt, "", o.tif, "", o.account, "O", 0, o.order_ref,
        o.client_id, o.perm_id, 0, 0, 0, "", "", "", "", "",  # outsideRth..faPercentage
        "",  # faProfile (server < 177)
        "", "", "", "", "", 0, "", "", 0, "", "", "", "", "",  # modelCode..stockRangeUpper
        "", 0, 0, 0, "", 0, 0, 0, "", 0, 0, "", 0, "", "",  # displaySize..deltaNeutralAuxPrice
        0, 0, "", "", "", "", "",  # continuousUpdate..comboLegsDescrip
        0, 0, 0,  # combo legs, order combo legs, smart routing params
        "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
        "",  # hedgeType
        0, "", "", 0, 0,  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld, deltaNeutral present
        "",  # algoStrategy
        0, 0, o.status, "", "", "", "", "", "", "", "", "", "", "", "", "", "", 0, 0,  # solicited..randomizePrice
        0,  # conditions
        "", "", "", "", "", "", "", "", "", "", "", "", 0, 0, "", 0,  # adjustedOrderType..usePriceMgmtAlgo
        "", 0, 0,  # duration, postToAts, autoCancelParent
        "", "", "", "", "",  # minTradeQty..midOffsetAtHalf
    ]


def open_order_end() -> list[Field]:
    return [OPEN_ORDER_END, 1]


def completed_order(o: OrderFields, i: Instrument) -> list[Field]:
    lmt = "" if o.limit_price is None else o.limit_price
    return [
        COMPLETED_ORDER, *i.contract_fields(),
        o.action, o.quantity, o.order_type, lmt, "", o.tif, "", o.account, "O", 0, o.order_ref, o.perm_id,
        0, 0, 0, "", "", "", "",  # outsideRth..faPercentage
        "",  # faProfile (server < 177)
        "", "", "", "", "", 0, "", "", "", "", "", "", "",  # modelCode..stockRangeUpper
        "", 0, 0, "", 0, 0, "", 0, "", "",  # displaySize..deltaNeutralAuxPrice
        0, 0, "", "", "",  # continuousUpdate..comboLegsDescrip
        0, 0, 0,  # legs, order legs, params
        "", "", "",  # scale
        "",  # hedgeType
        "", "", 0, 0,  # clearingAccount, clearingIntent, notHeld, deltaNeutral present
        "",  # algoStrategy
        0, o.status, 0, 0,  # solicited, status, randomizeSize, randomizePrice
        0,  # conditions
        "", "", "", 0, 0, "", o.filled, "", 0, "", 0, 0, "", o.completed_time, o.status,
        "", "", "", "", "",  # minTradeQty..midOffsetAtHalf
    ]


def completed_orders_end() -> list[Field]:
    return [COMPLETED_ORDERS_END]


@dataclass(frozen=True)
class ExecutionFields:
    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    time: str  # "YYYYmmdd HH:MM:SS UTC"
    account: str
    side: str  # BOT | SLD
    shares: Decimal
    price: Decimal
    cum_qty: Decimal
    avg_price: Decimal
    order_ref: str
    commission: Decimal
    currency: str


def exec_details(req_id: int, e: ExecutionFields, i: Instrument) -> list[Field]:
    return [
        EXECUTION_DATA, req_id, e.order_id, *i.contract_fields(),
        e.exec_id, e.time, e.account, i.exchange, e.side, e.shares, e.price, e.perm_id, e.client_id, 0,
        e.cum_qty, e.avg_price, e.order_ref, "", "", "", 1,
    ]


def exec_details_end(req_id: int) -> list[Field]:
    return [EXECUTION_DATA_END, 1, req_id]


def commission_report(e: ExecutionFields) -> list[Field]:
    return [COMMISSION_REPORT, 1, e.exec_id, e.commission, e.currency, "", "", ""]
