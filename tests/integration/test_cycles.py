"""`tradectl train --cycles`: a small model trained in cycles on the real bundled bars.

Budgets are tiny (256 timesteps per cycle, a 16-unit LSTM, 900 bars): what is
tested is the cycle machinery — continuing timesteps, the hold-rate schedule,
checkpoints with their SHA-256, an evaluation and a ``cycle_metrics`` row per
cycle, early stopping, and resuming after a SIGKILL — not what the policy
learns. Each cycle's evaluation is the real ``tradectl validate`` run through
the backtest pipeline on the held-out quarter of the slice.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.store.repository import CYCLE_COLUMNS
from strategies.model_file import file_sha256, read_metadata
from tests.bundled import bundled_slice

SLICE_BARS = 900
TINY = (
    "--n-envs", "2", "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1", "--episode-bars", "48",
    "--lstm-size", "16", "--eval-fraction", "0.25", "--no-progress",
)  # fmt: skip


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundled_slice(tmp_path_factory.mktemp("data") / "eurusd_slice.csv", SLICE_BARS)


def _argv(tmp: Path, data: Path, *extra: str) -> list[str]:
    return [
        "train", "--data", str(data), "--out", str(tmp / "model.zip"), "--run-dir", str(tmp / "run"),
        "--db", str(tmp / "train.db"), "--steps-per-cycle", "256", *TINY, *extra,
    ]  # fmt: skip


def _rows(db: Path) -> list[dict[str, object]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute(f"SELECT {', '.join(CYCLE_COLUMNS)} FROM cycle_metrics ORDER BY cycle").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []
    return [dict(zip(CYCLE_COLUMNS, r, strict=True)) for r in rows]


def _run_summary(db: Path) -> dict[str, object]:
    with sqlite3.connect(db) as conn:
        ((mode, summary),) = conn.execute("SELECT mode, summary FROM runs").fetchall()
    assert mode == "train"
    return json.loads(summary)


def test_early_stop_checkpoints_and_rows(tmp_path: Path, bars_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No cycle can gain 100,000 %: cycle 1 is the baseline, cycle 2 stalls, and with patience 1 and a
    # minimum of 2 cycles the run must stop after exactly 2 of the 4 scheduled cycles.
    argv = _argv(tmp_path, bars_csv, "--cycles", "4", "--hold-schedule", "0.75:0.25", "--min-cycles", "2",
                 "--patience", "1", "--min-improvement", "1000")  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "stopped early after cycle 2" in out

    rows = _rows(tmp_path / "train.db")
    assert [r["cycle"] for r in rows] == [1, 2]
    assert [r["timesteps"] for r in rows] == [256, 512]  # continued, not reset
    assert [r["hold_rate_target"] for r in rows] == [0.75, pytest.approx(0.583333)]
    assert rows[0]["improvement"] is None and rows[1]["improvement"] < 1000
    for row in rows:
        checkpoint = Path(str(row["checkpoint"]))
        assert file_sha256(checkpoint) == row["model_sha256"] == read_metadata(checkpoint)["sha256"]
        assert read_metadata(checkpoint)["training_metrics"]["cycle"] == row["cycle"]
        assert 0 < float(row["parameter_drift"]) < 1  # the weights moved, a little
        assert row["gates_total"] == 9 and 0 <= int(row["gates_passed"]) <= 9
        assert row["hold_rate"] is not None and row["selection_metric"] == "rolling-sharpe"
    assert "episodes" in str(rows[0]["gates_failed"])  # 225 held-out bars are far from 100 day-long windows

    summary = _run_summary(tmp_path / "train.db")
    assert summary["stop_reason"] == "no_improvement" and summary["cycles"] == 2
    final = read_metadata(tmp_path / "model.zip")
    assert final["training_metrics"]["selected_cycle"] == summary["best_cycle"]
    assert [c["cycle"] for c in final["training_metrics"]["cycles"]] == [1, 2]


def test_resumes_after_a_kill_mid_cycle(tmp_path: Path, bars_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _argv(tmp_path, bars_csv, "--cycles", "3", "--min-improvement", "0", "--patience", "10")
    db = tmp_path / "train.db"
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _rows(db) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # cycle 2 has just begun: it needs ~1 s of training before its row
    finally:
        proc.kill()
        proc.wait()
    before = _rows(db)
    assert [r["cycle"] for r in before] == [1], "the kill must land inside cycle 2"
    assert not (tmp_path / "model.zip").exists()

    assert main(argv) == 0  # resumes automatically from the run directory
    err = capsys.readouterr().err
    assert "resuming training run" in err
    after = _rows(db)
    assert [r["cycle"] for r in after] == [1, 2, 3]
    assert after[0] == before[0]  # cycle 1 was not done again
    assert [r["timesteps"] for r in after] == [256, 512, 768]  # cycle 2 restarted from cycle 1's checkpoint
    for row in after:
        assert file_sha256(Path(str(row["checkpoint"]))) == row["model_sha256"]
    assert sorted(p.name for p in (tmp_path / "run").glob("cycle-*.zip")) == [
        "cycle-001.zip", "cycle-002.zip", "cycle-003.zip"
    ]
    summary = _run_summary(db)
    assert summary["stop_reason"] == "completed" and summary["resumed_from"] == 1

    # Run again: everything is recorded, nothing is trained twice.
    assert main(argv) == 0
    assert _rows(db) == after


def test_bad_cycle_options_are_one_line_errors(
    tmp_path: Path, bars_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(tmp_path, bars_csv, "--cycles", "3", "--hold-schedule", "0.9,0.5")) == 1
    assert "gives 2 targets for 3 cycles" in capsys.readouterr().err
    assert main(_argv(tmp_path, bars_csv, "--cycles", "2", "--hold-schedule", "1.5:0")) == 1
    assert "must lie in [0, 1]" in capsys.readouterr().err
    assert main(_argv(tmp_path, bars_csv, "--cycles", "2", "--resume")) == 1
    assert "holds no training run" in capsys.readouterr().err
    assert main(_argv(tmp_path, bars_csv, "--cycles", "0")) == 1
    assert "--cycles" in capsys.readouterr().err


def test_a_run_is_not_resumed_under_other_settings(
    tmp_path: Path, bars_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(tmp_path, bars_csv, "--cycles", "1")) == 0
    capsys.readouterr()
    assert main(_argv(tmp_path, bars_csv, "--cycles", "2")) == 1
    err = capsys.readouterr().err
    assert "holds a training run with other settings (cycles differ)" in err
    assert len(_rows(tmp_path / "train.db")) == 1
