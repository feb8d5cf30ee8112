"""Model file integrity and the refusal to load a model that does not fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from sb3_contrib import RecurrentPPO

from brokers.errors import ModelError
from strategies.base import ACTION_MAP
from strategies.features import DEFAULT_FEATURE_CONFIG, FEATURE_SCHEMA_VERSION, FeatureConfig, FeatureProcessor
from strategies.model_file import META_SCHEMA_VERSION, load_model, meta_path, read_metadata, save_model
from strategies.policy import LstmPolicyRunner
from strategies.recurrent import RecurrentStrategy, default_model_path

OBS_DIM = 12
FEATURE_HASH = "f" * 64


class _SpacesEnv(gym.Env):
    """Just enough of an environment to give RecurrentPPO its spaces."""

    def __init__(self, obs_dim: int = OBS_DIM, n_actions: int = 4) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Discrete(n_actions)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}


@pytest.fixture(scope="module")
def model() -> RecurrentPPO:
    return RecurrentPPO(
        "MlpLstmPolicy",
        _SpacesEnv(),
        n_steps=16,
        batch_size=16,
        policy_kwargs=dict(lstm_hidden_size=16, n_lstm_layers=2),
        seed=0,
        device="cpu",
    )


def _metadata(**overrides: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "feature_names": [f"f{i}" for i in range(OBS_DIM)],
        "feature_hash": FEATURE_HASH,
        "action_map": ACTION_MAP,
        "data_file_sha256": "a" * 64,
        "data_start": "2017-01-02T00:00:00Z",
        "data_end": "2017-12-29T00:00:00Z",
        "config": {"learning_rate": 3e-4, "n_steps": np.int64(16)},
        "seed": 7,
        "training_metrics": {"sharpe": np.float32(1.25)},
    }
    meta.update(overrides)
    return meta


@pytest.fixture
def saved(model: RecurrentPPO, tmp_path: Path) -> Path:
    path = tmp_path / "model.zip"
    save_model(model, path, _metadata())
    return path


def _load(path: Path, **overrides: Any) -> tuple[RecurrentPPO, dict[str, Any]]:
    kwargs: dict[str, Any] = dict(
        expected_obs_dim=OBS_DIM, expected_action_map=ACTION_MAP, expected_feature_hash=FEATURE_HASH
    )
    kwargs.update(overrides)
    return load_model(path, **kwargs)


def _rewrite_meta(path: Path, **changes: Any) -> None:
    mpath = meta_path(path)
    meta = json.loads(mpath.read_text())
    meta.update(changes)
    for key, value in changes.items():
        if value is None:
            del meta[key]
    mpath.write_text(json.dumps(meta))


def _replace_zip(path: Path, data: bytes) -> None:
    """Replace the zip AND re-hash it, so only the loader itself can catch the damage."""
    import hashlib

    path.write_bytes(data)
    _rewrite_meta(path, sha256=hashlib.sha256(data).hexdigest())


def test_roundtrip_keeps_weights_and_metadata(model: RecurrentPPO, saved: Path) -> None:
    loaded, meta = _load(saved)
    assert LstmPolicyRunner(loaded).fingerprint == LstmPolicyRunner(model).fingerprint
    assert meta["schema_version"] == META_SCHEMA_VERSION
    assert meta["obs_dim"] == OBS_DIM
    assert meta["action_map"] == ACTION_MAP
    assert meta["feature_names"] == tuple(f"f{i}" for i in range(OBS_DIM))
    assert (meta["lstm_hidden_size"], meta["n_lstm_layers"]) == (16, 2)
    assert meta["config"] == {"learning_rate": 3e-4, "n_steps": 16}
    assert meta["training_metrics"] == {"sharpe": 1.25}
    assert {"torch", "stable_baselines3", "sb3_contrib"} <= set(meta["versions"])
    assert meta["created_at"].startswith("20")
    assert len(meta["sha256"]) == 64
    assert read_metadata(saved) == meta


def test_observation_size_mismatch_is_named(saved: Path) -> None:
    with pytest.raises(ModelError, match="observation size: model 12, running configuration 14"):
        _load(saved, expected_obs_dim=14)


def test_action_map_mismatch_is_named(saved: Path) -> None:
    with pytest.raises(
        ModelError, match=r"action map: model \(HOLD, BUY, SELL, CLOSE\) vs running configuration \(HOLD, BUY\)"
    ):
        _load(saved, expected_action_map=("HOLD", "BUY"))


def test_feature_hash_mismatch_is_named(saved: Path) -> None:
    with pytest.raises(ModelError, match=f"feature hash: model {FEATURE_HASH}, running configuration abc"):
        _load(saved, expected_feature_hash="abc")


def test_all_differences_are_reported_together(saved: Path) -> None:
    with pytest.raises(ModelError) as err:
        _load(saved, expected_obs_dim=40, expected_feature_hash="abc", expected_action_map=("HOLD",))
    message = str(err.value)
    assert "observation size" in message
    assert "action map" in message
    assert "feature hash" in message


def test_changed_zip_fails_the_hash_check(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(
        ModelError, match=r"SHA-256 of model\.zip does not match its metadata \(file changed or corrupt\)"
    ):
        _load(saved)


def test_truncated_zip_fails_the_hash_check(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes()[:1000])
    with pytest.raises(ModelError, match="SHA-256"):
        _load(saved)


def test_truncated_zip_with_matching_hash_is_a_model_error(saved: Path) -> None:
    _replace_zip(saved, saved.read_bytes()[: len(saved.read_bytes()) // 2])
    with pytest.raises(ModelError, match="could not be loaded"):
        _load(saved)


def test_garbage_zip_with_matching_hash_is_a_model_error(saved: Path) -> None:
    _replace_zip(saved, b"this is not a zip file at all\n" * 100)
    with pytest.raises(ModelError, match="could not be loaded"):
        _load(saved)


def test_missing_metadata_is_refused(saved: Path) -> None:
    meta_path(saved).unlink()
    with pytest.raises(ModelError, match=r"model\.zip\.meta\.json is missing"):
        _load(saved)


def test_corrupt_metadata_is_refused(saved: Path) -> None:
    meta_path(saved).write_bytes(b'{"schema_version": 1, "sha256": "tru')
    with pytest.raises(ModelError, match="corrupt"):
        _load(saved)
    meta_path(saved).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelError, match="corrupt"):
        _load(saved)
    meta_path(saved).write_text("[1, 2, 3]")
    with pytest.raises(ModelError, match="expected a JSON object"):
        _load(saved)


def test_metadata_without_required_key_is_refused(saved: Path) -> None:
    _rewrite_meta(saved, feature_hash=None)
    with pytest.raises(ModelError, match="lacks feature_hash"):
        _load(saved)


def test_metadata_from_a_newer_schema_is_refused(saved: Path) -> None:
    _rewrite_meta(saved, schema_version=META_SCHEMA_VERSION + 1)
    with pytest.raises(ModelError, match="newer"):
        _load(saved)


def test_malformed_sha_in_metadata_is_refused(saved: Path) -> None:
    _rewrite_meta(saved, sha256="not-a-hash")
    with pytest.raises(ModelError, match="not a SHA-256"):
        _load(saved)


def test_missing_zip_is_refused(saved: Path) -> None:
    saved.unlink()
    with pytest.raises(ModelError, match="is missing"):
        _load(saved)


def test_metadata_that_lies_about_the_model_is_caught_after_loading(saved: Path) -> None:
    _rewrite_meta(saved, obs_dim=40)
    with pytest.raises(ModelError, match="obs_dim: metadata 40, model file 12"):
        _load(saved, expected_obs_dim=40)


def test_save_refuses_action_map_of_wrong_length(model: RecurrentPPO, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="has 5 actions, model has 4"):
        save_model(model, tmp_path / "m.zip", _metadata(action_map=(*ACTION_MAP, "FLIP")))
    assert not (tmp_path / "m.zip").exists()


def test_save_refuses_metadata_contradicting_the_model(model: RecurrentPPO, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="obs_dim is 40 but the model has 12"):
        save_model(model, tmp_path / "m.zip", _metadata(obs_dim=40))


def test_save_requires_what_load_checks(model: RecurrentPPO, tmp_path: Path) -> None:
    meta = _metadata()
    del meta["feature_hash"]
    with pytest.raises(ModelError, match="lacks feature_hash"):
        save_model(model, tmp_path / "m.zip", meta)


def test_save_refuses_unserialisable_metadata(model: RecurrentPPO, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="JSON"):
        save_model(model, tmp_path / "m.zip", _metadata(config={"fn": object()}))
    assert not (tmp_path / "m.zip").exists()


# ---------------------------------------------------------------------- feature refusals, on the bundled model
def _bundled_copy(tmp_path: Path, **meta_changes: Any) -> Path:
    """The shipped model file with its metadata edited (None removes a key)."""
    source = default_model_path()
    path = tmp_path / "default.zip"
    path.write_bytes(source.read_bytes())
    meta = json.loads(meta_path(source).read_text())
    for key, value in meta_changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    meta_path(path).write_text(json.dumps(meta))
    return path


def _refusal(path: Path, config: FeatureConfig) -> str:
    running = FeatureProcessor(config)
    with pytest.raises(ModelError) as err:
        load_model(
            path,
            expected_obs_dim=running.n_features,
            expected_action_map=ACTION_MAP,
            expected_feature_hash=running.feature_hash,
            expected_features=running.describe(),
        )
    return str(err.value)


def test_a_feature_refusal_names_the_setting_that_differs() -> None:
    """Not just two hashes: the bundled model was trained with a 14-bar RSI, the running configuration has 21."""
    message = _refusal(default_model_path(), FeatureConfig(rsi_window=21))
    assert message.endswith("(settings that differ: rsi_window: model 14, running 21)")
    assert "feature hash: model b8cc9e07" in message


def test_a_feature_refusal_names_every_setting_that_differs() -> None:
    config = FeatureConfig(sma_windows=(12, 96), vol_scale=0.002)
    with pytest.raises(ModelError) as err:
        RecurrentStrategy(default_model_path(), feature_config=config)
    assert str(err.value).endswith(
        "(settings that differ: sma_windows: model [24, 96], running [12, 96]; vol_scale: model 0.001, running 0.002)"
    )


def test_a_feature_refusal_names_another_schema_version(tmp_path: Path) -> None:
    path = _bundled_copy(tmp_path, feature_schema_version=FEATURE_SCHEMA_VERSION + 1, feature_hash="e" * 64)
    message = _refusal(path, DEFAULT_FEATURE_CONFIG)
    expected = f"feature schema version: model {FEATURE_SCHEMA_VERSION + 1}, running {FEATURE_SCHEMA_VERSION}"
    assert message.endswith(f"(settings that differ: {expected})")


def test_a_feature_refusal_without_a_setting_that_differs_says_so(tmp_path: Path) -> None:
    """The recorded settings are the running ones but the hashes differ: the features are computed differently."""
    message = _refusal(_bundled_copy(tmp_path, feature_hash="e" * 64), DEFAULT_FEATURE_CONFIG)
    assert "(no setting differs: " in message and "computes those features differently" in message


def test_a_feature_refusal_of_a_model_without_recorded_settings_says_so(tmp_path: Path) -> None:
    message = _refusal(_bundled_copy(tmp_path, feature_config=None), FeatureConfig(rsi_window=21))
    assert message.endswith("(the model records no feature settings to compare)")


def test_a_feature_refusal_with_equal_settings_names_the_features_that_differ(tmp_path: Path) -> None:
    names = [("rsi_99" if n == "rsi_14" else n) for n in DEFAULT_FEATURE_CONFIG.names]
    message = _refusal(_bundled_copy(tmp_path, feature_names=names, feature_hash="e" * 64), DEFAULT_FEATURE_CONFIG)
    expected = "feature names: only the model has ['rsi_99'], only running has ['rsi_14']"
    assert message.endswith(f"(settings that differ: {expected})")
