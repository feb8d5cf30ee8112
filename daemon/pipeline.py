"""The path of one bar: guard → strategy → sizing → governor → order manager.

Fills come back through ``on_fill``: portfolio → store → trade records →
governor observers. The pipeline holds no I/O of its own beyond awaiting the
store and the order manager, so it runs the same under the live daemon, the
backtester and tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import structlog

from brokers.base import Bar, Broker, Fill, OrderRequest, OrderUpdate, utc_datetime
from daemon.bar_guard import BarGuard
from daemon.orders import ManagedOrder, OrderManager
from daemon.portfolio import ClosedTrade, Portfolio
from daemon.report import RunStats
from daemon.store import BarRejection, DecisionRow, EquitySnapshot, RiskEvent, Store
from risk.governor import RiskContext, RiskGovernor, TradingState, Verdict, VerdictKind
from risk.layers import FLATTEN, RiskHooks
from risk.sizing import Sizer, order_for_target
from strategies.base import Action, Decision, PositionView, Strategy

log = structlog.get_logger(__name__)

AlertSink = Callable[[str, str, dict[str, Any]], Awaitable[None] | None]


@dataclass(slots=True)
class Counts:
    bars: int = 0
    rejected_bars: int = 0
    orders: int = 0
    fills: int = 0
    risk_denials: int = 0
    trades: int = 0
    decisions_by_action: dict[str, int] = field(default_factory=dict)

    @property
    def decisions(self) -> int:
        return sum(self.decisions_by_action.values())


@dataclass(slots=True)
class LastDecision:
    symbol: str
    ts: int
    action: str
    confidence: float | None
    verdict: str
    reason: str = ""


class TradingPipeline:
    def __init__(
        self,
        *,
        broker: Broker,
        guard: BarGuard,
        strategy: Strategy,
        sizer: Sizer,
        governor: RiskGovernor,
        portfolio: Portfolio,
        store: Store,
        alert: AlertSink | None = None,
        live_clock: bool = False,
        equity_every: int = 1,
    ) -> None:
        self.broker = broker
        self.guard = guard
        self.strategy = strategy
        self.sizer = sizer
        self.governor = governor
        self.portfolio = portfolio
        self.store = store
        self.orders: OrderManager | None = None
        self._alert = alert
        self._live_clock = live_clock
        self._equity_every = max(1, equity_every)
        self.counts = Counts()
        self.last_decision: LastDecision | None = None
        self.last_bar: Bar | None = None
        self.stats = RunStats(float(portfolio.starting_cash))
        self.hooks = RiskHooks(governor.layers)
        self._flattening = False
        self._risk_flattened = False
        self._rolled_back = False
        # set by the daemon: switch the policy to the registered gold model (drawdown halt tier)
        self.on_rollback: Callable[[int], Awaitable[None]] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._last_denial: tuple[str, str, str] | None = None
        # latency observers set by the metrics (seconds); None leaves the policy step untimed
        self.observe_policy: Callable[[float], None] | None = None
        self.observe_bar_to_order: Callable[[float], None] | None = None
        self._bar_started = 0.0

    def attach(self, orders: OrderManager) -> None:
        self.orders = orders

    # ------------------------------------------------------------------ bars
    async def on_bar(self, bar: Bar) -> None:
        """Handle one bar end to end. Never raises for bad data: rejects and counts.

        The one path of every bar, live or replayed: a bar that changes
        nothing costs a guard check, a mark, a decision and a few rows.
        """
        self._bar_started = time.perf_counter()
        await self.apply_updates()
        counts = self.counts
        counts.bars += 1
        result = self.guard.check(bar, time.time() if self._live_clock else None)
        if not result.accepted:
            self._rejected(bar, result.reason, result.detail)
            return
        symbol = bar.symbol
        if result.episode_start:
            self.strategy.reset(symbol)
        self.last_bar = bar
        portfolio = self.portfolio
        portfolio.mark(symbol, bar.close, bar.ts)
        # no fill can land between marking, deciding and sizing: fills are applied at the next drain
        view = portfolio.view(symbol)
        equity = portfolio.equity()
        sent = counts.orders
        observe = self.observe_policy
        if observe is None:
            decisions = self.strategy.decide((bar,), (view,))
        else:
            started = time.perf_counter()
            decisions = self.strategy.decide((bar,), (view,))
            observe(time.perf_counter() - started)
        for decision in decisions:
            await self._act(decision, bar, view, equity)
        if counts.orders != sent:
            equity = portfolio.equity()
        await self._finish_bar(bar.ts, equity)

    async def _finish_bar(self, ts: int, equity: float) -> None:
        """After the decisions: the risk layers see the mark, then the equity snapshot and a flush if due."""
        portfolio = self.portfolio
        if self.hooks.equity(ts, equity, portfolio.day_start_equity, portfolio.peak_equity):
            await self._risk_requests(ts)
        elif self.counts.bars & 63 == 0:
            await self._record_risk_events()
        self._snapshot(ts, equity)
        if self.store.should_flush:
            self._flush_in_background()

    def _snapshot(self, ts: int, equity: float) -> None:
        if self.counts.bars % self._equity_every == 0:
            portfolio = self.portfolio
            self.store.record_equity(
                EquitySnapshot(ts, equity, portfolio.cash_text, portfolio.realized_net_text, portfolio.unrealized())
            )
            self.stats.add(ts, equity)

    async def apply_updates(self) -> int:
        """Book every order update the broker has delivered (fills first reach the books here).

        ``on_bar`` starts with it, so no decision is made on books that miss a
        delivered fill; the daemon also calls it as soon as fills can have
        arrived, so they are booked before the next bar rather than with it.
        """
        orders = self.orders
        assert orders is not None, "attach() an OrderManager first"
        updates = self.broker.drain_updates()
        for update in updates:
            await orders.apply(update)
        return len(updates)

    def _rejected(self, bar: Bar, reason: str, detail: str) -> None:
        self.counts.rejected_bars += 1
        ts = bar.ts if isinstance(bar.ts, int) else None
        self.store.record_rejection(BarRejection(ts, bar.symbol, reason, detail))
        log.warning("bar rejected", symbol=bar.symbol, ts=ts, reason=reason, detail=detail)
        if reason == "gap":
            self.strategy.reset(bar.symbol)

    def _flush_in_background(self) -> None:
        """Write buffered rows while the next bars are processed; at most one flush in flight.

        SQLite releases the GIL while it writes, so on two cores the write
        overlaps with the pipeline instead of stalling it.
        """
        previous = self._flush_task
        if previous is not None and not previous.done():
            return  # rows keep buffering; the running flush will be followed by the next one
        self._flush_task = asyncio.get_running_loop().create_task(self.store.flush())

    async def drain(self) -> None:
        """Wait for a background flush (shutdown, tests)."""
        if self._flush_task is not None:
            await self._flush_task
            self._flush_task = None
        await self.store.flush()

    async def _risk_requests(self, ts: int) -> None:
        self.hooks.apply(self.governor)
        await self._record_risk_events()
        if self.hooks.flatten_requested and not self._risk_flattened:
            self._risk_flattened = True
            await self.flatten("risk:flatten_requested", ts)
        if self.hooks.rollback_to_gold and not self._rolled_back and self.on_rollback is not None:
            self._rolled_back = True
            await self.on_rollback(ts)

    async def on_update(self, update: OrderUpdate) -> None:
        assert self.orders is not None
        await self.orders.apply(update)

    # ------------------------------------------------------------------ decisions
    async def _act(self, decision: Decision, bar: Bar, view: PositionView, equity: float) -> None:
        portfolio = self.portfolio
        symbol = decision.symbol
        request = None
        if decision.action is not Action.HOLD:
            target = self.sizer.target(decision, equity=equity, price=bar.close, position=view)
            if target is not None:
                assert self.orders is not None
                current = portfolio.quantity(symbol) + self.orders.pending_quantity(symbol)
                request = order_for_target(symbol, current, target, decision.action.name.lower())
        if request is None:
            self._record(None, decision, None, None, None)
            return
        decision_id = self.store.next_decision_id()
        context = self._context(request, bar, decision)
        verdict = self.governor.check(request, context)
        if not verdict.allowed:
            await self._denied(decision_id, decision, request, verdict, bar.ts)
            return
        if verdict.quantity is not None and verdict.quantity != request.quantity:
            request = replace(request, quantity=verdict.quantity)
        assert self.orders is not None
        entry = context.increases_exposure(request)
        order = await self._send(request, decision_id, decision, verdict, bar.ts, entry=entry)
        self._record(decision_id, decision, verdict, request.signed_quantity, order.client_order_id)

    def _context(self, request: OrderRequest, bar: Bar, decision: Decision | None) -> RiskContext:
        portfolio = self.portfolio
        return RiskContext(
            state=self.governor.state,
            ts=int(time.time()) if self._live_clock else bar.ts,
            position=portfolio.quantity(request.symbol),
            last_price=bar.close,
            equity=portfolio.equity(),
            day_start_equity=portfolio.day_start_equity,
            peak_equity=portfolio.peak_equity,
            gross_exposure=portfolio.gross_exposure(),
            confidence=decision.confidence if decision is not None else None,
            extras={"bar_ts": bar.ts, **decision.extras} if decision is not None else {"bar_ts": bar.ts, FLATTEN: True},
            feed_connected=self.broker.feed_status().get("connected"),  # read per order: the venue's current word
        )

    async def _send(
        self, request: OrderRequest, decision_id: int, decision: Decision, verdict: Verdict, ts: int, *, entry: bool
    ) -> ManagedOrder:
        """``entry``: the order opens, adds to or reverses a position (a close alerts at its exit, with the P&L)."""
        assert self.orders is not None
        order = await self.orders.submit(request, ts=ts, decision_id=decision_id)
        if self.observe_bar_to_order is not None:
            self.observe_bar_to_order(time.perf_counter() - self._bar_started)
        self.counts.orders += 1
        self._last_denial = None
        self.hooks.order_sent(request.symbol, ts)
        log.info(
            "order",
            client_order_id=order.client_order_id,
            symbol=request.symbol,
            side=request.side.value,
            quantity=str(request.quantity),
            status=order.status.value,
            action=decision.action.name,
            resized=verdict.kind is VerdictKind.RESIZE,
        )
        what = f"{request.side.value} {request.quantity} {request.symbol}"
        if order.rejection:
            await self._emit("order_rejected", f"{what}: {order.rejection}",
                             {"client_order_id": order.client_order_id, "reason": order.rejection})
        elif entry:
            await self._emit("entry", f"{what} ({decision.action.name})",
                             {"client_order_id": order.client_order_id, "symbol": request.symbol})
        return order

    async def _denied(
        self, decision_id: int, decision: Decision, request: OrderRequest, verdict: Verdict, ts: int
    ) -> None:
        self.counts.risk_denials += 1
        self._record(decision_id, decision, verdict, request.signed_quantity, None)
        self.store.record_risk_event(
            RiskEvent(ts, request.symbol, verdict.layer, verdict.kind.value, verdict.reason, verdict.message)
        )
        key = (request.symbol, verdict.layer, verdict.reason)
        if key == self._last_denial:
            return  # the same denial bar after bar: stored and counted, logged and alerted once
        self._last_denial = key
        log.warning(
            "risk denied order",
            symbol=request.symbol,
            layer=verdict.layer,
            verdict=verdict.kind.value,
            reason=verdict.reason,
            message=verdict.message,
        )
        data = {"layer": verdict.layer, "reason": verdict.reason}
        await self._emit("risk_" + verdict.kind.value, verdict.message, data)

    def _record(
        self,
        decision_id: int | None,
        decision: Decision,
        verdict: Verdict | None,
        quantity: Decimal | None,
        client_order_id: str | None,
    ) -> None:
        action = decision.action.name
        by_action = self.counts.decisions_by_action
        by_action[action] = by_action.get(action, 0) + 1
        row = DecisionRow(
            decision.symbol,
            decision.ts,
            action,
            decision.reason,
            id=decision_id,
            confidence=decision.confidence,
            probabilities=decision.probabilities,
            extras=decision.extras or None,
        )
        if verdict is not None:  # an order was asked for: what the governor said, and what was sent
            row.verdict, row.verdict_layer, row.verdict_reason = verdict.kind.value, verdict.layer, verdict.reason
            row.order_quantity, row.client_order_id = quantity, client_order_id
        self.store.record_decision(row)
        self.last_decision = LastDecision(
            decision.symbol,
            decision.ts,
            action,
            decision.confidence,
            verdict.kind.value if verdict is not None else "no_order",
            verdict.reason if verdict is not None else "",
        )

    # ------------------------------------------------------------------ fills
    async def on_fill(self, fill: Fill, order: ManagedOrder) -> None:
        """Called by the order manager once per new fill id."""
        effect = self.portfolio.apply_fill(fill, reason=order.request.reason)
        await self.store.record_fill(fill, effect.realized)
        self.counts.fills += 1
        self.hooks.fill(fill, order.request.quantity, order.filled_quantity)
        verdict = self.hooks.validate_fill(
            order.request.quantity, order.filled_quantity, ts=fill.ts, client_order_id=order.client_order_id
        )
        if verdict.kind is VerdictKind.HALT:
            await self._halt(verdict, fill.ts, fill.symbol)
        log.info(
            "fill",
            client_order_id=fill.client_order_id,
            symbol=fill.symbol,
            side=fill.side.value,
            quantity=str(fill.quantity),
            price=str(fill.price),
            fee=str(fill.fee),
        )
        for trade in effect.closed:
            await self._trade_closed(trade)

    async def on_fee(self, fill: Fill, delta: Decimal, order: ManagedOrder) -> None:
        """Called by the order manager when the venue completes a booked fill's fee (never a second fill)."""
        self.portfolio.correct_fee(fill.symbol, delta)
        await self.store.correct_fill_fee(fill.fill_id, fill.fee)
        log.info("fill fee completed", fill_id=fill.fill_id, client_order_id=order.client_order_id,
                 fee=str(fill.fee), change=str(delta))

    async def _trade_closed(self, trade: ClosedTrade) -> None:
        self.counts.trades += 1
        self.stats.add_trade(trade.pnl)
        await self.store.record_trade(trade)
        self.hooks.trade_closed(trade.symbol, trade.pnl, trade.exit_ts)
        self.sizer.record_trade(trade.pnl)
        log.info("trade closed", symbol=trade.symbol, direction=trade.direction, pnl=str(trade.pnl))
        await self._emit("exit", f"{trade.symbol} closed, P&L {trade.pnl}", {"pnl": str(trade.pnl)})

    async def _record_risk_events(self) -> None:
        """Store and alert what the layers noticed (warnings, requested state changes)."""
        for event in self.hooks.drain_events():
            self.store.record_risk_event(
                RiskEvent(event.ts, None, event.layer, event.level, event.reason, event.message)
            )
            log.warning("risk event", layer=event.layer, reason=event.reason, message=event.message)
            await self._emit("risk_event", event.message, {"layer": event.layer, "reason": event.reason})

    def resumed(self, ts: int) -> None:
        """An operator resumed: layers forget their latches and the drawdown peak restarts here."""
        self.hooks.resumed(ts)
        self.portfolio.peak_equity = self.portfolio.equity()
        self._risk_flattened = False
        self._rolled_back = False

    async def _halt(self, verdict: Verdict, ts: int, symbol: str | None) -> None:
        self.store.record_risk_event(
            RiskEvent(ts, symbol, verdict.layer, verdict.kind.value, verdict.reason, verdict.message)
        )
        if self.governor.state is not TradingState.HALTED:
            self.governor.transition(TradingState.HALTED, f"{verdict.layer}:{verdict.reason}")
        log.error("trading halted", layer=verdict.layer, reason=verdict.reason, message=verdict.message)
        await self._emit("halt", verdict.message, {"layer": verdict.layer, "reason": verdict.reason})

    async def flatten(self, reason: str, ts: int | None = None) -> dict[str, Any]:
        """Cancel working orders and close every position through the governor's exit path.

        Closing orders carry the ``flatten`` mark, which lets them through a
        PAUSED/REDUCING/HALTED state; the governor still judges them.
        """
        assert self.orders is not None
        when = ts if ts is not None else (self.last_bar.ts if self.last_bar else 0)
        self._flattening = True
        cancelled, sent, denied = [], [], []
        try:
            for order in self.orders.working():
                await self.orders.cancel(order.client_order_id, when)
                cancelled.append(order.client_order_id)
            for position in self.portfolio.positions():
                request = order_for_target(position.symbol, position.quantity, Decimal(0), "flatten")
                if request is None:
                    continue
                bar = self.last_bar
                price = self.portfolio.last_price(position.symbol)
                mark = Bar(position.symbol, bar.ts if bar else when, price, price, price, price)
                verdict = self.governor.check(request, self._context(request, mark, None))
                if not verdict.allowed:
                    denied.append({"symbol": position.symbol, "reason": verdict.reason})
                    self.store.record_risk_event(RiskEvent(
                        when, position.symbol, verdict.layer, verdict.kind.value, verdict.reason, verdict.message
                    ))
                    continue
                order = await self.orders.submit(request, ts=when)
                self.counts.orders += 1
                sent.append(order.client_order_id)
        finally:
            self._flattening = False
        log.warning("flatten", reason=reason, cancelled=cancelled, sent=sent, denied=denied)
        await self._emit("flatten", f"flatten ({reason}): {len(sent)} closing orders", {"sent": sent})
        return {"cancelled": cancelled, "orders": sent, "denied": denied, "state": self.governor.state.value}

    async def on_anomaly(self, kind: str, message: str, order: ManagedOrder | None) -> None:
        """Order-manager anomalies: an overfill halts trading; unknown orders are alerted."""
        log.error("order anomaly", kind=kind, message=message)
        ts = self.last_bar.ts if self.last_bar else 0
        symbol = order.request.symbol if order else None
        self.store.record_risk_event(
            RiskEvent(ts, symbol, "orders", "halt" if kind == "overfill" else "alert", kind, message)
        )
        if kind == "overfill" and self.governor.state is not TradingState.HALTED:
            self.governor.transition(TradingState.HALTED, f"orders:{kind}")
        await self._emit(kind, message, {})

    async def _emit(self, kind: str, message: str, data: dict[str, Any]) -> None:
        if self._alert is None:
            return
        try:
            result = self._alert(kind, message, data)
            if result is not None:
                await result
        except Exception as exc:  # alerts never break trading
            log.warning("alert failed", kind=kind, error=repr(exc))

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        portfolio = self.portfolio
        equity = portfolio.equity()
        last = self.last_decision
        return {
            "state": self.governor.state.value,
            "equity": round(equity, 2),
            "cash": str(portfolio.cash),
            "pnl_today": round(equity - portfolio.day_start_equity, 2),
            "realized_pnl": str(portfolio.realized - portfolio.fees),
            "unrealized_pnl": round(portfolio.unrealized(), 2),
            "fees": str(portfolio.fees),
            "positions": portfolio.position_rows(),
            "last_decision": None
            if last is None
            else {
                "symbol": last.symbol,
                "ts": utc_datetime(last.ts).isoformat(),
                "action": last.action,
                "confidence": last.confidence,
                "verdict": last.verdict,
                "reason": last.reason,
            },
            "counts": {
                "bars": self.counts.bars,
                "rejected_bars": self.counts.rejected_bars,
                "decisions": self.counts.decisions,
                "orders": self.counts.orders,
                "fills": self.counts.fills,
                "trades": self.counts.trades,
                "risk_denials": self.counts.risk_denials,
            },
            "rejected_by_reason": dict(self.guard.rejected),
        }
