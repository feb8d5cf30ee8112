"""`tradectl report` on a real backtest of the bundled data: the charts exist and show something, the page's
numbers are the store's, Chromium renders the page (screenshot kept in var/report.png), and bad input is one line."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import sqlite3
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brokers.history import load_bundled
from daemon.cli import main
from daemon.config import TradectlConfig
from daemon.runners import BacktestRunner
from strategies.model_file import read_metadata
from strategies.recurrent import default_model_path
from tests.e2e.chromium import MISSING_CHROMIUM, find_chromium, open_page

SCREENSHOT = Path(__file__).resolve().parents[2] / "var" / "report.png"
CHARTS = ("equity", "action-trace", "hold-rate", "regime", "monthly", "monte-carlo")


@pytest.fixture(scope="module")
def backtest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled recurrent model through BacktestRunner on the first 3,000 real bars (about 3 s)."""
    db = tmp_path_factory.mktemp("report") / "bt.db"

    async def _run() -> None:
        runner = await BacktestRunner.open(TradectlConfig(), db_path=db, bars=load_bundled()[:3000])
        await runner.run(install_signals=False)

    asyncio.run(_run())
    return db


@pytest.fixture(scope="module")
def page(backtest: Path) -> tuple[Path, str]:
    out = backtest.parent / "report.html"
    assert main(["report", "--db", str(backtest), "--out", str(out)]) == 0
    return out, out.read_text(encoding="utf-8")


def _fields(text: str, name: str) -> list[str]:
    return re.findall(rf'data-field="{name}"[^>]*>([^<]*)<', text)


def _images(text: str) -> dict[str, bytes]:
    return {name: base64.b64decode(data)
            for name, data in re.findall(r'<img id="chart-([\w-]+)"[^>]*src="data:image/png;base64,([^"]+)"', text)}


