"""broker.alpaca: paper by default, live only on purpose (config AND environment), secrets only from the environment."""

from __future__ import annotations

import pytest

from brokers.errors import ConfigError
from daemon.config import load_config
from daemon.venues import alpaca_settings, open_alpaca

KEYS = {"TRADECTL_ALPACA__KEY_ID": "PKTESTKEY", "TRADECTL_ALPACA__SECRET_KEY": "very-secret-value"}


def _write(tmp_path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


ALPACA = "broker:\n  kind: alpaca\ndata:\n  symbol: SPY\n  bar_seconds: 60\n"


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


def test_paper_is_the_default_and_secrets_never_leave_the_environment(tmp_path, keys) -> None:  # type: ignore[no-untyped-def]
    config = load_config(_write(tmp_path, ALPACA))
    assert config.broker.alpaca.paper and not config.broker.alpaca.live
    settings = alpaca_settings(config)
    assert settings.key_id == "PKTESTKEY" and settings.rest_origin == "https://paper-api.alpaca.markets"
    for text in (repr(settings), str(config.public_dict()), config.fingerprint(), repr(config.alpaca)):
        assert "very-secret-value" not in text and "PKTESTKEY" not in text


def test_a_key_in_a_file_is_refused(tmp_path, keys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"alpaca\.secret_key: secrets are read only from the environment"):
        load_config(_write(tmp_path, ALPACA + "alpaca:\n  secret_key: oops\n"))


def test_alpaca_without_keys_or_with_mismatched_sections_says_what_to_set(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="TRADECTL_ALPACA__KEY_ID and TRADECTL_ALPACA__SECRET_KEY"):
        load_config(_write(tmp_path, ALPACA))
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "broker:\n  kind: alpaca\n"))
    message = str(info.value)
    assert "set data.bar_seconds: 60" in message and "data.symbol 'EURUSD'" in message
    assert "Value error" not in message


def test_real_money_needs_live_true_and_the_confirmation(tmp_path, keys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="paper: false trades real money: set live: true"):
        load_config(_write(tmp_path, "broker:\n  kind: alpaca\n  alpaca: {paper: false}\n"
                           "data:\n  symbol: SPY\n  bar_seconds: 60\n"))
    with pytest.raises(ConfigError, match="contradict"):
        load_config(_write(tmp_path, "broker:\n  kind: alpaca\n  alpaca: {live: true}\n"
                           "data:\n  symbol: SPY\n  bar_seconds: 60\n"))
    live = load_config(_write(tmp_path, "broker:\n  kind: alpaca\n  alpaca: {paper: false, live: true}\n"
                              "data:\n  symbol: SPY\n  bar_seconds: 60\n"))
    assert alpaca_settings(live).rest_origin == "https://api.alpaca.markets"
    with pytest.raises(ConfigError, match=r"TRADECTL_LIVE_CONFIRM set to the Alpaca account number; refusing"):
        open_alpaca(live, environ={})
    broker = open_alpaca(live, environ={"TRADECTL_LIVE_CONFIRM": "123456"})
    assert broker.name == "alpaca-live"
    broker.rest.close()


def test_the_in_flight_deadline_stays_below_the_submit_timeout(tmp_path, keys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="in_flight_deadline_seconds must be below"):
        load_config(_write(tmp_path, ALPACA + "orders:\n  submit_timeout_seconds: 5\n"))
