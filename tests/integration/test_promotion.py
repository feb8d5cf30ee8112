"""Shadow replay figures against the two runs' stores, and promotion's evidence rules through the CLI.

The candidate is the bundled model with its policy parameters moved by 5% (``perturbed_copy``):
a real model file whose decisions differ from the bundled model's on some bars, not a trained one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import TradectlConfig
from daemon.shadow import Shadow, shadow_replay
from strategies.model_file import read_metadata
from strategies.recurrent import default_model_path
from tests.model_copies import perturbed_copy, plain_copy

DAYS = 4


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_copy(tmp_path_factory.mktemp("candidate") / "candidate.zip", 0.05, seed=11)


@pytest.fixture(scope="module")
def shadow(tmp_path_factory: pytest.TempPathFactory, candidate: Path) -> tuple[Shadow, Path, Path]:
    root = tmp_path_factory.mktemp("shadow")
    registry = root / "registry.db"
    result = shadow_replay(TradectlConfig(), candidate, days=DAYS, db=registry, workdir=root)
    return result, root, registry


def _run_figures(db: Path, since_ts: int) -> dict[str, object]:
    """What a reader of the store computes by hand: actions by bar, fill totals, per-day counts."""
    with sqlite3.connect(db) as conn:
        decisions = conn.execute("SELECT ts, action, bars FROM decisions WHERE ts >= ? ORDER BY id", (since_ts,))
        actions = {}
        for ts, action, bars in decisions.fetchall():
            assert bars == 1, "recurrent decisions are never folded"
            actions[ts] = action
        fills = conn.execute("SELECT realized_pnl, fee FROM fills").fetchall()
        exits = [ts for (ts,) in conn.execute("SELECT exit_ts FROM trades")]
    day = lambda ts: datetime.fromtimestamp(ts, UTC).date()  # noqa: E731
    return {
        "actions": actions,
        "realized": sum((Decimal(r) for r, _ in fills), Decimal(0)),
        "fees": sum((Decimal(f) for _, f in fills), Decimal(0)),
        "fills": len(fills),
        "decisions_per_day": Counter(day(ts) for ts in actions),
        "holds_per_day": Counter(day(ts) for ts, a in actions.items() if a == "HOLD"),
        "trips_per_day": Counter(day(ts) for ts in exits),
    }


def test_shadow_report_figures_equal_the_two_stores(shadow: tuple[Shadow, Path, Path], candidate: Path) -> None:
    result, root, registry = shadow
    cand = _run_figures(root / "candidate.db", result.first_ts)
    prod = _run_figures(root / "production.db", result.first_ts)
    assert len(result.days) == DAYS and result.production.source == "bundled default"
    assert result.production.sha256 == read_metadata(default_model_path())["sha256"]

    same = [ts for ts in cand["actions"] if ts in prod["actions"]]
    agreeing = sum(1 for ts in same if cand["actions"][ts] == prod["actions"][ts])
    assert (result.compared, result.agreeing) == (len(same), agreeing)
    assert len(same) == result.bars, "both models decided on every bar of the window"
    assert 0 < agreeing < len(same), "moved weights change some decisions, not all"

    for replay, figures in ((result.candidate, cand), (result.production, prod)):
        assert replay.fills == figures["fills"]
        assert (replay.realized_pnl, replay.fees) == (figures["realized"], figures["fees"])
        assert replay.net_pnl == figures["realized"] - figures["fees"]
        for judged in replay.days:
            n = figures["decisions_per_day"][judged.day]
            assert judged.decisions == n and judged.round_trips == figures["trips_per_day"][judged.day]
            hold = next(g for g in judged.gates if g.name == "hold_rate")
            assert hold.figure == pytest.approx(figures["holds_per_day"][judged.day] / n)
            settings = TradectlConfig().validation
            assert hold.passed == (settings.hold_rate_min <= hold.figure <= settings.hold_rate_max)
        assert replay.gate_days()["hold_rate"] == sum(
            1 for d in replay.days for g in d.gates if g.name == "hold_rate" and g.passed
        )

    with sqlite3.connect(registry) as conn:
        sha, kind, passed, reference, summary = conn.execute(
            "SELECT sha256, kind, passed, reference_sha256, summary FROM model_evaluations"
        ).fetchone()
    assert (sha, kind, bool(passed), reference) == (
        result.candidate.sha256, "shadow", result.passed, result.production.sha256
    )
    assert json.loads(summary)["agreeing_bars"] == agreeing


def test_promotion_needs_the_recorded_evidence(
    tmp_path: Path, candidate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A candidate with a passed validation and a passed shadow replay is promoted without --force."""
    db = tmp_path / "registry.db"
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text(
        "validation:\n  advisory: [episodes, sharpe, beats_sma, beats_buy_and_hold, hold_rate, trades_per_day,"
        " action_share]\npromotion:\n  shadow_not_worse: false\n"
    )
    sha = read_metadata(candidate)["sha256"]
    assert main(["models", "register", str(candidate), "--db", str(db)]) == 0
    promote = ["models", "promote", sha[:10], "--db", str(db), "--port", "1", "--config", str(lenient)]
    assert main(promote) == 1
    assert "no validation recorded" in capsys.readouterr().err
    assert main(["validate", str(candidate), "--record", "--db", str(db), "--config", str(lenient)]) == 0
    assert main(promote) == 1
    assert "no shadow replay recorded" in capsys.readouterr().err
    assert main(["shadow", str(candidate), "--days", "3", "--db", str(db), "--config", str(lenient)]) == 0
    capsys.readouterr()
    assert main(promote) == 0
    out = capsys.readouterr().out
    assert f"promoted {sha[:16]}" in out and "FORCED" not in out and "no tradectl daemon answering" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT sha256 FROM model_registry WHERE is_production = 1").fetchall() == [(sha,)]
        assert conn.execute("SELECT action, forced FROM model_promotions").fetchall() == [("promote", 0)]


def test_the_bundled_model_is_refused_without_force_and_a_forced_promotion_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "registry.db"
    model = plain_copy(tmp_path / "default.zip")
    sha = read_metadata(model)["sha256"]
    assert main(["models", "register", str(model), "--db", str(db)]) == 0
    assert main(["validate", str(model), "--record", "--db", str(db)]) == 5, "the gates reject it"
    capsys.readouterr()
    argv = ["models", "promote", sha, "--db", str(db), "--port", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("tradectl models: ") and "Traceback" not in err
    assert "validation gates failed: episodes, sharpe, beats_sma, beats_buy_and_hold" in err
    assert main([*argv, "--force"]) == 1
    assert "--force needs --reason" in capsys.readouterr().err
    before = int(time.time())
    assert main([*argv, "--force", "--reason", "first model of this account", "--json"]) == 0
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT ts, action, sha256, forced, reason, who, evidence FROM model_promotions").fetchone()
        production = conn.execute("SELECT sha256 FROM model_registry WHERE is_production = 1").fetchall()
    ts, action, promoted, forced, reason, who, evidence = row
    assert (action, promoted, forced, reason) == ("promote", sha, 1, "first model of this account")
    assert before <= ts <= time.time() and "@" in who
    assert any("validation gates failed" in r for r in json.loads(evidence)["overridden"])
    assert production == [(sha,)]
    assert main(["models", "rollback", "--db", str(db), "--port", "1"]) == 1
    assert "no model was in production before" in capsys.readouterr().err
