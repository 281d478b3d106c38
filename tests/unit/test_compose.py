"""compose.yaml and its LiveKit and SIP configs agree with config.toml: services, ports and keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from voicebot.api.webhooks import WEBHOOK_PATH
from voicebot.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def load_yaml(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml("compose.yaml")


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
    assert set(compose["services"]) == {"livekit", "redis", "sip", "voicebot"}


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


def test_redis_sip_and_voicebot_publish_their_ports(compose: dict[str, Any], config: Settings) -> None:
    assert (6379, 6379, "tcp") in published(compose, "redis")
    assert (5060, 5060, "udp") in published(compose, "sip")
    sip = load_yaml("deploy/sip.yaml")
    rtp_first, rtp_last = (int(p) for p in str(sip["rtp_port"]).split("-"))
    assert {(p, p, "udp") for p in range(rtp_first, rtp_last + 1)} <= published(compose, "sip")
    assert (config.server.port, config.server.port, "tcp") in published(compose, "voicebot")


def test_sip_matches_config_toml_and_reaches_voicebot(compose: dict[str, Any], config: Settings) -> None:
    sip = load_yaml("deploy/sip.yaml")
    assert sip["sip_port"] == config.sip.port
    assert sip["rtp_port"] == f"{config.sip.rtp_port_start}-{config.sip.rtp_port_end}"
    env = compose["services"]["voicebot"]["environment"]
    assert env["VOICEBOT_SIP_ENABLED"] == "true"
    assert env["VOICEBOT_SIP_HEALTH_URL"] == f"http://sip:{sip['health_port']}/"
    webhook = load_yaml("deploy/livekit.yaml")["webhook"]
    assert webhook["api_key"] == config.livekit.api_key
    assert webhook["urls"] == [f"http://voicebot:{config.server.port}{WEBHOOK_PATH}"]


def test_every_service_shares_config_tomls_key_pair(compose: dict[str, Any], config: Settings) -> None:
    key, secret = config.livekit.api_key, config.livekit.api_secret
    env = compose["services"]["voicebot"]["environment"]
    assert (env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]) == (key, secret)
    assert load_yaml("deploy/livekit.yaml")["keys"] == {key: secret}
    sip = load_yaml("deploy/sip.yaml")
    assert (sip["api_key"], sip["api_secret"]) == (key, secret)


def test_services_find_each_other_by_name(compose: dict[str, Any], config: Settings) -> None:
    livekit_url = urlparse(compose["services"]["voicebot"]["environment"]["LIVEKIT_URL"])
    assert (livekit_url.hostname, livekit_url.port) == ("livekit", config.livekit.port)
    sip_url = urlparse(load_yaml("deploy/sip.yaml")["ws_url"])
    assert (sip_url.hostname, sip_url.port) == ("livekit", config.livekit.port)
    for name in ("deploy/livekit.yaml", "deploy/sip.yaml"):
        assert load_yaml(name)["redis"]["address"] == "redis:6379"
    redis_url = urlparse(compose["services"]["voicebot"]["environment"]["VOICEBOT_REDIS_URL"])
    assert (redis_url.hostname, redis_url.port) == ("redis", 6379)


def test_the_voicebot_image_serves_on_the_published_port(config: Settings) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {config.server.port}" in dockerfile
    assert f'"--port", "{config.server.port}"' in dockerfile
