"""Model registry and the drawdown halt tier's switch to the gold model."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from brokers.errors import ModelError
from daemon.cli import main
from daemon.config import TradectlConfig
from daemon.models import gold_model, list_models, register_model
from daemon.runners import BacktestRunner
from daemon.store import Store
from risk.governor import TradingState
from strategies.recurrent import RecurrentStrategy, default_model_path


def _copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "gold.zip"
    shutil.copy(default_model_path(), target)
    shutil.copy(str(default_model_path()) + ".meta.json", str(target) + ".meta.json")
    return target


async def test_register_refuses_a_tampered_file_and_keeps_one_gold(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "r.db")
    model = _copy_model(tmp_path)
    assert await gold_model(store) is None
    first = await register_model(store, model, gold=True)
    assert (await gold_model(store)) == (first["sha256"], model.resolve())
    tampered = tmp_path / "bad.zip"
    tampered.write_bytes(model.read_bytes()[:-10] + b"0123456789")
    shutil.copy(str(model) + ".meta.json", str(tampered) + ".meta.json")
    with pytest.raises(ModelError, match="does not match its metadata"):
        await register_model(store, tampered, gold=True)
    assert [m["gold"] for m in await list_models(store)] == [True]
    await store.close()


async def test_drawdown_halt_flattens_halts_and_switches_to_the_gold_model(tmp_path: Path) -> None:
    db = tmp_path / "bt.db"
    store = await Store.open(db, instance_id="bt")
    gold = await register_model(store, _copy_model(tmp_path), gold=True)
    await store.close()
    config = TradectlConfig(
        api={"enabled": False},
        strategy={"kind": "sma_cross"},
        risk={
            "drawdown": {"warn": 0.0005, "halve": 0.0006, "reducing": 0.0008, "halt": 0.0008},
            "daily_loss": {"limit": 0.5},
            "loss_streak": {"enabled": False},
        },
    )
    daemon = await BacktestRunner.open(config, db_path=db)
    assert daemon.daemon.strategy.name == "sma_cross"
    published: list[str] = []
    daemon.daemon.events.subscribe(lambda event: published.append(event.kind))
    await daemon.run(install_signals=False)
    assert "model_rollback" in published, "the operator's channel hears of the switch"
    assert daemon.daemon.governor.state is TradingState.HALTED
    assert isinstance(daemon.daemon.strategy, RecurrentStrategy)
    assert daemon.daemon.strategy.model_sha256 == gold["sha256"]
    assert daemon.daemon.portfolio.positions() == [], "the halt tier flattens"
    with sqlite3.connect(db) as conn:
        reasons = {r for (r,) in conn.execute("SELECT reason FROM risk_events")}
    assert {"drawdown_halt", "rolled_back_to_gold"} <= reasons


async def test_without_a_gold_model_the_halt_is_recorded(tmp_path: Path) -> None:
    config = TradectlConfig(api={"enabled": False}, strategy={"kind": "sma_cross"})
    daemon = await BacktestRunner.open(config, db_path=tmp_path / "x.db")
    assert await daemon.daemon.rollback_to_gold(0) is False
    await daemon.daemon.store.flush()
    rows = await daemon.daemon.store.query("SELECT reason FROM risk_events")
    assert ("no_gold_model",) in rows
    await daemon.daemon.store.close()


def test_models_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cli.db"
    model = _copy_model(tmp_path)
    assert main(["models", "register", str(model), "--gold", "--db", str(db)]) == 0
    assert "as gold" in capsys.readouterr().out
    assert main(["models", "list", "--db", str(db)]) == 0
    assert str(model.resolve()) in capsys.readouterr().out
