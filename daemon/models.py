"""The model registry: which model files this database knows, and which one is gold.

The gold model is the operator's known-good fallback. When the drawdown tiers
reach their halt tier the daemon flattens, halts and switches its policy to
the gold model, so that trading resumes (after an explicit resume) on the model
the operator trusts rather than on the one that just lost money. A model is
registered only after its file matches the SHA-256 its metadata records.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from brokers.errors import ModelError
from daemon.store import Store
from strategies.model_file import read_metadata


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inspect(path: Path) -> tuple[Path, dict[str, Any], str]:
    model = path.resolve()
    meta = read_metadata(model)
    try:
        return model, meta, _file_sha256(model)
    except OSError as exc:
        raise ModelError(f"{model}: cannot read model file: {exc.strerror or exc}") from None


async def register_model(store: Store, path: str | Path, *, gold: bool = False, ts: int = 0) -> dict[str, Any]:
    """Record a model file (and make it the gold model when ``gold``). Refuses a file that fails its SHA-256."""
    model, meta, actual = await asyncio.to_thread(_inspect, Path(path))  # file I/O off the event loop
    if actual != meta.get("sha256"):
        raise ModelError(f"SHA-256 of {model.name} does not match its metadata (file changed or corrupt)")
    metrics = json.dumps(meta.get("training_metrics", {}), sort_keys=True, default=str)
    ops: list[tuple[str, tuple[Any, ...]]] = []
    if gold:
        ops.append(("UPDATE model_registry SET is_gold = 0 WHERE is_gold = 1", ()))
    ops.append(
        (
            "INSERT INTO model_registry (sha256, path, feature_hash, metrics, is_gold, registered_ts)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(sha256) DO UPDATE SET path = excluded.path,"
            " is_gold = MAX(model_registry.is_gold, excluded.is_gold)",
            (actual, str(model), str(meta.get("feature_hash", "")), metrics, int(gold), ts),
        )
    )
    for sql, params in ops:
        await store.execute(sql, params)
    return {"sha256": actual, "path": str(model), "gold": gold}


async def gold_model(store: Store) -> tuple[str, Path] | None:
    rows = await store.query("SELECT sha256, path FROM model_registry WHERE is_gold = 1")
    return (str(rows[0][0]), Path(rows[0][1])) if rows else None


async def list_models(store: Store) -> list[dict[str, Any]]:
    rows = await store.query(
        "SELECT sha256, path, feature_hash, is_gold, is_production, registered_ts FROM model_registry"
        " ORDER BY registered_ts, sha256"
    )
    return [
        {"sha256": r[0], "path": r[1], "feature_hash": r[2], "gold": bool(r[3]), "production": bool(r[4]), "ts": r[5]}
        for r in rows
    ]
