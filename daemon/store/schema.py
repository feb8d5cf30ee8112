"""Every table of the store: its migrations (applied in order, each exactly once) and connection settings.

Append new migrations; never edit one that has shipped. Money and quantities
are stored as decimal TEXT so that what was counted is what is read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from brokers.errors import StoreError

_RECONCILIATION_RUNS = """
        CREATE TABLE reconciliation_runs (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL DEFAULT 0,
            ts INTEGER NOT NULL,
            reason TEXT NOT NULL,
            status TEXT NOT NULL,
            action TEXT NOT NULL,
            differences TEXT NOT NULL DEFAULT '[]',
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX reconciliation_runs_ts ON reconciliation_runs(ts)
        """

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "initial schema",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            mode TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            config_fingerprint TEXT NOT NULL,
            config TEXT NOT NULL,
            summary TEXT
        );
        CREATE TABLE orders (
            client_order_id TEXT PRIMARY KEY,
            run_id INTEGER NOT NULL,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL,
            quantity TEXT NOT NULL,
            order_type TEXT NOT NULL,
            limit_price TEXT,
            time_in_force TEXT NOT NULL,
            status TEXT NOT NULL,
            broker_order_id TEXT,
            filled_quantity TEXT NOT NULL DEFAULT '0',
            average_price TEXT,
            reason TEXT NOT NULL DEFAULT '',
            decision_id INTEGER,
            created_ts INTEGER NOT NULL,
            updated_ts INTEGER NOT NULL,
            message TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX orders_status ON orders(status);
        CREATE TABLE order_events (
            id INTEGER PRIMARY KEY,
            client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
            ts INTEGER NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE fills (
            fill_id TEXT PRIMARY KEY,
            client_order_id TEXT NOT NULL,
            run_id INTEGER NOT NULL,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL,
            quantity TEXT NOT NULL,
            price TEXT NOT NULL,
            fee TEXT NOT NULL,
            ts INTEGER NOT NULL,
            realized_pnl TEXT NOT NULL
        );
        CREATE TABLE trades (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            symbol TEXT NOT NULL,
            direction INTEGER NOT NULL,
            quantity TEXT NOT NULL,
            entry_ts INTEGER NOT NULL,
            exit_ts INTEGER NOT NULL,
            entry_price TEXT NOT NULL,
            exit_price TEXT NOT NULL,
            fees TEXT NOT NULL,
            pnl TEXT NOT NULL,
            entry_reason TEXT NOT NULL DEFAULT '',
            exit_reason TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE decisions (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            symbol TEXT NOT NULL,
            ts INTEGER NOT NULL,
            action TEXT NOT NULL,
            confidence REAL,
            probabilities TEXT,
            reason TEXT NOT NULL DEFAULT '',
            verdict TEXT,
            verdict_layer TEXT,
            verdict_reason TEXT,
            order_quantity TEXT,
            client_order_id TEXT,
            extras TEXT
        );
        CREATE INDEX decisions_run_ts ON decisions(run_id, ts);
        CREATE TABLE risk_events (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            symbol TEXT,
            layer TEXT NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            message TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE bar_rejections (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            ts INTEGER,
            symbol TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE equity_snapshots (
            run_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            equity REAL NOT NULL,
            cash TEXT NOT NULL,
            realized_pnl TEXT NOT NULL,
            unrealized_pnl REAL NOT NULL
        );
        CREATE INDEX equity_run_ts ON equity_snapshots(run_id, ts);
        CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_ts INTEGER NOT NULL);
        """,
    ),
    (
        2,
        "model registry and recurrent states",
        """
        CREATE TABLE model_registry (
            sha256 TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            feature_hash TEXT NOT NULL,
            metrics TEXT NOT NULL DEFAULT '{}',
            is_production INTEGER NOT NULL DEFAULT 0,
            is_gold INTEGER NOT NULL DEFAULT 0,
            registered_ts INTEGER NOT NULL
        );
        CREATE TABLE cycle_metrics (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            name TEXT NOT NULL,
            value REAL NOT NULL
        );
        CREATE TABLE parameter_drift_log (
            id INTEGER PRIMARY KEY,
            ts INTEGER NOT NULL,
            parameter TEXT NOT NULL,
            old_value TEXT,
            new_value TEXT,
            reason TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE recurrent_states (
            symbol TEXT PRIMARY KEY,
            model_sha256 TEXT NOT NULL,
            ts INTEGER NOT NULL,
            state BLOB NOT NULL
        );
        """,
    ),
    (3, "reconciliation runs", _RECONCILIATION_RUNS),
    (
        4,
        "decision runs",
        # One decisions row may stand for a run of identical plain decisions (no order, no verdict,
        # no probabilities) on consecutive accepted bars of one symbol: ``bars`` of them, the first
        # at ``ts`` and the last at ``last_ts``. A rejected bar always ends a run.
        """
        ALTER TABLE decisions ADD COLUMN bars INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE decisions ADD COLUMN last_ts INTEGER
        """,
    ),
    (
        5,
        "alert outbox",
        # Operator alerts waiting for (or past) delivery, in the order they happened. ``dedup_key`` keeps
        # one event from being queued twice; ``delivered_to`` lists the chats that already have it, so a
        # retry after a partial delivery does not send it to them again. status: pending, sent,
        # summarised (sent as part of a backlog summary) or dropped (over the outbox bound).
        """
        CREATE TABLE alert_outbox (
            id INTEGER PRIMARY KEY,
            dedup_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at REAL NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            delivered_to TEXT NOT NULL DEFAULT '',
            done_at REAL
        );
        CREATE INDEX alert_outbox_status ON alert_outbox(status, id)
        """,
    ),
    (
        6,
        "training cycles",
        # One row per finished cycle of `tradectl train --cycles` (run_id: the training's runs row), written
        # after the cycle's checkpoint is on disk: a row means the cycle is done, so a resumed training never
        # does it again (UNIQUE). Migration 2's name/value cycle_metrics table was never written; it is
        # replaced. Figures are those of the cycle's evaluation on held-out bars; ``improvement`` is the
        # selection metric's relative change over the best earlier cycle (NULL for the first), ``parameter_drift``
        # the relative L2 change of the policy's parameters since the previous cycle.
        """
        DROP TABLE cycle_metrics;
        CREATE TABLE cycle_metrics (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            cycle INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            timesteps INTEGER NOT NULL,
            hold_rate_target REAL,
            selection_metric TEXT NOT NULL,
            selection_value REAL,
            improvement REAL,
            sharpe REAL,
            max_drawdown_pct REAL,
            trades_per_day REAL,
            hold_rate REAL,
            return_pct REAL,
            parameter_drift REAL,
            gates_passed INTEGER NOT NULL,
            gates_total INTEGER NOT NULL,
            gates_failed TEXT NOT NULL DEFAULT '',
            model_sha256 TEXT NOT NULL,
            checkpoint TEXT NOT NULL,
            UNIQUE (run_id, cycle)
        )
        """,
    ),    (
        7,
        "promotion evidence, promotions and parameter drift",
        # model_evaluations: every recorded judgement of a model by SHA-256 (kind 'validation' from
        # `tradectl validate --record`, 'shadow' from `tradectl shadow`; reference_sha256 = the production
        # model a shadow ran beside); promotion asks for the newest of each. model_promotions: who made
        # which model production when and why (action promote, rollback or auto_rollback; forced = the
        # gates were overridden with a reason). parameter_drift_log (migration 2) gains the figure and
        # its limit: parameter 'policy', old_value the reference SHA-256, new_value the candidate's.
        """
        CREATE TABLE model_evaluations (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL,
            kind TEXT NOT NULL,
            ts INTEGER NOT NULL,
            passed INTEGER NOT NULL,
            reference_sha256 TEXT,
            summary TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX model_evaluations_sha ON model_evaluations(sha256, kind, id);
        CREATE TABLE model_promotions (
            id INTEGER PRIMARY KEY,
            ts INTEGER NOT NULL,
            action TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            previous_sha256 TEXT,
            forced INTEGER NOT NULL DEFAULT 0,
            reason TEXT NOT NULL DEFAULT '',
            who TEXT NOT NULL DEFAULT '',
            evidence TEXT NOT NULL DEFAULT '{}'
        );
        ALTER TABLE parameter_drift_log ADD COLUMN relative_l2 REAL;
        ALTER TABLE parameter_drift_log ADD COLUMN drift_limit REAL
        """,
    ),
    (
        8,
        "hyperparameter search trials",
        # One row per trial of `tradectl tune` (run_id: the search's runs row, mode 'tune'), written by the
        # driver once the trial has ended: params is the grid point as JSON, status 'ok' or 'error' (error
        # says why), train_run_id the trial's own training run whose cycle_metrics rows hold every cycle.
        # The figures are those of the trial's selected checkpoint on held-out bars, as `tradectl validate`
        # judged it; best marks the trial whose model was registered (never promoted).
        """
        CREATE TABLE tune_trials (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            trial INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            params TEXT NOT NULL,
            status TEXT NOT NULL,
            error TEXT NOT NULL DEFAULT '',
            train_run_id INTEGER,
            cycles INTEGER,
            timesteps INTEGER,
            sharpe REAL,
            return_pct REAL,
            max_drawdown_pct REAL,
            trades_per_day REAL,
            hold_rate REAL,
            gates_passed INTEGER,
            gates_total INTEGER,
            gates_failed TEXT NOT NULL DEFAULT '',
            model_sha256 TEXT,
            model_path TEXT,
            best INTEGER NOT NULL DEFAULT 0,
            UNIQUE (run_id, trial)
        )
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]

# (sql, parameters, executemany?)
Op = tuple[str, Sequence[Any], bool]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_transaction(conn: sqlite3.Connection, ops: Sequence[Op]) -> list[int]:
    """All of ``ops`` or none of them; returns each statement's row count.

    A COMMIT that fails (SQLite may answer it busy) is rolled back too, so a
    caller that sees an error knows nothing was written and may try again.
    """
    counts = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params, many in ops:
            cursor = conn.executemany(sql, params) if many else conn.execute(sql, params)
            counts.append(cursor.rowcount)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return counts


def configure(conn: sqlite3.Connection, synchronous: str) -> None:
    """WAL, the commit's durability (FULL: power loss; NORMAL: a killed process; OFF: backtests) and foreign keys."""
    mode = synchronous.upper()
    if mode not in ("FULL", "NORMAL", "OFF"):
        raise StoreError(f"unknown synchronous mode {synchronous!r}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={mode}")
    conn.execute("PRAGMA foreign_keys=ON")


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to ``LATEST_VERSION``; refuse a database written by a newer tradectl."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
    )
    current = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])
    if current > LATEST_VERSION:
        raise StoreError(f"{path}: schema version {current} is newer than this tradectl ({LATEST_VERSION}); upgrade")
    for version, name, sql in MIGRATIONS:
        if version <= current:
            continue
        statements: list[Op] = [(s.strip(), (), False) for s in sql.split(";") if s.strip()]
        record = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)"
        statements.append((record, (version, name, utc_now()), False))
        run_transaction(conn, statements)


def ensure_meta(conn: sqlite3.Connection, instance_id: str) -> dict[str, str]:
    """The database's identity: its client-order-id prefix (fixed at creation) and the order sequence."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if "instance_id" not in meta:
        run_transaction(
            conn,
            [
                ("INSERT INTO meta (key, value) VALUES ('instance_id', ?)", (instance_id,), False),
                ("INSERT INTO meta (key, value) VALUES ('order_seq', '0')", (), False),
            ],
        )
        meta = {"instance_id": instance_id, "order_seq": "0"}
    return meta
