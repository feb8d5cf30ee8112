"""DaemonMetrics without HTTP: per-daemon registries, risk verdicts split by kind, the optional figures."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from brokers.history import load_bundled
from daemon.config import TradectlConfig
from daemon.metrics import DaemonMetrics, LatencyHistogram
from daemon.runners import BacktestRunner

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"


def _samples(metrics: DaemonMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.scrape().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
async def backtest(tmp_path: Path) -> AsyncIterator[BacktestRunner]:
    config = TradectlConfig(strategy={"kind": "sma_cross", "sma_cross": {"fast": 3, "slow": 8}})
    runner = await BacktestRunner.open(config, db_path=tmp_path / "bt.db", bars=load_bundled()[:120])
    yield runner
    if runner.daemon.pipeline.counts.bars == 0:  # a run releases the store and the broker itself
        await runner.daemon.release()


async def test_two_daemons_in_one_process_keep_their_own_figures(tmp_path: Path, backtest: BacktestRunner) -> None:
    config = TradectlConfig(strategy={"kind": "sma_cross"})
    other = await BacktestRunner.open(config, db_path=tmp_path / "other.db", bars=load_bundled()[:10])
    first, second = DaemonMetrics(backtest.daemon).attach(), DaemonMetrics(other.daemon).attach()
    await backtest.run(install_signals=False)
    await other.run(install_signals=False)
    a, b = _samples(first), _samples(second)
    assert a[("tradectl_bars_processed_total", ())] == 120
    assert b[("tradectl_bars_processed_total", ())] == 10
    assert a[("tradectl_policy_step_seconds_count", ())] == 120
    assert a[("tradectl_bar_to_order_seconds_count", ())] == backtest.daemon.pipeline.counts.orders > 0
    assert b[("tradectl_bar_to_order_seconds_count", ())] == 0


async def test_risk_verdicts_are_split_into_denials_and_resizes(backtest: BacktestRunner) -> None:
    metrics = DaemonMetrics(backtest.daemon)
    backtest.daemon.governor.counts.update({"exposure:block:max_position": 3, "volatility:resize:high_vol": 2,
                                            "drawdown:halt:max_drawdown": 1})
    samples = _samples(metrics)
    denials = {k: v for k, v in samples.items() if k[0] == "tradectl_risk_denials_total"}
    assert denials == {
        ("tradectl_risk_denials_total", (("layer", "drawdown"), ("reason", "max_drawdown"), ("verdict", "halt"))): 1,
        ("tradectl_risk_denials_total", (("layer", "exposure"), ("reason", "max_position"), ("verdict", "block"))): 3,
    }
    assert samples[("tradectl_risk_resizes_total", (("layer", "volatility"), ("reason", "high_vol")))] == 2


async def test_outbox_depth_reads_the_provider_and_survives_a_broken_one(backtest: BacktestRunner) -> None:
    metrics = DaemonMetrics(backtest.daemon)
    assert _samples(metrics)[("tradectl_alert_outbox_messages", ())] == 0
    metrics.outbox_depth = lambda: 7
    assert _samples(metrics)[("tradectl_alert_outbox_messages", ())] == 7

    def broken() -> int:
        raise RuntimeError("outbox gone")

    metrics.outbox_depth = broken
    assert math.isnan(_samples(metrics)[("tradectl_alert_outbox_messages", ())])


async def test_controller_figures_appear_only_with_a_controller(backtest: BacktestRunner) -> None:
    metrics = DaemonMetrics(backtest.daemon)
    assert not any(name.startswith("tradectl_controller") for name, _ in _samples(metrics))

    class _Controller:
        bonus = 0.02
        hold_rate = 0.6

    backtest.daemon.strategy.controller = _Controller()  # type: ignore[attr-defined]
    samples = _samples(metrics)
    assert samples[("tradectl_controller_hold_bonus", ())] == 0.02
    assert samples[("tradectl_controller_hold_ratio", ())] == 0.6


async def test_detached_pipeline_is_untimed(backtest: BacktestRunner) -> None:
    metrics = DaemonMetrics(backtest.daemon).attach()
    metrics.detach()
    await backtest.run(install_signals=False)
    assert _samples(metrics)[("tradectl_policy_step_seconds_count", ())] == 0


async def test_the_recurrent_policy_reports_its_regime_reading(tmp_path: Path) -> None:
    config = TradectlConfig(strategy={"kind": "recurrent"})
    runner = await BacktestRunner.open(config, db_path=tmp_path / "rec.db", bars=load_bundled()[:400])
    metrics = DaemonMetrics(runner.daemon).attach()
    await runner.run(install_signals=False)
    reading = runner.daemon.strategy.features.regime("EURUSD")  # type: ignore[attr-defined]
    samples = _samples(metrics)
    assert samples[("tradectl_regime_score", (("symbol", "EURUSD"),))] == reading.score != 0
    assert samples[("tradectl_regime_target_hold_ratio", (("symbol", "EURUSD"),))] == reading.target_hold_rate
    decisions = sum(v for (name, _), v in samples.items() if name == "tradectl_decisions_total")
    assert decisions == runner.daemon.pipeline.counts.decisions > 0


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


async def test_the_grafana_dashboard_asks_only_for_metrics_the_daemon_exports(tmp_path: Path) -> None:
    config = TradectlConfig(strategy={"kind": "recurrent"})
    runner = await BacktestRunner.open(config, db_path=tmp_path / "rec.db", bars=load_bundled()[:10])
    metrics = DaemonMetrics(runner.daemon)
    metrics.daemon.strategy.controller = type("C", (), {"bonus": 0.0, "hold_rate": 0.5})()  # type: ignore[attr-defined]
    text = metrics.scrape().decode()
    await runner.daemon.release()
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    names = set()
    for name, kind in exported:
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    wanted = {name for expr in _dashboard_exprs() for name in re.findall(r"\btradectl_\w+", expr)}
    assert wanted and wanted <= names, sorted(wanted - names)


def test_the_grafana_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
    dashboard = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}
    rules = [
        {"record": f"tradectl:dashboard_{i}", "expr": expr.replace("$__rate_interval", "5m").replace("$instance", ".*")}
        for i, expr in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "rules.json"  # YAML is a superset of JSON
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_latency_buckets_are_cumulative_and_inclusive_of_their_bound() -> None:
    latency = LatencyHistogram("tradectl_test_seconds", "test", (0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.01, 3.0):
        latency.observe(seconds)
    family = latency.family()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("tradectl_test_seconds_bucket", "0.001")] == 2
    assert samples[("tradectl_test_seconds_bucket", "0.01")] == 4
    assert samples[("tradectl_test_seconds_bucket", "+Inf")] == 5
    assert samples[("tradectl_test_seconds_count", None)] == 5 == latency.count
    assert samples[("tradectl_test_seconds_sum", None)] == pytest.approx(3.0135)
    with pytest.raises(ValueError, match="must increase"):
        LatencyHistogram("tradectl_bad_seconds", "bad", (0.01, 0.001))
