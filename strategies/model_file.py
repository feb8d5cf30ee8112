"""A model file and its metadata: the only way a policy gets into the daemon.

``model.zip`` is what ``RecurrentPPO.save`` writes; ``model.zip.meta.json``
beside it records what the model was trained on (feature schema, action map,
data, configuration, versions) and the SHA-256 of the zip. Loading refuses,
with a message naming exactly what differs, any model that does not match the
running configuration: the seed system once ran a 9-action model in a
5-action environment and nobody noticed.

The zip holds pickled objects, so its hash is checked before anything in it
is unpickled, and the model is then loaded from the very bytes that were
hashed (no window for the file to change in between).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brokers.errors import ModelError

if TYPE_CHECKING:
    from sb3_contrib import RecurrentPPO

__all__ = [
    "METADATA_KEYS",
    "META_SCHEMA_VERSION",
    "file_sha256",
    "load_model",
    "meta_path",
    "read_metadata",
    "read_verified",
    "save_model",
]

META_SCHEMA_VERSION = 1
META_SUFFIX = ".meta.json"

METADATA_KEYS: tuple[str, ...] = (
    "schema_version",
    "feature_names",
    "feature_hash",
    "obs_dim",
    "action_map",
    "lstm_hidden_size",
    "n_lstm_layers",
    "data_file_sha256",
    "data_start",
    "data_end",
    "config",
    "seed",
    "training_metrics",
    "created_at",
    "versions",
    "sha256",
)
"""Keys the train command fills; ``save_model`` derives the model-shaped ones
(obs_dim, lstm_hidden_size, n_lstm_layers, versions, created_at, sha256)
when absent. Other keys are kept as given."""

_REQUIRED_ON_SAVE = ("action_map", "feature_hash")
_REQUIRED_ON_LOAD = ("sha256", "obs_dim", "action_map", "feature_hash")


def meta_path(path: str | os.PathLike[str]) -> Path:
    """``model.zip`` -> ``model.zip.meta.json``."""
    return Path(f"{os.fspath(path)}{META_SUFFIX}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file read in 1 MiB blocks: what metadata records of a model or data file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import gymnasium
    import sb3_contrib
    import stable_baselines3
    import torch

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "sb3_contrib": sb3_contrib.__version__,
    }


def _model_shape(model: Any) -> dict[str, int]:
    """What the model file itself says about its interface, for cross-checks."""
    from gymnasium import spaces

    policy = model.policy
    if not isinstance(model.action_space, spaces.Discrete):
        raise ModelError(f"model action space {model.action_space} is not Discrete")
    lstm = getattr(policy, "lstm_actor", None)
    if lstm is None:
        raise ModelError(f"model policy {type(policy).__name__} has no LSTM: not a RecurrentPPO policy")
    return {
        "obs_dim": int(spaces.flatdim(model.observation_space)),
        "n_actions": int(model.action_space.n),
        "lstm_hidden_size": int(lstm.hidden_size),
        "n_lstm_layers": int(lstm.num_layers),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, Decimal | os.PathLike):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: RecurrentPPO, path: str | os.PathLike[str], metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Save ``model`` to ``path`` (zip) and its metadata to ``<path>.meta.json``.

    Returns the metadata as written. Refuses (ModelError) metadata that
    contradicts the model, since a wrong record is worse than none.
    """
    path = Path(path)
    missing = [k for k in _REQUIRED_ON_SAVE if k not in metadata]
    if missing:
        raise ModelError(f"model metadata lacks {', '.join(missing)}: load could not check the model")
    shape = _model_shape(model)
    action_map = tuple(str(a) for a in metadata["action_map"])
    if len(action_map) != shape["n_actions"]:
        raise ModelError(f"action map {action_map} has {len(action_map)} actions, model has {shape['n_actions']}")
    for key in ("obs_dim", "lstm_hidden_size", "n_lstm_layers"):
        if key in metadata and metadata[key] != shape[key]:
            raise ModelError(f"metadata {key} is {metadata[key]} but the model has {shape[key]}")

    meta: dict[str, Any] = {
        "schema_version": META_SCHEMA_VERSION,
        "obs_dim": shape["obs_dim"],
        "lstm_hidden_size": shape["lstm_hidden_size"],
        "n_lstm_layers": shape["n_lstm_layers"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        **metadata,
        "action_map": list(action_map),
    }
    buf = io.BytesIO()
    model.save(buf)
    data = buf.getvalue()
    meta["sha256"] = _sha256(data)
    meta["model_file"] = path.name
    meta["model_bytes"] = len(data)
    try:
        meta_json = json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ModelError(f"model metadata cannot be written as JSON: {e}") from e

    path.parent.mkdir(parents=True, exist_ok=True)
    # Zip first: a crash before the metadata lands leaves a model that load refuses.
    _atomic_write(path, data)
    _atomic_write(meta_path(path), (meta_json + "\n").encode())
    return json.loads(meta_json)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``<path>.meta.json`` without touching the model zip."""
    mpath = meta_path(path)
    try:
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"model metadata {mpath} is missing: without it the model cannot be checked "
            "against the running configuration"
        ) from None
    except OSError as e:
        raise ModelError(f"model metadata {mpath} cannot be read: {e}") from e
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"model metadata {mpath} is corrupt (not valid JSON: {e})") from e
    if not isinstance(meta, dict):
        raise ModelError(f"model metadata {mpath} is corrupt (expected a JSON object)")
    _validate_metadata(mpath, meta)
    meta["action_map"] = tuple(meta["action_map"])
    if isinstance(meta.get("feature_names"), list):
        meta["feature_names"] = tuple(meta["feature_names"])
    return meta


def _validate_metadata(mpath: Path, meta: dict[str, Any]) -> None:
    version = meta.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"model metadata {mpath}: schema_version missing or not an integer")
    if version > META_SCHEMA_VERSION:
        raise ModelError(
            f"model metadata {mpath}: schema_version {version} is newer than this tradectl "
            f"understands ({META_SCHEMA_VERSION})"
        )
    missing = [k for k in _REQUIRED_ON_LOAD if k not in meta]
    if missing:
        raise ModelError(f"model metadata {mpath} lacks {', '.join(missing)}")
    sha = meta["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(ch in "0123456789abcdef" for ch in sha)):
        raise ModelError(f"model metadata {mpath}: sha256 is not a SHA-256 hex digest")
    if not isinstance(meta["obs_dim"], int) or isinstance(meta["obs_dim"], bool):
        raise ModelError(f"model metadata {mpath}: obs_dim is not an integer")
    amap = meta["action_map"]
    if not isinstance(amap, list) or not all(isinstance(a, str) for a in amap):
        raise ModelError(f"model metadata {mpath}: action_map is not a list of action names")
    if not isinstance(meta["feature_hash"], str):
        raise ModelError(f"model metadata {mpath}: feature_hash is not a string")


def _differences(
    meta: Mapping[str, Any],
    obs_dim: int,
    action_map: tuple[str, ...],
    feature_hash: str,
    features: Mapping[str, Any] | None,
) -> list[str]:
    diffs = []
    if meta["obs_dim"] != obs_dim:
        diffs.append(f"observation size: model {meta['obs_dim']}, running configuration {obs_dim}")
    if tuple(meta["action_map"]) != action_map:
        diffs.append(
            f"action map: model ({', '.join(meta['action_map'])}) vs running configuration ({', '.join(action_map)})"
        )
    if meta["feature_hash"] != feature_hash:
        found = f"feature hash: model {meta['feature_hash']}, running configuration {feature_hash}"
        if features is not None:
            found += f" ({_feature_differences(meta, features)})"
        diffs.append(found)
    return diffs


def _feature_differences(meta: Mapping[str, Any], running: Mapping[str, Any]) -> str:
    """Why two feature hashes differ, in the terms they are computed from: the settings and the
    schema version the model recorded next to its hash (else the feature names), against ``running``
    (``FeatureProcessor.describe()``). A hash alone tells the operator nothing to fix."""
    recorded = meta.get("feature_config")
    if not isinstance(recorded, Mapping):
        return "the model records no feature settings to compare"
    ours = _as_json(running.get("feature_config", {}))
    theirs = _as_json(recorded)
    differ = [
        f"{key}: model {_shown(theirs, key)}, running {_shown(ours, key)}"
        for key in [*ours, *(k for k in theirs if k not in ours)]
        if theirs.get(key, _ABSENT) != ours.get(key, _ABSENT)
    ]
    key = "feature_schema_version"
    if key in meta and meta[key] != running.get(key):
        differ.append(f"feature schema version: model {_shown(meta, key)}, running {_shown(running, key)}")
    if not differ and "feature_names" in meta:  # names follow from the settings: named only when those agree
        names, ours_names = list(meta["feature_names"]), list(running.get("feature_names") or ())
        only_model = [n for n in names if n not in ours_names]
        only_running = [n for n in ours_names if n not in names]
        if only_model or only_running:
            differ.append(f"feature names: only the model has {only_model}, only running has {only_running}")
    if not differ:
        return (
            "no setting differs: the model's recorded feature settings hash differently here, "
            "so this tradectl computes those features differently from the one that trained the model"
        )
    return "settings that differ: " + "; ".join(differ)


_ABSENT = object()


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so recorded and running values compare."""
    return json.loads(json.dumps(value, default=_json_default))


def _shown(values: Mapping[str, Any], key: str) -> str:
    return json.dumps(values[key], default=_json_default) if key in values else "(not set)"


def load_model(
    path: str | os.PathLike[str],
    *,
    expected_obs_dim: int,
    expected_action_map: Sequence[str],
    expected_feature_hash: str,
    expected_features: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> tuple[RecurrentPPO, dict[str, Any]]:
    """Load a model saved by ``save_model`` after proving it fits the running configuration.

    ``expected_features`` is the running feature description
    (``FeatureProcessor.describe()``): given, a feature hash that differs is
    explained by the settings that differ. Every refusal is a ModelError; a
    corrupt or truncated file never escapes as a raw traceback from zipfile,
    torch or pickle.
    """
    path = Path(path)
    meta = read_metadata(path)
    diffs = _differences(meta, expected_obs_dim, tuple(expected_action_map), expected_feature_hash, expected_features)
    if diffs:
        raise ModelError(f"model {path} does not match the running configuration: " + "; ".join(diffs))
    data = _verified_bytes(path, meta)
    model = _load_verified(path, data, device)
    _cross_check(path, model, meta)
    return model, meta


def read_verified(path: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """The model zip's bytes and its metadata, once the bytes match the recorded SHA-256.

    For readers of the zip other than ``load_model`` (parameter drift): whatever they unpickle
    comes from these very bytes, which were hashed.
    """
    path = Path(path)
    meta = read_metadata(path)
    return _verified_bytes(path, meta), meta


def _verified_bytes(path: Path, meta: Mapping[str, Any]) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {path} is missing (its metadata is there)") from None
    except OSError as e:
        raise ModelError(f"model file {path} cannot be read: {e}") from e
    if _sha256(data) != meta["sha256"]:
        raise ModelError(f"SHA-256 of {path.name} does not match its metadata (file changed or corrupt)")
    return data


def _load_verified(path: Path, data: bytes, device: str) -> RecurrentPPO:
    from sb3_contrib import RecurrentPPO

    try:
        model = RecurrentPPO.load(io.BytesIO(data), device=device)
    except Exception as e:
        raise ModelError(f"model file {path} could not be loaded ({type(e).__name__}: {e})") from e
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    if not isinstance(model.policy, RecurrentActorCriticPolicy):
        raise ModelError(f"model file {path} holds a {type(model.policy).__name__}, not a recurrent policy")
    return model


def _cross_check(path: Path, model: RecurrentPPO, meta: Mapping[str, Any]) -> None:
    """The metadata matched the configuration; make sure the model matches the metadata."""
    shape = _model_shape(model)
    claims = {
        "obs_dim": meta["obs_dim"],
        "n_actions": len(meta["action_map"]),
        "lstm_hidden_size": meta.get("lstm_hidden_size", shape["lstm_hidden_size"]),
        "n_lstm_layers": meta.get("n_lstm_layers", shape["n_lstm_layers"]),
    }
    wrong = [f"{k}: metadata {v}, model file {shape[k]}" for k, v in claims.items() if v != shape[k]]
    if wrong:
        raise ModelError(f"model file {path} contradicts its metadata: " + "; ".join(wrong))
