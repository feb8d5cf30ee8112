"""The whole pipeline in backtest mode: determinism, P&L from fills, bad bars never traded."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import TradectlConfig
from daemon.runners import BacktestRunner

D = Decimal


def _config(tmp_path: Path, **overrides: object) -> TradectlConfig:
    doc: dict[str, object] = {"store": {"path": str(tmp_path / "unused.db")}, "api": {"enabled": False}}
    doc.update(overrides)
    return TradectlConfig(**doc)  # type: ignore[arg-type]


async def _backtest(config: TradectlConfig, db: Path, data: Path | None = None) -> BacktestRunner:
    daemon = await BacktestRunner.open(config, db_path=db, data=data)
    await daemon.run(install_signals=False)
    return daemon


@pytest.mark.parametrize("strategy", ["sma_cross", "recurrent"])
async def test_two_backtests_write_byte_identical_order_journals(tmp_path: Path, strategy: str) -> None:
    config = _config(tmp_path, strategy={"kind": strategy})
    journals = []
    for name in ("a.db", "b.db"):
        await _backtest(config, tmp_path / name)
        from daemon.store import Store

        store = await Store.open(tmp_path / name)
        journals.append(await store.order_journal_text())
        await store.close()
    assert journals[0].count("\norders\t") > 50, f"{strategy} should trade on the bundled year"
    assert journals[0] == journals[1]


async def test_pnl_equals_the_sum_over_stored_fills(tmp_path: Path) -> None:
    db = tmp_path / "bt.db"
    daemon = await _backtest(_config(tmp_path, strategy={"kind": "sma_cross"}), db)
    book = daemon.daemon.portfolio
    with sqlite3.connect(db) as conn:
        fills = conn.execute("SELECT side, quantity, price, fee FROM fills").fetchall()
        trades = conn.execute("SELECT pnl FROM trades").fetchall()
    assert fills
    cash_flow = sum(
        ((-1 if side == "buy" else 1) * D(q) * D(p) - D(f) for side, q, p, f in fills),
        D(0),
    )
    fees = sum((D(f) for *_, f in fills), D(0))
    # cash moved by exactly the fills' notional and fees
    assert book.cash == book.starting_cash + cash_flow
    assert book.fees == fees
    # what is still open is valued at its fills; what is closed is realized exactly
    open_cost = sum((p.quantity * p.average_price for p in book.positions()), D(0))
    assert book.realized - book.fees == cash_flow + open_cost
    # round-trip P&L adds up to the realized P&L when the book is flat
    if not book.positions():
        assert sum((D(t[0]) for t in trades), D(0)) == book.realized - book.fees


async def test_bad_bars_are_rejected_counted_and_never_traded(tmp_path: Path) -> None:
    rows = ["ts,open,high,low,close,volume"]
    price = 1.1000
    for i in range(80):
        ts = f"2024-01-0{1 + i // 24}T{i % 24:02d}:00:00Z" if i < 216 else ""
        price += 0.0004 if (i // 10) % 2 == 0 else -0.0004
        rows.append(f"{ts},{price:.5f},{price + 0.0005:.5f},{price - 0.0005:.5f},{price:.5f},100")
    bad = [
        "2024-01-04T08:00:00Z,nan,1.2,1.0,1.1,10",  # not finite
        "2024-01-04T09:00:00Z,1.1,1.0,1.2,1.1,10",  # high below low
        "2024-01-04T10:00:00Z,1.3,1.2,1.0,1.1,10",  # open outside range
        "2024-01-04T11:00:00Z,1.1,1.2,1.0,1.1,-5",  # negative volume
        "2024-01-04T12:00:00Z,-1,1.2,-2,1.1,10",  # non-positive
        "2024-01-01T05:00:00Z,1.1,1.2,1.0,1.1,10",  # out of order
    ]
    path = tmp_path / "bars.csv"
    path.write_text("\n".join(rows[:60] + bad + rows[60:]) + "\n")
    db = tmp_path / "bt.db"
    strategy = {"kind": "sma_cross", "sma_cross": {"fast": 3, "slow": 8}}
    config = _config(tmp_path, strategy=strategy, data={"symbol": "TEST"})
    daemon = await _backtest(config, db, data=path)
    assert daemon.daemon.pipeline.counts.rejected_bars == len(bad)
    with sqlite3.connect(db) as conn:
        reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM bar_rejections"))
        # a row may stand for a run of identical decisions on consecutive accepted bars: ts .. last_ts
        decided = conn.execute("SELECT ts, COALESCE(last_ts, ts), bars FROM decisions").fetchall()
        rejected = {ts for (ts,) in conn.execute("SELECT ts FROM bar_rejections WHERE ts IS NOT NULL")}
    assert reasons == sorted(
        ["not_finite", "high_below_low", "open_outside_range", "negative_volume", "non_positive_price", "out_of_order"]
    )
    # no decision was made at a rejected bar's timestamp (the out-of-order one repeats an earlier good ts)
    good_rejects = rejected - {1704085200}
    assert good_rejects
    assert not [(first, last) for first, last, _ in decided for ts in good_rejects if first <= ts <= last]
    assert sum(bars for _, _, bars in decided) == daemon.daemon.pipeline.counts.decisions


def test_backtest_command_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cli.db"
    assert main(["backtest", "--db", str(db), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for label in ("round-trip trades", "return", "max drawdown", "Sharpe", "win rate", "fees paid"):
        assert label in out
    assert db.exists()
