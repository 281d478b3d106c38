"""config.toml parsing, environment overrides and the errors a person reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voicebot.config import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 32
AGENT = '[[agents]]\nid = "agent-123"\nname = "Reception"\n'


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
            raw(sip={"outbound": [{"name": "pbx", "address": "pbx:5060", "allowed_prefixes": ["1555"]}]}),
            {},
            "sip.outbound[0].allowed_prefixes",
            "'+' and digits",
            id="sip-prefix-not-e164",
        ),
        pytest.param(
            raw(
                sip={
                    "outbound": [
                        {"name": "office-pbx", "address": "a:5060"},
                        {"name": "office_pbx", "address": "b:5060"},
                    ]
                }
            ),
            {},
            "sip.outbound[1].name",
            "VOICEBOT_SIP_OFFICE_PBX_PASSWORD",
            id="sip-password-variable-clash",
        ),
        pytest.param(
            raw(sip={"max_outbound_concurrent": -1}), {}, "sip.max_outbound_concurrent", "0", id="sip-calls"
        ),
        pytest.param(
            raw(sessions={"max_duration_s": 0}), {}, "sessions.max_duration_s", "greater", id="max-duration"
        ),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x", "rules": [{"reply": "hi", "digits": ["12"]}]}]),
            {},
            "agents[0].rules[0].digits",
            "phone key",
            id="rule-bad-digit",
        ),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x", "stt": {"keyword_boost": -1}}]),
            {},
            "agents[0].stt.keyword_boost",
            "between 0 and 10",
            id="keyword-boost-negative",
        ),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x", "stt": {"keyword_boost": 50}}]),
            {},
            "agents[0].stt.keyword_boost",
            "between 0 and 10",
            id="keyword-boost-past-the-models-own-scores",
        ),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x", "stt": {"beam_width": 0}}]),
            {},
            "agents[0].stt.beam_width",
            "between 1 and 8",
            id="beam-width-none",
        ),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x", "stt": {"beam_width": 9}}]),
            {},
            "agents[0].stt.beam_width",
            "between 1 and 8",
            id="beam-width-past-the-measured",
        ),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x", "stt": {"provider": "moonshine", "model": "large"}}]),
            {},
            "agents[0].stt.model",
            "Moonshine comes as base or tiny",
            id="moonshine-size-unknown",
        ),
        pytest.param(
            raw(agents=[{"id": "a", "name": "x", "stt": {"keywords": "voicebot"}}]),
            {},
            "agents[0].stt.keywords",
            "must be a list",
            id="keywords-not-a-list",
        ),
        pytest.param(raw(redis={"url": "redis://host:port/0"}), {}, "redis.url", "port", id="redis-port"),
        pytest.param(
            raw(),
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"},
            "telemetry.traces_endpoint",
            "http://",
            id="otlp-endpoint-scheme",
        ),
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


def test_api_keys_come_from_a_comma_separated_variable_or_a_toml_list() -> None:
    from_env = parse_settings(raw(), {"VOICEBOT_AUTH_API_KEYS": " key-one, key-two ,,"})
    from_file = parse_settings(raw(auth={"api_keys": ["key-one"]}), {})
    trusted = parse_settings(raw(), {"VOICEBOT_SERVER_TRUSTED_PROXIES": "10.0.0.1,192.168.0.0/16"})

    assert from_env.auth.api_keys == ("key-one", "key-two")
    assert from_file.auth.api_keys == ("key-one",)
    assert trusted.server.trusted_proxies == ("10.0.0.1", "192.168.0.0/16")
    assert parse_settings(raw(), {}).auth.create_room_per_minute == 6


def test_the_metrics_port_is_off_by_default_and_set_like_any_other_key() -> None:
    assert load_settings(ROOT / "config.toml", {}).metrics.port == 0
    assert parse_settings(raw(metrics={"port": 9464}), {}).metrics.port == 9464
    assert parse_settings(raw(), {"VOICEBOT_METRICS_PORT": "9465"}).metrics.port == 9465


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        ({"metrics": {"port": 70000}}, "65535"),
        ({"metrics": {"port": -1}}, "65535"),
        ({"metrics": {"port": "9464"}}, "must be an integer"),
        ({"metrics": {"port": 8001}}, "server.port"),
        ({"metrics": {"path": "/m"}}, "unknown key"),
    ],
)
def test_bad_metrics_settings_name_the_key(sections: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(raw(**sections), {})

    assert error.value.key.startswith("metrics.")
    assert words in str(error.value)


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"auth": {"api_keys": "one-key"}}, "auth.api_keys"),
        ({"auth": {"api_keys": ["a key"]}}, "auth.api_keys[0]"),
        ({"auth": {"create_room_per_minute": 0}}, "auth.create_room_per_minute"),
        ({"server": {"trusted_proxies": ["not-an-ip"]}}, "server.trusted_proxies[0]"),
        ({"server": {"allowed_origins": ["app.example.com"]}}, "server.allowed_origins[0]"),
        ({"server": {"allowed_hosts": ["bot.example.com:443"]}}, "server.allowed_hosts[0]"),
        ({"server": {"public_url": "bot.example.com"}}, "server.public_url"),
    ],
)
def test_bad_auth_and_guard_settings_name_the_key(sections: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(raw(**sections), {})

    assert error.value.key == key


def test_trunk_passwords_come_from_the_environment_and_win_over_the_file() -> None:
    document = raw(
        sip={
            "inbound": [
                {
                    "name": "office-pbx",
                    "agent_id": "agent-123",
                    "auth_username": "pbx",
                    "auth_password": "file",
                }
            ],
            "outbound": [{"name": "carrier-eu", "address": "sip.example.com", "auth_username": "vb"}],
        }
    )
    env = {"VOICEBOT_SIP_OFFICE_PBX_PASSWORD": "from-env", "VOICEBOT_SIP_CARRIER_EU_PASSWORD": "also-env"}

    sip = parse_settings(document, env).sip

    assert sip.inbound[0].auth_password == "from-env"
    assert sip.outbound[0].auth_password == "also-env"
    assert parse_settings(document, {}).sip.inbound[0].auth_password == "file"


def test_an_inbound_password_from_the_environment_completes_a_username_from_the_file() -> None:
    document = raw(sip={"inbound": [{"name": "desk", "agent_id": "agent-123", "auth_username": "pbx"}]})

    with pytest.raises(ConfigError, match="go together"):
        parse_settings(document, {})
    assert parse_settings(document, {"VOICEBOT_SIP_DESK_PASSWORD": "pw"}).sip.inbound[0].auth_password == "pw"


def test_toll_fraud_and_runaway_call_defaults() -> None:
    settings = load_settings(ROOT / "config.toml", {})

    assert (settings.sip.max_outbound_concurrent, settings.sip.outbound_per_hour) == (2, 20)
    assert settings.sip.outbound[0].allowed_prefixes == ()
    assert (settings.sessions.max_duration_s, settings.sessions.unjoined_timeout_s) == (1800, 30)


def test_traces_are_off_unless_an_otlp_endpoint_is_set() -> None:
    telemetry = parse_settings(raw(), {}).telemetry

    assert not telemetry.enabled
    assert (telemetry.service_name, telemetry.include_personal_data) == ("voicebot", False)


@pytest.mark.parametrize(
    ("env", "url"),
    [
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
            "http://127.0.0.1:4318/v1/traces",
            id="signal-path-appended",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example.test/collector/"},
            "https://otel.example.test/collector/v1/traces",
            id="appended-to-a-base-path",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://general:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
            },
            "http://traces:4318/custom",
            id="traces-endpoint-as-given",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
            "",
            id="sdk-disabled",
        ),
    ],
)
def test_the_otlp_traces_url_follows_the_opentelemetry_variables(env: dict[str, str], url: str) -> None:
    telemetry = parse_settings(raw(), env).telemetry

    assert telemetry.traces_endpoint == url
    assert telemetry.enabled == bool(url)


def test_personal_data_in_traces_is_an_opt_in_of_config_toml_and_the_service_name_an_env_override() -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SERVICE_NAME": "voicebot-eu"}

    telemetry = parse_settings(raw(telemetry={"include_personal_data": True}), env).telemetry

    assert telemetry.include_personal_data
    assert telemetry.service_name == "voicebot-eu"


def test_a_relative_models_dir_is_resolved_against_the_config_files_directory(tmp_path: Path) -> None:
    document = f'[livekit]\napi_secret = "{SECRET}"\n[models]\ndir = "models"\n{AGENT}'
    (tmp_path / "config.toml").write_text(document)

    assert load_settings(tmp_path / "config.toml", {}).models.path == tmp_path.resolve() / "models"


def test_the_shipped_config_finds_the_models_make_fetches_whatever_the_working_directory() -> None:
    assert load_settings(ROOT / "config.toml", {}).models.path == ROOT / ".cache" / "models"


def test_a_models_dir_from_memory_or_the_environment_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert parse_settings(raw(models={"dir": "m"}), {}).models.path == tmp_path / "m"
    from_env = load_settings(ROOT / "config.toml", {"VOICEBOT_MODELS_DIR": "elsewhere"})
    assert from_env.models.path == tmp_path / "elsewhere"
    assert parse_settings(raw(models={"dir": "/opt/models"}), {}).models.path == Path("/opt/models")


def test_an_empty_models_dir_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"models\.dir"):
        parse_settings(raw(models={"dir": ""}), {})


def test_moonshine_and_pocketsphinx_are_stt_providers_by_name() -> None:
    for provider in ("moonshine", "pocketsphinx", "auto", "offline", "deepgram"):
        document = raw(agents=[{"id": "a", "name": "A", "stt": {"provider": provider}}])
        agent = parse_settings(document, {}).agent("a")
        assert agent is not None
        assert agent.stt.provider == provider


def test_models_stt_and_tts_default_to_moonshine_and_piper_and_come_from_the_environment() -> None:
    assert (parse_settings(raw(), {}).models.stt, parse_settings(raw(), {}).models.tts) == (
        "moonshine",
        "piper",
    )
    light = parse_settings(raw(), {"VOICEBOT_MODELS_STT": "pocketsphinx", "VOICEBOT_MODELS_TTS": "espeak"})
    assert (light.models.stt, light.models.tts) == ("pocketsphinx", "espeak")


@pytest.mark.parametrize(("key", "value"), [("stt", "deepgram"), ("tts", "elevenlabs"), ("stt", "whisper")])
def test_models_names_only_an_offline_recogniser_or_voice(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"models\.{key}.*is not one of"):
        parse_settings(raw(models={key: value}), {})
