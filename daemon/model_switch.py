"""A running daemon follows the registry: the promoted model trades from the next bar, without a restart.

``ModelFollower.apply`` compares the registry's production model with the one trading; when they
differ it loads the new model off the event loop, then, holding the bar path (``Daemon.books``,
the lock every bar and every streamed order update takes), re-warms its LSTM from the broker's
recent bars and swaps it in (``Daemon.install_strategy``, the same code the drawdown tier's switch
to the gold model uses). Between the last decision of the old model and the first of the new one
no bar is handled, so no order goes out in between. A promotion and a rollback are the same thing
here: the registry names a different production model. The follower polls the registry every
``promotion.poll_seconds``; ``tradectl models promote|rollback`` also asks it at once through
``POST /models/promote``.

Probation: when the promotion recorded a parameter drift beyond ``promotion.drift_limit`` the new
model's trading days are judged by the shadow replay's day gates (``daemon.shadow.judge_day``) as
each day completes; the first day with a failed required gate rolls it back to the previous
production model (recorded as ``auto_rollback``) and alerts. A model that did not drift much is not
second-guessed day by day: the gates and the shadow replay it passed stand.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from brokers.base import utc_datetime
from brokers.errors import TradectlError

if TYPE_CHECKING:
    from daemon.app import Daemon
    from daemon.shadow import DayJudgement

log = structlog.get_logger(__name__)

__all__ = ["ModelFollower"]

AUTO = "tradectl daemon"


@dataclass(slots=True)
class _Probation:
    sha256: str
    drift: float
    limit: float
    since: date  # the day of the switch: judging starts with the next full day
    judged: date


class ModelFollower:
    """Keeps a running daemon on the registry's production model."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.enabled = daemon.config.strategy.kind == "recurrent"
        self.last_switch_seconds: float | None = None
        self._applying = asyncio.Lock()
        self._probation: _Probation | None = None

    # ------------------------------------------------------------------ switching
    async def apply(self) -> dict[str, Any]:
        """Trade the registry's production model if it is not the one trading (the API's /models/promote)."""
        if not self.enabled:
            return {"switched": False, "reason": "strategy.kind is not recurrent: promotions are not followed"}
        async with self._applying:
            return await self._apply()

    async def _apply(self) -> dict[str, Any]:
        daemon = self.daemon
        entry = await daemon.store.production_model()
        current = daemon.strategy.model_sha256
        if entry is None or entry.sha256 == current:
            return {"switched": False, "sha256": current}
        started = time.perf_counter()
        try:
            strategy = await daemon.load_model(entry.path)  # off the loop, outside the bar path
        except TradectlError as exc:
            log.error("promoted model refused; keeping the current one", sha256=entry.sha256, error=str(exc))
            daemon.events.publish("error", f"promoted model {entry.sha256[:12]} refused: {exc}",
                                  {"sha256": entry.sha256})
            return {"switched": False, "sha256": current, "error": str(exc)}
        async with daemon.books:
            last = daemon.pipeline.last_bar
            ts = last.ts if last is not None else daemon.broker.now()
            await daemon.install_strategy(strategy, ts)
        seconds = time.perf_counter() - started
        self.last_switch_seconds = seconds
        promotion = next((p for p in reversed(await daemon.store.promotions()) if p.sha256 == entry.sha256), None)
        action = promotion.action if promotion is not None else "promote"
        kind = "model_rollback" if action != "promote" else "model_switch"
        text = f"now trading {entry.sha256[:12]} (was {str(current)[:12]}; {action}) from the bar after " \
            f"{utc_datetime(ts):%Y-%m-%d %H:%M}"
        log.warning("model switched", sha256=entry.sha256, previous=current, action=action, seconds=round(seconds, 4))
        daemon.events.publish(kind, text, {"sha256": entry.sha256, "previous": current, "action": action})
        self._probation = None
        evidence = promotion.evidence if promotion is not None else {}
        if action == "promote" and evidence.get("drift_beyond_limit"):
            drift, limit = float(evidence["drift"]), float(evidence["drift_limit"])
            day = utc_datetime(ts).date()
            self._probation = _Probation(entry.sha256, drift, limit, day, day)
            daemon.events.publish(
                "model_drift",
                f"{entry.sha256[:12]} drifted {drift:.1%} from the model it replaced (limit {limit:.0%}): "
                "a failed day gate rolls it back",
                {"sha256": entry.sha256, "drift": drift, "limit": limit},
            )
        return {"switched": True, "sha256": entry.sha256, "previous": current, "action": action,
                "seconds": round(seconds, 6)}

    # ------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        """Poll the registry (and judge a drifted model's finished days) until ``stop``."""
        every = self.daemon.config.promotion.poll_seconds
        while not stop.is_set():
            try:
                await self.apply()
                await self._judge_probation()
            except Exception as exc:  # the follower never stops trading; it tries again at the next poll
                log.error("model follower failed; retrying", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _judge_probation(self) -> None:
        """Judge each finished day of a drifted model; roll back on the first with a failed required gate."""
        probation, daemon = self._probation, self.daemon
        last = daemon.pipeline.last_bar
        if probation is None or last is None or daemon.strategy.model_sha256 != probation.sha256:
            return
        today = utc_datetime(last.ts).date()
        day = probation.judged + timedelta(days=1)
        while day < today:
            judgement = await self._judge(day)
            probation.judged = day
            if judgement is not None and judgement.failed:
                await self._roll_back(probation, day, judgement.failed)
                return
            day += timedelta(days=1)

    async def _judge(self, day: date) -> DayJudgement | None:
        from daemon.shadow import judge_stored_day

        daemon = self.daemon
        await daemon.store.flush()  # the day's decisions and equity points are buffered until a flush
        action_map = tuple(str(a) for a in getattr(daemon.strategy, "metadata", {}).get("action_map", ()))
        judgement = await judge_stored_day(daemon.store, daemon.store.run_id, day, action_map, daemon.config)
        if not judgement.decisions:
            return None  # no bars that day (a weekend, a holiday)
        log.info("probation day judged", day=day.isoformat(), failed=judgement.failed)
        return judgement

    async def _roll_back(self, probation: _Probation, day: date, failed: list[str]) -> None:
        from daemon.promotion import rollback

        reason = (
            f"parameter drift {probation.drift:.1%} > {probation.limit:.0%} and on {day.isoformat()} "
            f"gate(s) failed: {', '.join(failed)}"
        )
        log.error("automatic rollback", sha256=probation.sha256, reason=reason)
        try:
            await rollback(self.daemon.store, "previous", reason=reason, who=AUTO, action="auto_rollback")
        except TradectlError as exc:
            self._probation = None
            self.daemon.events.publish("error", f"automatic rollback of {probation.sha256[:12]} impossible: {exc}")
            return
        await self.apply()
