"""Promotion and rollback: which registered model is production, who made it so, and on what evidence.

A model becomes production only through ``promote``, and only when the newest recorded validation
of its SHA-256 (``tradectl validate MODEL --record``) passed every required gate and the newest
shadow replay (``tradectl shadow MODEL``) beside the current production model passed; or when the
operator overrides that with ``--force`` and a reason, which is recorded with who and when. Every
change of the production model is a ``model_promotions`` row, so "previous" is a fact of the
record, not a guess: ``rollback --to previous`` returns to the model the current one replaced,
``--to gold`` to the operator's known-good model.

Parameter drift of a promoted model from the one it replaces (relative L2 of the policy's weights,
``strategies.drift``) is measured at promotion; beyond ``promotion.drift_limit`` it is logged in
``parameter_drift_log`` and kept in the promotion's evidence, where a running daemon reads it: a
drifted model is on probation, and a failed per-day gate while it trades rolls it back
(``daemon.model_switch``).

These functions only change the registry; a running daemon notices (it polls the registry, and the
CLI also asks it at once through ``POST /models/promote``) and switches without a restart.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from brokers.errors import ModelError
from daemon.store import ModelEntry, ModelEvaluation, Promotion, Store

if TYPE_CHECKING:
    from daemon.validate import Validation

__all__ = [
    "SHADOW",
    "VALIDATION",
    "PromotionCheck",
    "check_promotion",
    "log_drift",
    "operator",
    "promote",
    "record_validation",
    "resolve_model",
    "rollback",
]

VALIDATION = "validation"
SHADOW = "shadow"
_MIN_PREFIX = 6


def operator() -> str:
    """Who is acting: user@host of this process (recorded with every promotion and rollback)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def resolve_model(store: Store, sha: str) -> ModelEntry:
    """The registered model whose SHA-256 is ``sha`` or starts with it (at least 6 hex digits)."""
    wanted = sha.strip().lower()
    if len(wanted) < _MIN_PREFIX:
        raise ModelError(f"model {sha!r}: give at least {_MIN_PREFIX} hex digits of its SHA-256")
    matches = [m for m in await store.models() if m.sha256.startswith(wanted)]
    if not matches:
        raise ModelError(f"no registered model has SHA-256 {sha}; register it with `tradectl models register PATH`")
    if len(matches) > 1:
        raise ModelError(f"SHA-256 prefix {sha} matches {len(matches)} registered models; give more digits")
    return matches[0]


async def record_validation(db: Path, result: Validation) -> None:
    """Keep a ``tradectl validate`` result for its model's SHA-256 (what ``promote`` asks for)."""
    store = await Store.open(db)
    try:
        failed = [g.name for g in result.gates if g.required and not g.passed]
        summary = {
            "model": str(result.model),
            "gates": [g.as_dict() for g in result.gates],
            "failed": failed,
            "held_out_bars": result.held_out_bars,
        }
        await store.record_evaluation(
            ModelEvaluation(result.model_sha256, VALIDATION, int(time.time()), result.passed, None, summary)
        )
    finally:
        await store.close()


@dataclass(frozen=True, slots=True)
class PromotionCheck:
    """The evidence promotion asks for, and every reason it is not enough."""

    validation: ModelEvaluation | None
    shadow: ModelEvaluation | None
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons


async def check_promotion(store: Store, sha: str) -> PromotionCheck:
    """Has ``sha`` passed its validation gates and a shadow replay beside the current production model?"""
    validation = await store.latest_evaluation(sha, VALIDATION)
    shadow = await store.latest_evaluation(sha, SHADOW)
    reasons = []
    if validation is None:
        reasons.append("no validation recorded (run `tradectl validate MODEL --record`)")
    elif not validation.passed:
        reasons.append(f"validation gates failed: {', '.join(validation.summary.get('failed', [])) or 'see record'}")
    if shadow is None:
        reasons.append("no shadow replay recorded (run `tradectl shadow MODEL`)")
    else:
        production = await store.production_model()
        if not shadow.passed:
            reasons.append(f"shadow replay failed: {'; '.join(shadow.summary.get('failed', [])) or 'see record'}")
        elif production is not None and shadow.reference_sha256 != production.sha256:
            reasons.append(
                f"the shadow replay ran beside {str(shadow.reference_sha256)[:12]}, but production is now "
                f"{production.sha256[:12]}: replay it again"
            )
    return PromotionCheck(validation, shadow, reasons)


