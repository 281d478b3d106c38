"""A Redis URL parsed once: login, TLS and database reach redis-py, livekit-server and livekit-sip alike."""

from __future__ import annotations

import pytest

from voicebot.redis_address import InvalidRedisUrl, RedisAddress


def test_a_url_with_a_password_keeps_it() -> None:
    """The embedded LiveKit's config once got host:port only, dropping the password of redis://:pass@host."""
    address = RedisAddress.parse("redis://:s3cret@redis:6380/2")

    assert (address.host, address.port, address.password, address.username, address.db) == (
        "redis",
        6380,
        "s3cret",
        "",
        2,
    )
    assert not address.tls
    assert address.livekit_config() == {"address": "redis:6380", "password": "s3cret", "db": 2}


def test_rediss_means_tls_and_a_username_is_kept() -> None:
    address = RedisAddress.parse("rediss://voicebot:pa%40ss@cache.example.com")

    assert address.tls
    assert (address.username, address.password, address.port, address.db) == ("voicebot", "pa@ss", 6379, 0)
    assert address.livekit_config() == {
        "address": "cache.example.com:6379",
        "username": "voicebot",
        "password": "pa@ss",
        "use_tls": True,
    }


def test_the_url_round_trips_and_the_safe_url_and_repr_leave_the_password_out() -> None:
    address = RedisAddress("127.0.0.1", 7000, password="p/w:@x", tls=True, db=1)

    assert RedisAddress.parse(address.url) == address
    assert address.safe_url == "rediss://127.0.0.1:7000/1"
    assert "p/w" not in repr(address)


def test_a_plain_url_has_no_login() -> None:
    address = RedisAddress.parse("redis://localhost")

    assert address.url == "redis://localhost:6379/0"
    assert address.livekit_config() == {"address": "localhost:6379"}


@pytest.mark.parametrize(
    "url", ["http://redis:6379", "redis://", "redis://host:notaport", "redis://host/zero"]
)
def test_urls_that_name_no_redis_are_refused(url: str) -> None:
    with pytest.raises(InvalidRedisUrl):
        RedisAddress.parse(url)
