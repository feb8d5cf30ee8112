"""`tradectl tune`: a 2x2 grid of tiny cyclic trainings on a local Ray (real Ray, real training, real
validation of every cycle through the backtest pipeline); trials and cycles in the store, the best model
registered and not promoted; a missing Ray or a bad grid is one line."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from brokers.history import bundled_dataset_path
from daemon.cli import main
from daemon.tune import INSTALL_HINT
from strategies.model_file import file_sha256

SLICE_BARS = 900
TINY = {
    "cycles": 2, "steps-per-cycle": 256, "min-cycles": 2, "n-envs": 2, "n-steps": 64, "batch-size": 64,
    "n-epochs": 1, "episode-bars": 48, "lstm-size": 16, "eval-fraction": 0.25,
}  # fmt: skip


def _grid(tmp_path: Path, grid: dict[str, object], train: dict[str, object] | None = None) -> Path:
    data = tmp_path / "eurusd_slice.csv"
    if not data.exists():
        lines = bundled_dataset_path().read_text().splitlines(keepends=True)
        data.write_text("".join(lines[: SLICE_BARS + 1]))
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps({"grid": grid, "train": {**TINY, "data": str(data), **(train or {})}}))  # JSON is YAML
    return path


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
def test_a_2x2_grid_on_a_local_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = _grid(tmp_path, {"learning-rate": [0.0003, 0.001], "ent-coef": [0.0, 0.01]})
    db = tmp_path / "tune.db"
    argv = ["tune", "--grid", str(grid), "--db", str(db), "--out-dir", str(tmp_path / "out"), "--num-cpus", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out

    table = [line for line in out.splitlines() if line[:1].isdigit()]
    assert len(table) == 4, out
    assert "learning-rate=0.001, ent-coef=0.01" in out and "not promoted" in out

    trials = _rows(db, "SELECT trial, params, status, error, train_run_id, cycles, gates_passed, gates_total,"
                       " model_sha256, model_path, best FROM tune_trials ORDER BY trial")
    assert [t[0] for t in trials] == [0, 1, 2, 3]
    points = [json.loads(t[1]) for t in trials]
    assert sorted((p["learning-rate"], p["ent-coef"]) for p in points) == [
        (0.0003, 0.0), (0.0003, 0.01), (0.001, 0.0), (0.001, 0.01)]
    assert all(t[2] == "ok" and t[3] == "" for t in trials), trials
    assert all(t[7] == 9 for t in trials)  # every gate judged
    for trial in trials:  # each trial's cycles are a training run's cycle_metrics rows; its model is on disk
        cycles = _rows(db, f"SELECT cycle, model_sha256, checkpoint FROM cycle_metrics WHERE run_id = {trial[4]}")
        assert [c[0] for c in cycles] == list(range(1, trial[5] + 1)) and trial[5] >= 1
        assert file_sha256(Path(trial[9])) == trial[8]
        assert trial[8] in {c[1] for c in cycles}
    assert len({t[4] for t in trials}) == 4  # four distinct training runs

    best = [t for t in trials if t[10] == 1]
    assert len(best) == 1
    registry = _rows(db, "SELECT sha256, path, is_production FROM model_registry")
    assert registry == [(best[0][8], str(Path(best[0][9]).resolve()), 0)]  # registered, never promoted
    ranked = max(trials, key=lambda t: t[6])
    assert best[0][6] == ranked[6]  # no trial passed more gates than the registered one
    ((summary,),) = _rows(db, "SELECT summary FROM runs WHERE mode = 'tune'")
    assert json.loads(summary)["registered"] == best[0][8]


def test_without_ray_the_command_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as on a machine without the extra
    grid = _grid(tmp_path, {"learning-rate": [0.001]})
    assert main(["tune", "--grid", str(grid), "--db", str(tmp_path / "t.db")]) == 1
    err = capsys.readouterr().err
    assert err == f"tradectl tune: {INSTALL_HINT}\n"
    assert not (tmp_path / "t.db").exists()


@pytest.mark.parametrize(
    ("grid", "train", "message"),
    [
        ({"learning-rat": [0.001]}, None, "'learning-rat' is not a tradectl train option"),
        ({"learning-rate": 0.001}, None, "grid.learning-rate: expected a non-empty list of values"),
        ({"learning-rate": ["fast"]}, None, "argument --learning-rate: invalid float value: 'fast'"),
        ({"lstm-size": [16]}, {"lstm-size": 32}, "['lstm-size'] both in grid and train"),
        ({"critic-lstm": ["yes"]}, None, "critic-lstm: 'yes': this switch takes true or false"),
    ],
)
def test_a_bad_grid_is_one_line(
    grid: dict[str, object], train: dict[str, object] | None, message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _grid(tmp_path, grid, train)
    assert main(["tune", "--grid", str(path), "--db", str(tmp_path / "t.db")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(path) in err, err
