"""Configuration: documented defaults, environment overrides, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from brokers.errors import ConfigError
from daemon.cli import main
from daemon.config import TradectlConfig, load_config, render_defaults

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_documents_exactly_the_embedded_defaults() -> None:
    text = (ROOT / "config" / "default.yaml").read_text()
    stale = "config/default.yaml is stale: run `tradectl config defaults > config/default.yaml`"
    assert text == render_defaults(), stale
    assert load_config(ROOT / "config" / "default.yaml") == TradectlConfig()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_unknown_keys_and_bad_values_name_file_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "data:\n  pace: -3\n  colour: blue\nstrategy:\n  kind: magic\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}: data.pace: Input should be greater than or equal to 0" in message
    assert f"{path}: data.colour: unknown key" in message
    assert f"{path}: strategy.kind:" in message


def test_secrets_are_refused_in_files(tmp_path: Path) -> None:
    path = _write(tmp_path, "api:\n  token: hunter2\n")
    expected = "api.token: secrets are read only from the environment; set TRADECTL_API__TOKEN"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(path)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "data:\n  pace: 5\n  symbol: GBPUSD\n")
    monkeypatch.setenv("TRADECTL_DATA__PACE", "99")
    monkeypatch.setenv("TRADECTL_API__TOKEN", "s3cret")
    config = load_config(path)
    assert config.data.pace == 99
    assert config.data.symbol == "GBPUSD"  # the rest of the section still comes from the file
    assert config.api.token is not None and config.api.token.get_secret_value() == "s3cret"
    assert "s3cret" not in str(config.public_dict())


def test_bad_environment_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADECTL_API__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"api\.port"):
        load_config(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data: [1, 2\n", "invalid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("data:\n  pace: 1\ndata:\n  pace: 2\n", "duplicate key 'data'"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "data:\n  pace: 2\n")
    assert main(["config", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("risk:\n  drawdown:\n    warn: 0.5\n    halt: 0.1\n")
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tradectl config: ")
    assert "risk.drawdown" in err
    assert "Traceback" not in err
