"""exposure.py: which setups `serve` refuses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from voicebot.config import ConfigError, Settings, parse_settings
from voicebot.exposure import check_exposure, is_loopback

SHIPPED = "voicebot-dev-secret-change-me-0123456789"


def settings(
    host: str = "127.0.0.1", url: str = "", secret: str = "s" * 32, keys: tuple[str, ...] = ()
) -> Settings:
    raw = {
        "server": {"host": host},
        "livekit": {"url": url, "api_secret": secret},
        "auth": {"api_keys": list(keys)},
        "agents": [{"id": "agent-123", "name": "Reception"}],
    }
    return parse_settings(raw, {})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.10", "bot.example.com"])
def test_hosts_beyond_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_loopback_without_keys_and_with_the_shipped_secret_is_fine() -> None:
    check_exposure(settings(secret=SHIPPED))
    check_exposure(settings(url="ws://127.0.0.1:7880", secret=SHIPPED))


def test_a_public_host_needs_a_key() -> None:
    with pytest.raises(ConfigError) as error:
        check_exposure(settings(host="0.0.0.0"))
    assert error.value.key == "auth.api_keys"
    check_exposure(settings(host="0.0.0.0", keys=("a-key",)))


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", ""), ("127.0.0.1", "wss://lk.example.com")],
    ids=["public-http", "remote-livekit"],
)
def test_the_shipped_secret_is_refused_off_loopback(host: str, url: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_exposure(settings(host=host, url=url, secret=SHIPPED, keys=("a-key",)))
    assert error.value.key == "livekit.api_secret"


def test_a_public_livekit_url_handed_to_clients_counts_too() -> None:
    base = settings(secret=SHIPPED)
    public = replace(base, livekit=replace(base.livekit, public_url="wss://lk.example.com"))
    with pytest.raises(ConfigError):
        check_exposure(public)