def _sql(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_every_chart_is_a_png_that_shows_something(page: tuple[Path, str]) -> None:
    _, text = page
    images = _images(text)
    assert set(CHARTS) <= set(images), sorted(images)
    for name, png in images.items():
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        image = Image.open(io.BytesIO(png))
        width, height = image.size
        assert width >= 500 and height >= 200, (name, image.size)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert pixels.std() > 5, f"{name} looks blank (pixel std {pixels.std():.2f})"
        assert (pixels < 128).mean() > 0.003, f"{name} has almost no ink"  # lines, bars, markers, not just axes
    assert not re.search(r'src="data:image/png;base64,"', text)  # no empty image
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained


def test_the_numbers_are_the_stores(page: tuple[Path, str], backtest: Path) -> None:
    _, text = page
    equity = _sql(backtest, "SELECT equity FROM equity_snapshots ORDER BY rowid")
    first, last = equity[0][0], equity[-1][0]
    assert _fields(text, "final_equity") == [f"{last:.2f}"]
    assert _fields(text, "starting_equity") == [f"{first:.2f}"]
    assert _fields(text, "return_pct") == [f"{(last / first - 1) * 100:+.4f}%"]
    trades = _sql(backtest, "SELECT pnl, fees, entry_price, exit_price FROM trades ORDER BY id")
    assert len(trades) > 10  # the bundled model trades this span: the table is not trivially empty
    assert _fields(text, "trade_count") == [str(len(trades))]
    assert [Decimal(p) for p in _fields(text, "trade_pnl")] == [Decimal(p) for p, *_ in trades]
    assert [Decimal(p) for p in _fields(text, "entry_price")] == [Decimal(t[2]) for t in trades]
    assert Decimal(_fields(text, "realized_pnl")[0]) == sum(Decimal(p) for p, *_ in trades)
    assert Decimal(_fields(text, "fees")[0]) == sum(Decimal(t[1]) for t in trades)
    (decisions,) = _sql(backtest, "SELECT SUM(bars) FROM decisions")[0]
    assert _fields(text, "decisions") == [str(decisions)]
    # the run's summary (booked by the pipeline) agrees with the equity the page shows
    summary = _sql(backtest, "SELECT summary FROM runs WHERE id = 1")[0][0]
    assert f'"final_equity": {round(last, 2)}' in summary


def test_the_page_judges_the_run_by_the_gates_and_says_what_was_not_recorded(page: tuple[Path, str]) -> None:
    _, text = page
    gates = _fields(text, "gate")
    assert gates == ["episodes", "hold_rate", "trades_per_day", "max_drawdown", "sharpe", "action_share",
                     "invalid_actions", "beats_sma", "beats_buy_and_hold"]
    results = _fields(text, "gate_result")
    assert set(results) <= {"PASS", "FAIL", "fail (advisory)"} and len(results) == 9
    # both baselines ran on the same bars: their returns are figures, not n/a
    assert "SMA-cross baseline n/a" not in text and "buy-and-hold n/a" not in text
    assert re.search(r"(REJECTED|PASSED): ", text)
    assert "controller bonus: not recorded" in text
    sha = read_metadata(default_model_path())["sha256"]
    assert f"model {sha[:16]}" in text
    assert _fields(text, "car25") and _fields(text, "mc_runs")[0].startswith("5,000 of")


@pytest.mark.slow
async def test_chromium_renders_the_report(page: tuple[Path, str]) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip(MISSING_CHROMIUM)
    out, _ = page
    async with open_page(binary, width=1200, height=900) as browser:
        await browser.call("Page.navigate", url=out.resolve().as_uri())
        for _ in range(200):
            if await browser.evaluate("document.readyState === 'complete'"):
                break
            await asyncio.sleep(0.05)
        shown = await browser.evaluate(
            "[...document.images].map(i => [i.id, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert {s[0].removeprefix("chart-") for s in shown} >= set(CHARTS)
        assert all(done and w > 0 and h > 0 for _, done, w, h in shown), shown
        assert await browser.text("#performance-table [data-field=final_equity]")
        assert browser.errors == []
        await browser.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 50_000


def test_weekly_one_pager(backtest: Path, tmp_path: Path) -> None:
    out = tmp_path / "weekly.html"
    assert main(["report", "--weekly", "--db", str(backtest), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    for section in ("performance", "gates", "incidents", "risks"):
        assert f'<section id="{section}">' in text
    (end,) = _sql(backtest, "SELECT MAX(ts) FROM equity_snapshots")[0]
    since = end - 7 * 86_400
    (n,) = _sql(backtest, f"SELECT COUNT(*) FROM trades WHERE exit_ts BETWEEN {since} AND {end}")[0]
    assert _fields(text, "trade_count") == [str(n)]
    (denials,) = _sql(backtest, f"SELECT COUNT(*) FROM risk_events WHERE ts BETWEEN {since} AND {end}")[0]
    assert _fields(text, "incident_denials") == [str(denials)]
    (week_last,) = _sql(backtest, f"SELECT equity FROM equity_snapshots WHERE ts = {end}")[0]
    assert _fields(text, "final_equity") == [f"{week_last:.2f}"]
    assert _fields(text, "risk_state") and _fields(text, "risk_positions")
    assert "advisory here" in text


def test_model_report_validates_a_model_with_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--model SHA: registered, never run here → validated through BacktestRunner, its held-out run reported;
    the second report finds that run instead of validating again."""
    import daemon.reporting.command as command

    monkeypatch.setattr(command, "REPORTS_DIR", tmp_path / "reports")
    db = tmp_path / "registry.db"
    assert main(["models", "register", str(default_model_path()), "--db", str(db)]) == 0
    sha = read_metadata(default_model_path())["sha256"]
    out = tmp_path / "model.html"
    assert main(["report", "--model", sha[:12], "--db", str(db), "--out", str(out)]) == 0
    kept = tmp_path / "reports" / f"model-{sha[:16]}" / "recurrent.db"
    assert kept.is_file()
    text = out.read_text(encoding="utf-8")
    (last,) = _sql(kept, "SELECT equity FROM equity_snapshots ORDER BY rowid DESC LIMIT 1")[0]
    assert _fields(text, "final_equity") == [f"{last:.2f}"]
    assert f"{kept}" in text
    before = kept.stat().st_mtime_ns
    assert main(["report", "--model", sha[:12], "--db", str(db), "--out", str(out)]) == 0
    assert kept.stat().st_mtime_ns == before  # found, not validated again


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--db", "{tmp}/missing.db"], "missing.db: no store there (pass --db FILE)"),
        (["--db", "{bt}", "--run", "99"], "no run 99"),
        (["--db", "{bt}", "--model", "abcdef12"], "no registered model 'abcdef12'"),
        (["--db", "{bt}", "--data", "{tmp}/nope.csv"], ""),
    ],
)
def test_bad_input_is_one_line(
    argv: list[str], message: str, backtest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(tmp=tmp_path, bt=backtest) for a in argv]
    code = main(["report", *args, "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    if message:
        assert code == 1 and err.count("\n") == 1 and message in err, err
    else:  # bars not found: the page is written and says why there are no prices, no traceback
        assert code == 0 and "Traceback" not in err
        assert "prices not shown" in (tmp_path / "r.html").read_text(encoding="utf-8")
