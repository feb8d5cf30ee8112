"""`tradectl validate`: the bundled model is rejected with reasons; the runs are the backtest pipeline's; bad input
is a message, never a traceback."""

from __future__ import annotations

import json
import shutil
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest

from brokers.base import Bar
from brokers.errors import DataError, ModelError
from brokers.history import bundled_dataset_path, load_bundled
from daemon.cli import main
from daemon.config import TradectlConfig
from daemon.validate import EXIT_REJECTED, Validation, held_out_range, validate
from strategies.model_file import meta_path, read_metadata
from strategies.recurrent import default_model_path

MODEL = default_model_path()


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> Validation:
    return validate(TradectlConfig(), MODEL, workdir=tmp_path_factory.mktemp("validate"))


def test_the_bundled_model_loses_to_buy_and_hold_on_its_held_out_data(validation: Validation) -> None:
    meta = read_metadata(MODEL)
    assert validation.model_run.name == "recurrent"
    gates = {g.name: g for g in validation.gates}
    assert not gates["beats_buy_and_hold"].passed and gates["beats_buy_and_hold"].required
    assert validation.model_run.curve.total_return_pct < validation.buy_and_hold_run.curve.total_return_pct
    assert not validation.passed
    # judged only on bars after the training span the model records
    assert validation.first_ts > _epoch(meta["train_end"])
    assert validation.held_out_bars == sum(1 for b in load_bundled() if b.ts > _epoch(meta["train_end"]))


def test_all_three_decide_on_the_same_held_out_bars(validation: Validation) -> None:
    for run in (validation.model_run, validation.sma_run, validation.buy_and_hold_run):
        assert run.decisions == validation.held_out_bars, run.name
        assert run.curve.points == validation.held_out_bars, run.name
    assert validation.notes == []


def test_buy_and_hold_equals_a_hand_computation_on_the_same_bars(validation: Validation) -> None:
    """One BUY of the configured 10,000 units at the next open, through spread, slippage and commission."""
    bars = load_bundled()
    first = next(i for i, b in enumerate(bars) if b.ts == validation.first_ts)
    units, start = Decimal(10_000), Decimal(100_000)
    adverse = Decimal("0.5") / 10_000 + Decimal("0.5") / 10_000  # half the 1 bp spread + 0.5 bp slippage
    price = (Decimal(repr(bars[first + 1].open)) * (1 + adverse)).quantize(Decimal("0.00001"), ROUND_CEILING)
    fee = (units * price * Decimal("0.2") / 10_000).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    final = start - units * price - fee + units * Decimal(repr(bars[-1].close))
    expected = float((final / start - 1) * 100)
    assert validation.buy_and_hold_run.orders == 1
    assert validation.buy_and_hold_run.curve.total_return_pct == pytest.approx(expected, abs=1e-9)


def test_trade_statistics_and_monte_carlo_come_from_the_model_run(validation: Validation) -> None:
    run = validation.model_run
    assert run.trades.trades == len(run.trade_pnls) > 0
    assert validation.monte_carlo is not None
    assert validation.monte_carlo.trades_per_run == run.trades.trades
    assert validation.monte_carlo.runs == TradectlConfig().validation.monte_carlo_runs
    assert validation.monte_carlo.car25_pct <= validation.monte_carlo.car50_pct


def test_cli_prints_the_gate_table_and_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(MODEL)])
    out = capsys.readouterr().out
    assert code == EXIT_REJECTED
    row = next(line for line in out.splitlines() if line.startswith("beats_buy_and_hold"))
    assert "FAIL" in row and "buy-and-hold" in row and "after costs" in row
    assert "REJECTED:" in out and "beats_buy_and_hold" in out.splitlines()[-1]
    assert "SQN" in out and "CAR25" in out


def test_cli_json_and_advisory_gates_let_a_model_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "lenient.yaml"
    config.write_text(
        "validation:\n  advisory: [episodes, sharpe, beats_sma, beats_buy_and_hold, hold_rate, trades_per_day]\n"
    )
    code = main(["validate", str(MODEL), "--config", str(config), "--json"])
    doc = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert code == 0 and doc["passed"] is True
    assert {g["name"] for g in doc["gates"] if not g["passed"]} <= {"episodes", "sharpe", "beats_sma",
                                                                     "beats_buy_and_hold", "hold_rate",
                                                                     "trades_per_day"}
    assert set(doc["runs"]) == {"recurrent", "sma_cross", "buy_and_hold"}


# ---------------------------------------------------------------------- bad input
def _copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "model.zip"
    shutil.copy(MODEL, target)
    shutil.copy(meta_path(MODEL), meta_path(target))
    return target


def _fails_cleanly(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.startswith("tradectl validate: ")


def test_a_corrupt_model_file_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _copy_model(tmp_path)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    _fails_cleanly(capsys, ["validate", str(model)], "does not match its metadata")


def test_missing_model_or_metadata_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_cleanly(capsys, ["validate", str(tmp_path / "nope.zip")], "not found")
    model = _copy_model(tmp_path)
    meta_path(model).write_text("{not json")
    _fails_cleanly(capsys, ["validate", str(model)], "corrupt")


def test_a_model_without_a_training_span_cannot_be_validated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _copy_model(tmp_path)
    meta = json.loads(meta_path(model).read_text())
    del meta["train_end"]
    meta_path(model).write_text(json.dumps(meta))
    _fails_cleanly(capsys, ["validate", str(model)], "no training span")


def test_bad_data_files_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_cleanly(capsys, ["validate", str(MODEL), "--data", str(tmp_path / "missing.csv")], "bar file not found")
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("a,b\n1,2\n")
    _fails_cleanly(capsys, ["validate", str(MODEL), "--data", str(garbage)], "missing column")


def test_data_the_model_trained_on_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen = tmp_path / "seen.csv"
    lines = bundled_dataset_path().read_text().splitlines()
    seen.write_text("\n".join(lines[:3001]) + "\n")  # the first 3,000 real bars: inside the training span
    _fails_cleanly(capsys, ["validate", str(MODEL), "--data", str(seen)], "no held-out bars")


# ---------------------------------------------------------------------- held-out selection
def _bars(n: int) -> list[Bar]:
    return [Bar("X", 3600 * (i + 1), 1.0, 1.0, 1.0, 1.0) for i in range(n)]


def _iso(ts: int) -> str:
    from brokers.base import utc_datetime

    return utc_datetime(ts).isoformat()


def _epoch(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text).timestamp())


def test_held_out_is_after_the_training_span_with_room_for_warm_up() -> None:
    bars = _bars(100)
    meta = {"train_start": _iso(bars[0].ts), "train_end": _iso(bars[59].ts)}
    assert held_out_range(bars, meta, warmup=10) == (60, 99)
    assert held_out_range(bars, meta, warmup=80) == (79, 99)  # warm-up reaches into the training span


def test_held_out_before_the_training_span_when_nothing_follows_it() -> None:
    bars = _bars(100)
    meta = {"train_start": _iso(bars[50].ts), "train_end": _iso(bars[99].ts)}
    assert held_out_range(bars, meta, warmup=10) == (9, 49)
    with pytest.raises(DataError, match="no held-out bars"):
        held_out_range(bars, meta, warmup=60)
    with pytest.raises(ModelError, match="no training span"):
        held_out_range(bars, {"train_start": _iso(bars[0].ts)}, warmup=10)
