"""`tradectl train` end to end on a slice of the bundled bars: a loadable model with complete metadata.

The run is tiny (a few hundred timesteps) because what is tested is the
plumbing — data, environment, seed, checkpoints, evaluation, metadata — not
what the policy learns.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from daemon.cli import main
from strategies.base import ACTION_MAP
from strategies.features import FEATURE_NAMES, feature_hash
from strategies.model_file import METADATA_KEYS, meta_path, read_metadata
from strategies.recurrent import RecurrentStrategy
from tests.bundled import bundled_slice

SLICE_BARS = 900


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first bars of the real dataset, byte for byte."""
    return bundled_slice(tmp_path_factory.mktemp("data") / "eurusd_slice.csv", SLICE_BARS)


def _train(tmp: Path, data: Path, name: str, *extra: str) -> Path:
    out = tmp / name / "model.zip"
    argv = [
        "train", "--data", str(data), "--out", str(out), "--timesteps", "256", "--n-envs", "2",
        "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1", "--episode-bars", "96",
        "--lstm-size", "16", "--checkpoint-dir", str(tmp / name / "ck"), "--no-progress", *extra,
    ]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, bars_csv: Path) -> Path:
    return _train(tmp_path_factory.mktemp("train"), bars_csv, "a", "--checkpoint-every", "128")


def test_writes_a_model_the_live_strategy_loads(trained: Path) -> None:
    strategy = RecurrentStrategy(trained)
    assert strategy.runner.hidden_size == 16
    assert strategy.describe()["model_sha256"] == hashlib.sha256(trained.read_bytes()).hexdigest()


def test_metadata_is_complete(trained: Path, bars_csv: Path) -> None:
    meta = read_metadata(trained)
    missing = [k for k in METADATA_KEYS if meta.get(k) is None]
    assert missing == []
    assert meta["feature_hash"] == feature_hash()
    assert meta["feature_names"] == FEATURE_NAMES
    assert meta["feature_schema_version"] >= 1
    assert meta["action_map"] == ACTION_MAP
    assert meta["obs_dim"] == len(FEATURE_NAMES)
    assert meta["lstm_hidden_size"] == 16 and meta["n_lstm_layers"] == 1
    assert meta["data_file_sha256"] == hashlib.sha256(bars_csv.read_bytes()).hexdigest()
    assert (meta["data_start"], meta["data_bars"]) == ("2017-01-01T23:00:00Z", SLICE_BARS)
    assert meta["train_start"] == meta["data_start"] and meta["train_end"] < meta["eval_start"]
    assert meta["eval_end"] == meta["data_end"]
    assert meta["seed"] == 7
    assert "--seed 7" in meta["command"] and "--timesteps 256" in meta["command"]
    config = meta["config"]
    assert config["training"]["ppo"]["n_steps"] == 64
    assert config["env"]["cost_model"]["spread_bps"] == "1.0"  # the configured sim-broker costs
    assert config["tradectl"]["broker"]["sim"]["costs"]["spread_bps"] == "1.0"
    metrics = meta["training_metrics"]
    assert metrics["timesteps"] >= 256
    evaluation = metrics["eval"]
    # One decision per held-out bar but the last (its action would fill on a bar that is not there).
    assert evaluation["bars"] == int(SLICE_BARS * 0.2) - 1
    assert evaluation["start"] == meta["eval_start"]
    for key in ("return_pct", "orders", "round_trips", "hold_rate", "max_drawdown_pct", "buy_and_hold_pct"):
        assert key in evaluation
    assert 0.0 <= evaluation["hold_rate"] <= 1.0
    json.dumps(meta, default=list)


def test_checkpoints_are_loadable_models(trained: Path) -> None:
    checkpoints = sorted((trained.parent / "ck").glob("model-*.zip"))
    assert [p.name for p in checkpoints] == ["model-128.zip", "model-256.zip"]
    assert read_metadata(checkpoints[0])["training_metrics"] == {"timesteps": 128, "checkpoint": True}
    RecurrentStrategy(checkpoints[0])


def test_same_seed_same_weights(tmp_path: Path, bars_csv: Path, trained: Path) -> None:
    again = _train(tmp_path, bars_csv, "b", "--checkpoint-every", "0")
    assert RecurrentStrategy(again).runner.fingerprint == RecurrentStrategy(trained).runner.fingerprint
    assert not (tmp_path / "b" / "ck").exists()


def test_bad_arguments_are_a_clear_error(tmp_path: Path, bars_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(bars_csv), "--timesteps", "0", "--out", str(tmp_path / "m.zip")]) == 1
    assert "--timesteps" in capsys.readouterr().err
    assert not meta_path(tmp_path / "m.zip").exists()


def test_too_little_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = bundled_slice(tmp_path / "short.csv", 299)
    assert main(["train", "--data", str(short), "--out", str(tmp_path / "m.zip"), "--no-progress"]) == 1
    assert "training bars" in capsys.readouterr().err
