"""The embedded livekit-server's settings and how its binary is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebot.config import SipSettings
from voicebot.embedded.livekit_server import LiveKitServerPorts, find_binary, server_config
from voicebot.embedded.livekit_sip import sip_config
from voicebot.embedded.runner import EmbeddedProgramError
from voicebot.redis_address import RedisAddress

PORTS = LiveKitServerPorts(http=17880, tcp=17881, udp=17882)


def test_server_listens_only_on_loopback() -> None:
    config = server_config(PORTS, "key", "x" * 32)

    assert config["bind_addresses"] == ["127.0.0.1"]
    assert config["port"] == 17880
    # Candidates are the interfaces' own addresses: clients never gather loopback, so it is not offered.
    assert "node_ip" not in config["rtc"]
    assert not config["rtc"].get("enable_loopback_candidate", False)
    assert (config["rtc"]["tcp_port"], config["rtc"]["udp_port"]) == (17881, 17882)


def test_server_never_looks_for_or_hands_out_a_public_stun_server() -> None:
    rtc = server_config(PORTS, "key", "x" * 32)["rtc"]

    assert rtc["use_external_ip"] is False
    assert rtc["stun_servers"] == ["127.0.0.1:17882"]
    assert "turn_servers" not in rtc


def test_server_accepts_exactly_the_configured_key() -> None:
    assert server_config(PORTS, "key", "x" * 32)["keys"] == {"key": "x" * 32}


def test_a_configured_binary_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedProgramError, match="is not a file"):
        find_binary(str(tmp_path / "livekit-server"))


def test_a_configured_binary_wins(tmp_path: Path) -> None:
    binary = tmp_path / "livekit-server"
    binary.write_text("")

    assert find_binary(str(binary)) == binary


def test_the_missing_binary_message_says_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("voicebot.embedded.runner.CACHE_BIN", tmp_path / "absent")

    with pytest.raises(EmbeddedProgramError, match="make livekit-server"):
        find_binary()


def test_server_gets_the_whole_redis_login_not_only_its_address() -> None:
    redis = RedisAddress("127.0.0.1", 6390, password="pw", tls=True, db=3)

    config = server_config(PORTS, "key", "x" * 32, redis=redis)

    assert config["redis"] == {"address": "127.0.0.1:6390", "password": "pw", "use_tls": True, "db": 3}


def test_server_never_creates_a_room_because_someone_joined_it() -> None:
    assert server_config(PORTS, "key", "x" * 32)["room"] == {"auto_create": False}


def test_sip_gets_the_whole_redis_login() -> None:
    redis = RedisAddress("127.0.0.1", 6390, password="pw")

    config = sip_config(SipSettings(), livekit_url="ws://x", api_key="k", api_secret="s", redis=redis)

    assert config["redis"] == {"address": "127.0.0.1:6390", "password": "pw"}
