"""The model registry: which model files this database knows, which one is gold, and the commands
that change which one is production (``tradectl models promote|rollback``; rules in ``daemon.promotion``).

The gold model is the operator's known-good fallback. When the drawdown tiers
reach their halt tier the daemon flattens, halts and switches its policy to
the gold model, so that trading resumes (after an explicit resume) on the model
the operator trusts rather than on the one that just lost money. A model is
registered only after its file matches the SHA-256 its metadata records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokers.errors import ModelError, TradectlError
from daemon.store import Promotion, Store
from strategies.model_file import file_sha256, read_metadata

if TYPE_CHECKING:
    from daemon.config import TradectlConfig


def _inspect(path: Path) -> tuple[Path, dict[str, Any], str]:
    model = path.resolve()
    meta = read_metadata(model)
    try:
        return model, meta, file_sha256(model)
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


# ---------------------------------------------------------------------- promote / rollback commands
def add_change_arguments(promote: argparse.ArgumentParser, rollback: argparse.ArgumentParser) -> None:
    """Options of ``tradectl models promote`` and ``tradectl models rollback`` (the CLI adds --config, --db,
    --host, --port, --json)."""
    promote.add_argument("sha", help="SHA-256 (or a unique prefix of at least 6 digits) of a registered model")
    promote.add_argument("--force", action="store_true", help="promote although gates or shadow replay did not pass")
    promote.add_argument("--reason", default="", help="why (required with --force; recorded with who and when)")
    rollback.add_argument("--to", choices=("previous", "gold"), default="previous",
                          help="the model production had before the current one (default), or the gold model")
    rollback.add_argument("--reason", default="", help="why (recorded with who and when)")


def run_change(args: argparse.Namespace, config: TradectlConfig, notify: Callable[[], dict[str, Any]]) -> int:
    """Change the production model in the registry, then ask a running daemon to switch now.

    ``notify`` posts ``/models/promote`` to the configured daemon; a daemon that does not answer
    switches at its next start (or within ``promotion.poll_seconds`` if it is running but unreachable).
    """
    from daemon.promotion import promote, rollback

    async def change() -> Promotion:
        store = await Store.open(args.db or config.store.path)
        try:
            if args.models_command == "promote":
                return await promote(store, args.sha, drift_limit=config.promotion.drift_limit, force=args.force,
                                     reason=args.reason)
            return await rollback(store, args.to, reason=args.reason)
        finally:
            await store.close()

    row = asyncio.run(change())
    try:
        daemon: dict[str, Any] = notify()
    except TradectlError as exc:
        daemon = {"error": str(exc)}
    if args.json:
        print(json.dumps({"promotion": asdict(row), "daemon": daemon}, indent=2, default=str))
        return 0
    print(_describe(row))
    if "error" in daemon:
        print(f"daemon: {daemon['error']}; a daemon on this registry switches within "
              f"{config.promotion.poll_seconds:g} s or at its next start")
    elif daemon.get("switched"):
        print(f"daemon: now trading {daemon['sha256'][:16]} (switched in {daemon['seconds'] * 1000:.0f} ms)")
    else:
        print(f"daemon: {daemon.get('reason') or 'already trading ' + str(daemon.get('sha256'))[:16]}")
    return 0


def _describe(row: Promotion) -> str:
    what = "promoted" if row.action == "promote" else "rolled back to"
    was = row.previous_sha256[:16] if row.previous_sha256 else "no production model"
    line = f"{what} {row.sha256[:16]} (was {was}) by {row.who}: {row.reason}"
    if row.forced:
        line += f"\nFORCED past: {'; '.join(row.evidence.get('overridden', [])) or 'nothing (it had passed)'}"
    drift = row.evidence.get("drift")
    if drift is not None:
        beyond = "BEYOND" if row.evidence.get("drift_beyond_limit") else "within"
        line += f"\nparameter drift {drift:.1%} from the model it replaces, {beyond} the limit " \
                f"{row.evidence['drift_limit']:.0%}"
    return line