async def log_drift(
    store: Store, candidate: str, reference: str, drift: float, limit: float, reason: str, ts: int
) -> bool:
    """Log a policy's drift in ``parameter_drift_log`` when it is beyond ``limit``; True when it was.

    For promotion (candidate against production) and for cyclic training (a cycle against the
    previous one: ``reason`` says which).
    """
    if drift <= limit:
        return False
    await store.record_drift(ts, candidate, reference, drift, limit, reason)
    return True


async def promote(
    store: Store,
    sha: str,
    *,
    drift_limit: float,
    force: bool = False,
    reason: str = "",
    who: str | None = None,
    ts: int | None = None,
) -> Promotion:
    """Make a registered model production; refused (``ModelError`` with every reason) without the evidence
    unless ``force`` with a ``reason``."""
    from strategies.drift import model_drift

    entry = await resolve_model(store, sha)
    if entry.production:
        raise ModelError(f"model {entry.sha256[:12]} is already the production model")
    if force and not reason.strip():
        raise ModelError("--force needs --reason \"...\": an override is recorded with why")
    check = await check_promotion(store, entry.sha256)
    if not check.passed and not force:
        raise ModelError(
            f"model {entry.sha256[:12]} may not be promoted: {'; '.join(check.reasons)} "
            "(or override with --force --reason \"...\")"
        )
    now = int(time.time()) if ts is None else ts
    previous = await store.production_model()
    evidence: dict[str, Any] = {
        "validation_passed": None if check.validation is None else check.validation.passed,
        "shadow_passed": None if check.shadow is None else check.shadow.passed,
        "overridden": check.reasons if force else [],
        "drift_limit": drift_limit,
    }
    if previous is not None:
        # reading two model files: off the event loop
        drift = await asyncio.to_thread(model_drift, entry.path, previous.path)
        evidence["drift"] = drift
        evidence["drift_beyond_limit"] = await log_drift(
            store, entry.sha256, previous.sha256, drift, drift_limit, "promotion: candidate against production", now
        )
    row = Promotion(
        0, now, "promote", entry.sha256, None if previous is None else previous.sha256, force,
        reason.strip() or "gates and shadow replay passed", who or operator(), evidence,
    )
    await store.record_promotion(row)
    return row


async def rollback(
    store: Store,
    to: Literal["previous", "gold"] = "previous",
    *,
    reason: str = "",
    who: str | None = None,
    ts: int | None = None,
    action: str = "rollback",
) -> Promotion:
    """Make the previous production model (or the gold one) production again."""
    current = await store.production_model()
    if to == "gold":
        target = await store.gold_model()
        if target is None:
            raise ModelError("no gold model is registered (`tradectl models register PATH --gold`)")
    else:
        if current is None:
            raise ModelError("no model is in production, so there is none before it; roll back --to gold")
        made = [p for p in await store.promotions() if p.sha256 == current.sha256]
        before = made[-1].previous_sha256 if made else None
        if before is None:
            raise ModelError(f"no model was in production before {current.sha256[:12]}; roll back --to gold")
        target = await resolve_model(store, before)
    if current is not None and target.sha256 == current.sha256:
        raise ModelError(f"model {target.sha256[:12]} ({to}) is already the production model")
    row = Promotion(
        0, int(time.time()) if ts is None else ts, action, target.sha256,
        None if current is None else current.sha256, False, reason or f"rollback to {to}", who or operator(), {},
    )
    await store.record_promotion(row)
    return row
