"""`tradectl walkforward` on the real bundled bars with tiny training budgets.

The figures are checked against the runs' own stores, read here with plain
sqlite3: each fold's out-of-sample return from its equity snapshots, the
stitched curve as the folds' P&L chained, walk-forward efficiency from the
folds' returns and spans by hand. The confidence layer is off so that the
barely trained models trade at all (their probabilities sit near 1/4).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from brokers.history import load_bars
from daemon.cli import main
from strategies.evaluation.stats import YEAR_SECONDS
from strategies.model_file import read_metadata
from tests.bundled import bundled_slice

BUDGET = (
    "--timesteps", "256", "--n-envs", "2", "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1",
    "--episode-bars", "48", "--lstm-size", "16",
)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wf")
    csv = bundled_slice(root / "eurusd.csv", 1800)
    config = root / "noconf.yaml"
    config.write_text("risk:\n  confidence:\n    enabled: false\n")
    return csv, config


def _equity(db: Path, since_ts: int = 0) -> list[float]:
    with sqlite3.connect(db) as conn:
        ((run_id,),) = conn.execute("SELECT MAX(id) FROM runs").fetchall()
        sql = "SELECT equity FROM equity_snapshots WHERE run_id = ? AND ts >= ? ORDER BY rowid"
        return [e for (e,) in conn.execute(sql, (run_id, since_ts))]


def _ts(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def test_anchored_folds_stitch_and_efficiency(
    tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    csv, config = data
    argv = ["walkforward", "--config", str(config), "--data", str(csv), "--mode", "anchored", "--train-bars", "700",
            "--test-bars", "300", "--max-folds", "3", "--workdir", str(tmp_path), "--json", *BUDGET]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    bars = load_bars(csv, "EURUSD")
    folds = doc["folds"]
    assert [(f["fold"]["train_start"], f["fold"]["train_end"], f["fold"]["test_end"]) for f in folds] == [
        (0, 700, 1000), (0, 1000, 1300), (0, 1300, 1600)
    ]
    level, pnl_total, traded = 100_000.0, 0.0, 0
    for k, fold in enumerate(folds, start=1):
        meta = read_metadata(Path(fold["model"]))
        # the fold's model trained on its training bars only: the test window is unseen
        assert _ts(meta["train_end"]) == bars[fold["fold"]["train_end"] - 1].ts
        assert meta["sha256"] == fold["model_sha256"]
        # the run's snapshots from its first decision, on the test window's first bar
        tail = _equity(tmp_path / f"fold-{k:02d}" / "recurrent.db", bars[fold["fold"]["train_end"]].ts)
        assert len(tail) == 300
        assert fold["out_of_sample_return_pct"] == pytest.approx((tail[-1] / tail[0] - 1) * 100, abs=1e-9)
        in_sample = _equity(tmp_path / f"fold-{k:02d}" / "in_sample.db")
        assert fold["in_sample_return_pct"] == pytest.approx((in_sample[-1] / in_sample[0] - 1) * 100, abs=1e-9)
        pnl_total += tail[-1] - tail[0]
        traded += fold["out_of_sample"]["orders"]
    assert traded > 0, "with the confidence layer off the models trade"
    stitched = doc["stitched_out_of_sample"]
    assert stitched["total_return_pct"] == pytest.approx((level + pnl_total) / level * 100 - 100, abs=1e-9)
    assert stitched["points"] == 1 + 3 * 299

    is_years = sum(f["in_sample_years"] for f in folds)
    oos_years = sum(f["out_of_sample_years"] for f in folds)
    is_rate = sum(f["in_sample_return_pct"] for f in folds) / is_years
    expected = None if is_rate <= 0 else sum(f["out_of_sample_return_pct"] for f in folds) / oos_years / is_rate
    assert doc["efficiency"] == (None if expected is None else pytest.approx(expected))
    assert folds[0]["out_of_sample_years"] == pytest.approx((bars[999].ts - bars[700].ts) / YEAR_SECONDS)


def test_rolling_table(tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    csv, config = data
    argv = ["walkforward", "--config", str(config), "--data", str(csv), "--train-bars", "700", "--test-bars", "300",
            "--max-folds", "2", "--workdir", str(tmp_path), *BUDGET]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "     0..699  2017-02-10..2017-02-28" in out
    assert "   300..999  2017-02-28..2017-03-17" in out  # the training window slid by one test window
    assert "stitched out-of-sample equity (2 rolling folds" in out
    assert "walk-forward efficiency" in out


def test_too_few_bars_and_bad_options_are_one_line_errors(
    tmp_path: Path, data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    csv, _ = data
    base = ["walkforward", "--data", str(csv), "--workdir", str(tmp_path), *BUDGET]
    assert main([*base, "--train-bars", "1700", "--test-bars", "300"]) == 1
    assert "cannot hold one fold of 1700 training + 300 test bars" in capsys.readouterr().err
    assert main([*base, "--cycles", "2"]) == 1
    assert "--cycles is for tradectl train" in capsys.readouterr().err
    assert main([*base, "--max-folds", "0"]) == 1
    assert "--max-folds" in capsys.readouterr().err
