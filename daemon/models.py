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
    await store.register_model(
        actual, model, str(meta.get("feature_hash", "")), meta.get("training_metrics", {}), gold=gold, ts=ts
    )
    return {"sha256": actual, "path": str(model), "gold": gold}


async def gold_model(store: Store) -> tuple[str, Path] | None:
    """The operator's known-good model: its SHA-256 and file, or None when none is registered."""
    entry = await store.gold_model()
    return None if entry is None else (entry.sha256, entry.path)


async def list_models(store: Store) -> list[dict[str, Any]]:
    return [
        {"sha256": m.sha256, "path": str(m.path), "feature_hash": m.feature_hash, "gold": m.gold,
         "production": m.production, "ts": m.registered_ts}
        for m in await store.models()
    ]
