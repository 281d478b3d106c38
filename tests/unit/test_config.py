"""config.toml parsing, environment overrides and the errors a person reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voicebot.config import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 32


def raw(**sections: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "livekit": {"api_secret": SECRET},
        "agents": [{"id": "agent-123", "name": "Reception"}],
    }
    for name, value in sections.items():
        base[name] = {**base.get(name, {}), **value} if isinstance(value, dict) else value
    return base


def test_shipped_config_loads_with_agent_123_and_an_embedded_livekit() -> None:
    settings = load_settings(ROOT / "config.toml", {})

    assert settings.agent("agent-123") is not None
    assert settings.livekit.embedded
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8001)
    assert (settings.livekit.port, settings.livekit.tcp_port, settings.livekit.udp_port) == (7880, 7881, 7882)


def test_livekit_environment_variables_override_the_file() -> None:
    env = {
        "LIVEKIT_URL": "wss://lk.example.test",
        "LIVEKIT_API_KEY": "key-from-env",
        "LIVEKIT_API_SECRET": "e" * 40,
    }

    lk = parse_settings(raw(livekit={"url": "ws://file:7880", "api_key": "file"}), env).livekit

    assert (lk.url, lk.api_key, lk.api_secret) == ("wss://lk.example.test", "key-from-env", "e" * 40)
    assert not lk.embedded


def test_voicebot_variables_override_the_rest_with_their_types() -> None:
    env = {"VOICEBOT_SERVER_PORT": "9001", "VOICEBOT_LIVEKIT_REQUEST_TIMEOUT_S": "2.5"}

    settings = parse_settings(raw(), env)

    assert settings.server.port == 9001
    assert settings.livekit.request_timeout_s == 2.5


@pytest.mark.parametrize(
    ("document", "env", "key", "words"),
    [
        pytest.param(raw(server={"port": "8001"}), {}, "server.port", "must be an integer", id="port-string"),
        pytest.param(raw(server={"port": True}), {}, "server.port", "must be an integer", id="port-bool"),
        pytest.param(raw(server={"port": 70000}), {}, "server.port", "65535", id="port-range"),
        pytest.param(raw(server={"prot": 1}), {}, "server.prot", "unknown key", id="typo-key"),
        pytest.param(raw(sever={}), {}, "sever", "unknown section", id="typo-section"),
        pytest.param(raw(livekit={"api_secret": "short"}), {}, "livekit.api_secret", "32", id="short-secret"),
        pytest.param(raw(livekit={"url": "localhost:7880"}), {}, "livekit.url", "ws://", id="url-scheme"),
        pytest.param(raw(agents=[]), {}, "agents", "at least one", id="no-agents"),
        pytest.param(raw(agents=[{"name": "x"}]), {}, "agents[0].id", "required", id="agent-no-id"),
        pytest.param(
            raw(agents=[{"id": "a b", "name": "x"}]), {}, "agents[0].id", "letters", id="agent-bad-id"
        ),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x"}, {"id": "a", "name": "y"}]),
            {},
            "agents[1].id",
            "twice",
            id="agent-duplicate",
        ),
        pytest.param(
            raw(agents=[{"id": "a" * 47, "name": "x"}]), {}, "agents[0].id", "46", id="agent-id-too-long"
        ),
        pytest.param(raw(logging={"level": "loud"}), {}, "logging.level", "debug", id="log-level"),
        pytest.param(raw(), {"VOICEBOT_SERVER_PORT": "x"}, "VOICEBOT_SERVER_PORT", "integer", id="env-type"),
        pytest.param(
            raw(sip={"inbound": [{"name": "x", "agent_id": "nobody", "numbers": ["+1"]}]}),
            {},
            "sip.inbound[0].agent_id",
            "no agent",
            id="sip-unknown-agent",
        ),
        pytest.param(
            raw(sip={"inbound": [{"name": "open", "agent_id": "agent-123"}]}),
            {},
            "sip.inbound[0]",
            "whose calls",
            id="sip-open-route",
        ),
        pytest.param(
            raw(sip={"outbound": [{"name": "pbx", "address": "pbx:5060", "transport": "carrier-pigeon"}]}),
            {},
            "sip.outbound[0].transport",
            "udp",
            id="sip-transport",
        ),
        pytest.param(raw(sip={"rtp_port_end": 1}), {}, "sip.rtp_port_end", "greater", id="sip-rtp-range"),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x", "rules": [{"reply": "hi", "digits": ["12"]}]}]),
            {},
            "agents[0].rules[0].digits",
            "phone key",
            id="rule-bad-digit",
        ),
        pytest.param(raw(redis={"url": "redis://host:port/0"}), {}, "redis.url", "port", id="redis-port"),
        pytest.param(
            raw(redis={"url": "unix:///run/redis.sock"}, sip={"enabled": True}),
            {},
            "redis.url",
            "redis://",
            id="sip-on-a-unix-socket",
        ),
    ],
)
def test_bad_settings_name_the_key_and_the_problem(
    document: dict[str, Any], env: dict[str, str], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(document, env)

    assert error.value.key == key
    assert words in str(error.value)


def test_an_agent_takes_typed_text_only_when_it_says_so() -> None:
    document = raw(agents=[{"id": "a", "name": "A"}, {"id": "b", "name": "B", "text_input": True}])

    settings = parse_settings(document, {})

    assert [agent.text_input for agent in settings.agents] == [False, True]


def test_the_redis_url_is_parsed_once_with_its_password() -> None:
    settings = parse_settings(raw(redis={"url": "rediss://:pw@cache:6380/1"}), {})

    assert settings.redis.address is not None
    assert (settings.redis.address.password, settings.redis.address.tls) == ("pw", True)


def test_invalid_toml_and_a_missing_file_are_config_errors(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[server\nport = 1")

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, {})
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml", {})


def test_shipped_sip_section_routes_the_reception_line_and_is_off_by_default() -> None:
    settings = load_settings(ROOT / "config.toml", {})

    assert settings.sip.enabled is False
    assert [(r.name, r.agent_id) for r in settings.sip.inbound] == [("reception-line", "agent-123")]
    assert load_settings(ROOT / "config.toml", {"VOICEBOT_SIP_ENABLED": "true"}).sip.enabled is True
    reception = settings.agent("agent-123")
    assert reception is not None
    assert {digit for rule in reception.rules for digit in rule.digits} == {"1", "2", "9"}
