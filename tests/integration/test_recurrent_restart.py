"""A daemon restart keeps the recurrent policy's memory: decisions equal an uninterrupted run's.

Three backtests of the real daemon over the bundled bars, all with the
recurrent strategy: one uninterrupted; one over the first ``cut`` bars that
then saves its states to the store (``save_to_store``); and a fresh daemon
on the same database that restores them (``restore_from_store``, features
rebuilt from the broker's history) and replays the remaining bars. Every
stored decision after the restart — action, confidence, probabilities,
observation hash, verdict, order quantity — must equal the uninterrupted
run's.

The cut is placed where the uninterrupted run is flat with no order working:
the simulated broker's saved state carries the account over, but rebuilding
an open position's holding time and peak in the portfolio is the daemon's
business, not the strategy's. Risk layers whose memory does not
survive a restart yet (cooldowns, streaks, daily counts, drawdown peaks) are
off for the same reason.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from brokers.history import load_bundled
from daemon.config import TradectlConfig
from daemon.runners import BacktestRunner
from daemon.store import Store
from strategies.recurrent import RecurrentStrategy, restore_from_store, save_to_store
from tests.integration.test_parity import write_bars

BARS = 2400
EARLIEST_CUT = 1300
_STATEFUL_LAYERS = ("cooldown", "trade_count", "submit_rate", "daily_loss", "drawdown", "loss_streak", "drip")
_COLUMNS = (
    "symbol, ts, action, confidence, probabilities, reason, verdict, verdict_layer, verdict_reason,"
    " order_quantity, extras"
)


def _config() -> TradectlConfig:
    return TradectlConfig(
        strategy={"kind": "recurrent"},
        risk={name: {"enabled": False} for name in _STATEFUL_LAYERS},
    )


def _decisions(db: Path, run_id: int) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT {_COLUMNS} FROM decisions WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()


def _flat_cut(db: Path, run_id: int, stamps: list[int]) -> int:
    """First bar index >= EARLIEST_CUT after which the run holds nothing and has no order working."""
    with sqlite3.connect(db) as conn:
        fills = conn.execute("SELECT ts, side, quantity FROM fills WHERE run_id = ?", (run_id,)).fetchall()
        sent = "SELECT ts FROM decisions WHERE run_id = ? AND client_order_id IS NOT NULL"
        ordered = {r[0] for r in conn.execute(sent, (run_id,))}
    for cut in range(EARLIEST_CUT, len(stamps) - 200):
        last = stamps[cut - 1]
        held = sum(Decimal(q) * (1 if side == "buy" else -1) for ts, side, q in fills if ts <= last)
        if not held and last not in ordered:
            return cut
    raise AssertionError("the uninterrupted run is never flat: no place to cut")


async def test_decisions_after_a_restart_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    bars = load_bundled()[:BARS]
    data = write_bars(tmp_path / "bars.csv", bars)
    config = _config()

    whole = await BacktestRunner.open(config, data=data, db_path=tmp_path / "whole.db")
    await whole.run(install_signals=False)
    reference_run = whole.daemon.store.run_id
    cut = _flat_cut(tmp_path / "whole.db", reference_run, [b.ts for b in bars])
    reference = [row for row in _decisions(tmp_path / "whole.db", reference_run) if row[1] >= bars[cut].ts]

    db = tmp_path / "restart.db"
    head = write_bars(tmp_path / "head.csv", bars[:cut])
    first = await BacktestRunner.open(config, data=head, db_path=db)
    await first.run(install_signals=False)
    first.daemon.broker.save_state(tmp_path / "sim.json")
    assert isinstance(first.daemon.strategy, RecurrentStrategy)
    # The daemon's shutdown closed its store; saving is what the shutdown glue will do before that.
    store = await Store.open(db, instance_id="bt", batched=True)
    try:
        assert await save_to_store(first.daemon.strategy, store) == 1
    finally:
        await store.close()

    second = await BacktestRunner.open(config, data=data, db_path=db)
    # The simulated account carries over (cash, order and fill numbering) and its feed moves on to
    # bar `cut`: the bars it has passed are the history the strategy is rebuilt from.
    second.daemon.broker.load_state(tmp_path / "sim.json")
    second.daemon.portfolio.set_cash((await second.daemon.broker.account()).cash)
    assert isinstance(second.daemon.strategy, RecurrentStrategy)
    daemon = second.daemon
    outcome = await restore_from_store(daemon.strategy, daemon.store, daemon.broker, now_ts=bars[cut].ts)
    assert outcome == {"EURUSD": "exact"}
    await second.run(install_signals=False)
    resumed = _decisions(db, second.daemon.store.run_id)

    assert len(resumed) == len(bars) - cut
    assert resumed == reference


async def test_without_the_saved_state_decisions_differ(tmp_path: Path) -> None:
    """The control: a restart that drops the memory and re-warms from history is not the same run,
    which is why states are saved at all."""
    bars = load_bundled()[:1600]
    data = write_bars(tmp_path / "bars.csv", bars)
    config = _config()
    whole = await BacktestRunner.open(config, data=data, db_path=tmp_path / "whole.db")
    await whole.run(install_signals=False)
    cut = 1200
    reference = [r for r in _decisions(tmp_path / "whole.db", whole.daemon.store.run_id) if r[1] >= bars[cut].ts]

    second = await BacktestRunner.open(config, data=data, db_path=tmp_path / "fresh.db")
    second.daemon.broker.feed.seek(cut)  # the simulator's own feed: start at bar `cut`
    assert isinstance(second.daemon.strategy, RecurrentStrategy)
    outcome = await restore_from_store(
        second.daemon.strategy, second.daemon.store, second.daemon.broker, now_ts=bars[cut].ts, symbols=["EURUSD"]
    )
    assert outcome == {"EURUSD": "rewarmed"}
    await second.run(install_signals=False)
    resumed = _decisions(tmp_path / "fresh.db", second.daemon.store.run_id)
    assert len(resumed) == len(reference)  # re-warmed: decides from the first bar, no warm-up wait
    assert [r[4] for r in resumed] != [r[4] for r in reference]
