"""`tradectl report`: one run (or a model's latest run, or the live store's week) as a self-contained HTML file.

* ``--run ID`` (default: the newest run with decisions) reads the run from
  ``--db`` (default: the configured store);
* ``--model SHA`` (a prefix is enough) finds the registered model and
  reports its newest run in that store, else in the report's own validation
  store (``var/reports/model-<sha>/``); with neither, the model is validated
  first (``tradectl validate``'s runs through ``BacktestRunner``, kept in that
  directory) and its held-out run is reported;
* ``--weekly`` is the one-pager over the last seven days of bars.

Reading and the baselines' backtests run on an event loop; the charts are
drawn after it has closed (matplotlib blocks), and the file is written last.
This module is imported to build the CLI's parser: matplotlib, numpy and the
pipeline load only when a report runs.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from brokers.errors import DataError, ModelError

if TYPE_CHECKING:
    from daemon.config import TradectlConfig
    from daemon.reporting.data import ReportData
    from daemon.store import Store

__all__ = ["REPORTS_DIR", "add_arguments", "run"]

REPORTS_DIR = Path("var/reports")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's options (the CLI adds ``--config``)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run", type=int, default=None, metavar="ID", help="run id (default: the newest run)")
    which.add_argument("--model", default=None, metavar="SHA", help="a registered model's SHA-256 (or a prefix)")
    which.add_argument("--weekly", action="store_true", help="the one-pager over the store's last 7 days of bars")
    parser.add_argument("--db", type=Path, default=None, help="SQLite store (default: store.path of the config)")
    parser.add_argument("--data", type=Path, default=None, help="the bars the run replayed (default: its config's)")
    parser.add_argument("--out", type=Path, default=None, help="HTML file (default var/report.html, var/weekly.html)")


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    from daemon.reporting.page import render_page

    db = Path(args.db or config.store.path)
    if args.weekly:
        title, subtitle, sections = _weekly(db, config)
        out = args.out or Path("var/weekly.html")
    else:
        if args.model is not None:
            db, run_id = _model_run(db, args.model, config)
        else:
            run_id = args.run
        report = asyncio.run(_gather_run(db, run_id, config, args.data))
        title, subtitle, sections = _run_page(report, db, config)
        out = args.out or Path("var/report.html")
    text = render_page(title, subtitle, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(text.encode()):,} bytes): {title}")
    return 0


# ---------------------------------------------------------------------- stores
def _existing(db: Path) -> Path:
    if not db.is_file():
        raise DataError(f"{db}: no store there (pass --db FILE)")
    return db


async def _open(db: Path) -> Store:
    from daemon.store import Store

    return await Store.open(_existing(db), batched=True)


async def _gather_run(db: Path, run_id: int | None, config: TradectlConfig, data: Path | None) -> ReportData:
    from daemon.reporting.data import gather
    from daemon.store import reports as q

    store = await _open(db)
    try:
        if run_id is None:
            run_id = await q.latest_run_id(store)
            if run_id is None:
                raise DataError(f"{db}: no run with decisions to report on")
        elif await q.run_info(store, run_id) is None:
            raise DataError(f"{db}: no run {run_id}")
        return await gather(store, q.Scope(run_id=run_id), f"run {run_id}", config=config, data=data)
    finally:
        await store.close()


# ---------------------------------------------------------------------- --model
def _model_run(db: Path, sha: str, config: TradectlConfig) -> tuple[Path, int]:
    """(store, run id) of the model's newest run, validating the model first when it has none."""
    from daemon.validate import validate

    sha256, path, found = asyncio.run(_find_model_run(db, sha))
    if found is not None:
        return found
    workdir = REPORTS_DIR / f"model-{sha256[:16]}"
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"no run of model {sha256[:16]}… yet: validating {path} (runs kept in {workdir})")
    validate(config, path, workdir=workdir)
    return workdir / "recurrent.db", 1


async def _find_model_run(db: Path, sha: str) -> tuple[str, Path, tuple[Path, int] | None]:
    from daemon.store import reports as q

    store = await _open(db)
    try:
        matches = [m for m in await store.models() if m.sha256.startswith(sha.lower())]
        if len(sha) < 6 or not matches:
            raise ModelError(f"no registered model {sha!r} in {db} (tradectl models list; give at least 6 hex digits)")
        if len(matches) > 1:
            raise ModelError(f"{sha!r} matches {len(matches)} registered models: give more of the SHA-256")
        model = matches[0]
        run_id = await q.latest_run_of_model(store, model.sha256)
    finally:
        await store.close()
    if run_id is not None:
        return model.sha256, model.path, (db, run_id)
    kept = REPORTS_DIR / f"model-{model.sha256[:16]}" / "recurrent.db"
    if kept.is_file():
        store = await _open(kept)
        try:
            run_id = await q.latest_run_of_model(store, model.sha256)
        finally:
            await store.close()
        if run_id is not None:
            return model.sha256, model.path, (kept, run_id)
    return model.sha256, model.path, None


# ---------------------------------------------------------------------- pages
def _run_page(report: ReportData, db: Path, config: TradectlConfig) -> tuple[str, str, list]:
    from daemon.reporting import sections
    from daemon.reporting.page import Section

    info = report.info
    assert info is not None
    models = sorted({r.model_sha256 for r in report.trace if r.model_sha256})
    strategy = info.config.get("strategy", {}).get("kind", "?")
    subtitle = (f"{db} · {info.mode} run {info.id} · strategy {strategy}"
                + (f" · model {', '.join(m[:16] for m in models)}" if models else "")
                + f" · started {info.started_at}")
    validation = config.validation
    gate_section, _ = sections.gates(report, validation)
    parts = [
        sections.performance(report),
        sections.equity(report),
        sections.action_trace(report),
        sections.hold_rate(report, validation),
        sections.regime(report),
        sections.denials(report),
        sections.monthly(report),
        sections.trade_list(report.trades),
        gate_section,
        sections.monte_carlo(report, validation),
    ]
    if report.notes:
        notes = Section("Notes", "notes")
        for n in report.notes:
            notes.note(n)
        parts.append(notes)
    return f"tradectl report: run {info.id} ({info.mode})", subtitle, parts


def _weekly(db: Path, config: TradectlConfig) -> tuple[str, str, list]:
    from daemon.reporting.weekly import gather_weekly, weekly_sections

    async def _read() -> tuple:
        store = await _open(db)
        try:
            return await gather_weekly(store)
        finally:
            await store.close()

    report, extras = asyncio.run(_read())
    scope = report.scope
    from daemon.reporting.sections import utc_time

    subtitle = f"{db} · bars {utc_time(scope.since_ts)} .. {utc_time(scope.until_ts)} UTC"
    return "tradectl weekly report", subtitle, weekly_sections(report, extras, config)
